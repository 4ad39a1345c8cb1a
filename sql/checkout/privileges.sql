-- The checkout role's rights on its tables (see sql/common/privileges.sql).
-- The step history is append-only; orders and sagas are never deleted.
GRANT SELECT, INSERT, UPDATE ON orders, sagas TO :"role";
GRANT SELECT, INSERT ON saga_steps TO :"role";
GRANT SELECT, INSERT, UPDATE, DELETE ON timers TO :"role";
