-- The api role's rights on its tables (see sql/common/privileges.sql).
-- Read-model rows are upserted, never deleted (scripts/rebuild-read-model.sh
-- truncates as the owner); an idempotency record is written once; a restock
-- ack is written once and deleted a day later.
GRANT SELECT, INSERT, UPDATE ON products, orders, order_progress TO :"role";
GRANT SELECT, INSERT ON checkout_requests TO :"role";
GRANT SELECT, INSERT, DELETE ON restock_acks TO :"role";
