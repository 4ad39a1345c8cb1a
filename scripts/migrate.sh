#!/usr/bin/env bash
# Applies the SQL migrations of one service to its database: sql/common/*.sql,
# then sql/SERVICE/*.sql (each sorted by file name). Applied files are recorded
# in schema_migrations (version = "common/001_x.sql" or "SERVICE/001_y.sql")
# and skipped on later runs. Each file runs in one transaction together with
# its schema_migrations row; a session-level advisory lock serialises
# concurrent runs against the same database.
#
# Usage: scripts/migrate.sh SERVICE [OWNER_DATABASE_URL]
#   Migrations run as the database's owner role (SERVICE_owner), not as the
#   role the service runs as, which may only read and write rows. The URL
#   defaults to $<SERVICE>_OWNER_DATABASE_URL, then to that key in
#   .local/secrets.env. SERVICE may also be a throwaway database created with
#   `pg.sh createdb NAME`; without a sql/NAME directory only sql/common applies.
# Migration files are named NNN_what.sql; privileges.sql in the same
# directories is not a migration but the service role's rights on each table,
# applied after the migrations on every run (sql/common/privileges.sql).
# Migration files must not contain their own BEGIN/COMMIT, nor statements that
# cannot run inside a transaction (CREATE INDEX CONCURRENTLY, VACUUM, ...).
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

if [ $# -lt 1 ] || [ $# -gt 2 ]; then die "usage: migrate.sh SERVICE [OWNER_DATABASE_URL]"; fi
service="$1"
[[ "$service" =~ ^[a-z_][a-z0-9_]*$ ]] || die "bad service name '$service'"
SQL_DIR="$REPO_ROOT/sql"
SECRETS="$LOCAL_DIR/secrets.env"
key="${service^^}_OWNER_DATABASE_URL"

url="${2:-}"
if [ -z "$url" ]; then
  url="${!key:-}"
fi
if [ -z "$url" ] && [ -f "$SECRETS" ]; then
  url="$(grep -E "^${key}=" "$SECRETS" | tail -n1 | cut -d= -f2- || true)"
fi
[ -n "$url" ] || die "no database URL: pass one, set $key, or run scripts/pg.sh init"
command -v psql >/dev/null || die "psql not found (run scripts/install-deps.sh)"

hide_password url

files=()
versions=()
privileges=()
add_dir() { # DIR-NAME
  local dir="$SQL_DIR/$1" f
  [ -d "$dir" ] || return 0
  while IFS= read -r f; do
    [ -n "$f" ] || continue
    files+=("$dir/$f")
    versions+=("$1/$f")
  done < <(find "$dir" -maxdepth 1 -type f -name '[0-9]*.sql' -printf '%f\n' | LC_ALL=C sort)
  [ ! -f "$dir/privileges.sql" ] || privileges+=("$dir/privileges.sql")
}
add_dir common
if [ "$service" != common ]; then
  [ -d "$SQL_DIR/$service" ] || say "no sql/$service directory; applying sql/common only"
  add_dir "$service"
fi

for f in "${files[@]}"; do
  if grep -qiE '^[[:space:]]*(BEGIN|COMMIT|ROLLBACK|START[[:space:]]+TRANSACTION)[[:space:]]*(WORK|TRANSACTION)?[[:space:]]*;' "$f"; then
    die "${f#"$REPO_ROOT"/} has its own BEGIN/COMMIT; migrate.sh wraps every file in a transaction"
  fi
done

quote() { printf "'%s'" "${1//\'/\'\'}"; } # psql meta-command argument quoting

script="$(mktemp)"
trap 'rm -f "$script"' EXIT
{
  cat <<'EOF'
SET client_min_messages = warning;
SELECT pg_try_advisory_lock(hashtext('widgetstore.migrate')) AS got_lock \gset
\if :got_lock
\else
\warn waiting for another migration run on this database ...
SELECT pg_advisory_lock(hashtext('widgetstore.migrate')) AS got_lock \gset
\endif
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    applied_at timestamptz DEFAULT now()
);
EOF
  for i in "${!files[@]}"; do
    cat <<EOF
\\set version $(quote "${versions[$i]}")
SELECT NOT EXISTS (SELECT FROM schema_migrations WHERE version = :'version') AS pending \\gset
\\if :pending
BEGIN;
\\i $(quote "${files[$i]}")
INSERT INTO schema_migrations (version) VALUES (:'version');
COMMIT;
\\echo APPLIED :version
\\endif
EOF
  done
  # The service role's rights, table by table, on every run (sql/common/privileges.sql).
  echo "SELECT current_database() AS role, EXISTS (SELECT FROM pg_roles WHERE rolname = current_database()) AS has_role \\gset"
  echo "\\if :has_role"
  echo "BEGIN;"
  for f in "${privileges[@]}"; do echo "\\i $(quote "$f")"; done
  echo "COMMIT;"
  echo "\\endif"
  echo "SELECT pg_advisory_unlock(hashtext('widgetstore.migrate')) AS unlocked \\gset"
} >"$script"

out="$(mktemp)"
trap 'rm -f "$script" "$out"' EXIT
if ! psql -X -q -At -v ON_ERROR_STOP=1 -d "$url" -f "$script" >"$out"; then
  cat "$out"
  die "$service: migration failed; the failing file was rolled back (earlier files stay applied)"
fi
grep -v '^APPLIED ' "$out" || true
applied="$(grep -c '^APPLIED ' "$out" || true)"
if [ "$applied" -eq 0 ]; then
  say "$service: up to date (${#files[@]} migration file(s) already applied), nothing to do"
else
  sed -n 's/^APPLIED /  applied /p' "$out"
  say "$service: applied $applied of ${#files[@]} migration file(s)"
fi
