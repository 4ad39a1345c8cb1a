-- Restocks inventory has applied, by the id the api gave each command,
-- projected from the product snapshot inventory emits as it applies one. A
-- POST /restock answers once its own id is here: neither a read model that
-- lags (an earlier restock's snapshot) nor a level already shown can confirm
-- a restock inventory has not applied. Only the waiting call reads its row
-- (for API_WAIT_MS, at most 10 minutes), so each new ack deletes those
-- projected over a day before. (products.restocked, 002, is still
-- projected, but no longer what confirms a restock.)
CREATE TABLE restock_acks (
    restock_id   uuid        PRIMARY KEY,
    projected_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX restock_acks_by_age ON restock_acks (projected_at);
