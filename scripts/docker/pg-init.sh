#!/usr/bin/env bash
# PostgreSQL container initialisation (docker-compose.yml mounts it into
# /docker-entrypoint-initdb.d/; the postgres image runs it once, on an empty
# data volume; the Kubernetes db-setup Job runs it from the store's image).
# For each service, like scripts/pg.sh does locally (scripts/lib/provision.sql):
# a database owned by role SERVICE_owner, which runs the migrations, and the
# role SERVICE that the service runs as, which may only read and write rows.
# The passwords come from the environment (<SERVICE>_DB_PASSWORD and
# <SERVICE>_DB_OWNER_PASSWORD, set in the git-ignored .env) and reach psql
# through its environment (\getenv), never a command line.
# Keep this file executable: a non-executable init script is sourced by the
# image's entrypoint instead of run.
set -euo pipefail

services=(api checkout inventory payment dispatch)
# Beside this script in the repository and the image; docker-compose.yml
# mounts it at PROVISION_SQL.
provision_sql=${PROVISION_SQL:-$(dirname "$0")/../lib/provision.sql}
[ -r "$provision_sql" ] || { echo "pg-init: $provision_sql not found" >&2; exit 1; }

psql_su() {
  psql -X -q -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres "$@"
}

# Nobody but the superuser may connect to the maintenance databases.
psql_su -c 'REVOKE CONNECT ON DATABASE postgres FROM PUBLIC' \
  -c 'REVOKE CONNECT ON DATABASE template1 FROM PUBLIC'

for s in "${services[@]}"; do
  var="${s^^}_DB_PASSWORD" owner_var="${s^^}_DB_OWNER_PASSWORD"
  [ -n "${!var:-}" ] || { echo "pg-init: $var is not set" >&2; exit 1; }
  [ -n "${!owner_var:-}" ] || { echo "pg-init: $owner_var is not set" >&2; exit 1; }
  {
    echo '\getenv pw WIDGETSTORE_DB_PASSWORD'
    echo '\getenv opw WIDGETSTORE_DB_OWNER_PASSWORD'
    cat "$provision_sql"
  } | WIDGETSTORE_DB_PASSWORD="${!var}" WIDGETSTORE_DB_OWNER_PASSWORD="${!owner_var}" \
    psql_su -v name="$s" -v owner="${s}_owner"
  echo "pg-init: database '$s' and roles '$s', '${s}_owner' ready"
done
