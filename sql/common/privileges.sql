-- What a service's own role may do to each table: only what the service's
-- code does. Not a migration: scripts/migrate.sh applies it after the
-- migrations on every run, together with sql/SERVICE/privileges.sql and in
-- the same transaction, so it holds again after scripts/restore.sh.
-- Provisioning (scripts/lib/provision.sql) grants no rows of any table: a
-- table a migration adds gets nothing until it is listed here. Every table
-- keeps SELECT, which scripts/backup.sh needs.
-- :role is the service's role, named like the database.
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM :"role";
GRANT SELECT ON schema_migrations TO :"role";
-- Rows come and go (relay, inbox pruning, redrive); none is ever changed.
GRANT SELECT, INSERT, DELETE ON inbox, outbox TO :"role";
