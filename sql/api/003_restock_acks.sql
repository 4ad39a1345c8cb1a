-- Restocks inventory has applied, by the id the api gave each command,
-- projected from the product snapshot inventory emits as it applies one. A
-- POST /restock answers once its own id is here: neither a read model that
-- lags (an earlier restock's snapshot) nor a level already shown can confirm
-- a restock inventory has not applied. One row per restock, an operator's
-- action. (products.restocked, 002, is still projected, but no longer what
-- confirms a restock.)
CREATE TABLE restock_acks (
    restock_id uuid        PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);
