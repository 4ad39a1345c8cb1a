-- Inbox pruning (shared/inbox_prune.c) deletes the oldest rows first, in
-- batches; this index finds them without reading the whole table.
CREATE INDEX IF NOT EXISTS inbox_by_age ON inbox (handled_at);
