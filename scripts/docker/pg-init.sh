#!/usr/bin/env bash
# PostgreSQL container initialisation (docker-compose.yml mounts it into
# /docker-entrypoint-initdb.d/; the postgres image runs it once, on an empty
# data volume). Creates one login role + database per service, like
# scripts/pg.sh does locally. The passwords come from the environment
# (<SERVICE>_DB_PASSWORD, set in the git-ignored .env) and reach psql through
# its environment (\getenv), never a command line.
# Keep this file executable: a non-executable init script is sourced by the
# image's entrypoint instead of run.
set -euo pipefail

services=(api checkout inventory payment dispatch)

psql_su() {
  psql -X -q -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres "$@"
}

# Nobody but the superuser may connect to the maintenance databases.
psql_su -c 'REVOKE CONNECT ON DATABASE postgres FROM PUBLIC' \
  -c 'REVOKE CONNECT ON DATABASE template1 FROM PUBLIC'

for s in "${services[@]}"; do
  var="${s^^}_DB_PASSWORD"
  [ -n "${!var:-}" ] || { echo "pg-init: $var is not set" >&2; exit 1; }
  WIDGETSTORE_DB_PASSWORD="${!var}" psql_su -v name="$s" <<'SQL'
\getenv pw WIDGETSTORE_DB_PASSWORD
SELECT format('CREATE ROLE %I', :'name')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'name') \gexec
ALTER ROLE :"name" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'pw';
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'name')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name') \gexec
ALTER DATABASE :"name" OWNER TO :"name";
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
SQL
  echo "pg-init: role and database '$s' ready"
done
