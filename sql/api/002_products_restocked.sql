-- Total stock ever added by restocks, from inventory's product snapshots: a
-- restock call knows its command was applied when this grows, even if
-- purchases have already taken the level below what it set.
ALTER TABLE products ADD COLUMN restocked bigint NOT NULL DEFAULT 0;
