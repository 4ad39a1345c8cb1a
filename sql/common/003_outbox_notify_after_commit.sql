-- The relay is now woken by a NOTIFY sent just after the writer's commit
-- (shared/db.c, db_notify_after_commit), not from inside it: PostgreSQL
-- serialises every committing transaction that notified behind one
-- cluster-wide lock held across its WAL flush, which capped the commit rate
-- of all five databases together. A writer that dies between its commit and
-- the notification only leaves the relay to its fallback poll.
DROP TRIGGER IF EXISTS outbox_notify ON outbox;
DROP FUNCTION IF EXISTS outbox_notify();
