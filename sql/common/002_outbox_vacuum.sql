-- The outbox is a queue: every row is deleted milliseconds after it is
-- written, so the table is mostly dead rows unless vacuumed often, and the
-- relay's "ORDER BY id LIMIT n" scan then wades through them. Vacuum it after
-- every 1000 deletions whatever its size, without cost-based throttling.
ALTER TABLE outbox SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);
