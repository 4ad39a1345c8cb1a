-- Creates or updates one service's database and its two roles, run by psql as
-- a superuser (scripts/pg.sh locally, scripts/docker/pg-init.sh in containers)
-- with the variables name, owner, pw and opw set:
--   :owner owns the database and its tables, and runs the migrations;
--   :name, the role the service runs as, may only read and write rows (no
--   DDL, no TRUNCATE, nothing in any other database), and only those that
--   scripts/migrate.sh grants it, table by table, for what the service does
--   (sql/common/privileges.sql). Nothing here grants rows of a table: run
--   again (pg.sh start, the k8s db-setup Job), it gives the role back
--   nothing that privileges.sql took away from a running service.
-- Idempotent; a database whose tables the service's own role made (before the
-- roles were split) has them handed to the owner.
SELECT format('CREATE ROLE %I', r) FROM unnest(ARRAY[:'name', :'owner']) AS r
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) \gexec
ALTER ROLE :"owner" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'opw';
ALTER ROLE :"name" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'pw';
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'owner')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name') \gexec
\connect :"name"
REASSIGN OWNED BY :"name" TO :"owner";
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"name" TO :"name";
-- Before PostgreSQL 15 everyone could create tables in schema public.
REVOKE CREATE ON SCHEMA public FROM PUBLIC, :"name";
GRANT USAGE ON SCHEMA public TO :"name";
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO :"name";
-- Rows of new tables are granted by privileges.sql, not by default (earlier
-- versions of this file did; taken back here).
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner"
  REVOKE SELECT, INSERT, UPDATE, DELETE ON TABLES FROM :"name";
-- Not limited to schema public, so that it outlives a restore that drops
-- and recreates it (scripts/restore.sh).
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" GRANT USAGE, SELECT ON SEQUENCES TO :"name";
