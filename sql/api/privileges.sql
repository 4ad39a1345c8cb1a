-- The api role's rights on its tables (see sql/common/privileges.sql).
-- Read-model rows are upserted, never deleted (scripts/rebuild-read-model.sh
-- truncates as the owner); an idempotency record or restock ack is written
-- once.
GRANT SELECT, INSERT, UPDATE ON products, orders, order_progress TO :"role";
GRANT SELECT, INSERT ON checkout_requests, restock_acks TO :"role";
