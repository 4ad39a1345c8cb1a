#!/usr/bin/env bash
# Restores one service's database from a dump made by scripts/backup.sh, then
# makes the service catch up by replaying its topics from shortly before the
# dump's time. Replaying from earlier than needed is harmless: the restored
# inbox skips what the dump already holds, and everything after is applied
# again, in order.
#
# Usage: scripts/restore.sh SERVICE DUMP_FILE   (api, inventory or payment;
#   checkout and dispatch are refused, with the reason)
#   Stops and restarts SERVICE when it runs under `make up`. Restores as the
#   database's owner role, then lets the service's own role use the schema
#   again, with its rights on each table (sql/*/privileges.sql).
#   Overrides (used by the tests): <SERVICE>_DATABASE_URL,
#   <SERVICE>_OWNER_DATABASE_URL, KAFKA_GROUP (default SERVICE),
#   KAFKA_TOPIC_PREFIX, KAFKA_BROKERS, SKIP_SUPERVISOR=1, REPLAY_MARGIN_S (60).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=lib/common.sh
source "$here/lib/common.sh"
[ $# -eq 2 ] || { sed -n '2,15p' "$0" >&2; exit 2; }
service=$1 file=$2
# A restore is only as good as the replay that follows it: the service must
# do again exactly what it did the first time. Two cannot.
case "$service" in
checkout) why="it numbers orders from its own sequence, so a replay would
number the orders taken since the dump afresh, and they would no longer match
the reservations and payments that inventory and payment hold." ;;
dispatch) why="its steps follow its clock, not messages, so a replay would
run the steps of every shipment since the dump again (each order's progress
would go from 10 to 0 twice)." ;;
esac
if [ -n "${why:-}" ]; then
  echo "restore: $service cannot be restored from a dump: $why
Recover its database with PostgreSQL's own means instead (a standby, or
point-in-time recovery from archived WAL), which keep every commit." >&2
  exit 2
fi
key="${service^^}_DATABASE_URL"
url=${!key:-$(grep -E "^$key=" "$root/.local/secrets.env" | cut -d= -f2-)}
owner_key="${service^^}_OWNER_DATABASE_URL"
owner_url=${!owner_key:-$(grep -E "^$owner_key=" "$root/.local/secrets.env" | cut -d= -f2-)}
[ -n "$url" ] && [ -n "$owner_url" ] || { echo "restore: no database URLs for $service" >&2; exit 2; }
# The service's role: the user part of its URL (postgresql://ROLE:pw@host/db).
role=${url#*://}
role=${role%%[:@]*}
group=${KAFKA_GROUP:-$service}
prefix=${KAFKA_TOPIC_PREFIX:-}
brokers=${KAFKA_BROKERS:-127.0.0.1:${KAFKA_PORT:-9092}}
case "$service" in
api) topics="checkout.events inventory.events dispatch.events" ;;
checkout) topics="checkout.commands inventory.events payment.events dispatch.events" ;;
inventory) topics="inventory.commands" ;;
payment) topics="payment.commands" ;;
dispatch) topics="dispatch.commands" ;;
*) echo "restore: unknown service $service" >&2; exit 2 ;;
esac
# The dump's start time is in its name (scripts/backup.sh).
dumped_at=$(basename "$file" .dump | sed "s/^$service-//")
from_ms=$(( $(date -u -d "$dumped_at" +%s%3N) - ${REPLAY_MARGIN_S:-60} * 1000 ))
from=$(date -u -d "@$((from_ms / 1000))" +%Y-%m-%dT%H:%M:%S.000Z)

supervised=0
if [ "${SKIP_SUPERVISOR:-0}" != 1 ] && bash "$here/services.sh" status "$service" >/dev/null 2>&1; then
  supervised=1
  bash "$here/services.sh" stop "$service"
fi

hide_password owner_url
echo "restore: replacing the $service database with $file"
psql "$owner_url" -X -q -v ON_ERROR_STOP=1 -v role="$role" <<'SQL'
DROP SCHEMA public CASCADE;
CREATE SCHEMA public;
GRANT USAGE ON SCHEMA public TO :"role";
SQL
pg_restore --no-owner --exit-on-error --dbname="$owner_url" "$file"
# The service role's rights, table by table, as the migrations leave them (a
# dump carries the rights it was taken with, which may be older).
bash "$here/migrate.sh" "$service" "$owner_url" >/dev/null

echo "restore: replaying $topics from $from (UTC)"
list=""
for t in $topics; do list+="${list:+,}$prefix$t"; done
KAFKA_BROKERS=$brokers bash "$here/replay.sh" "$group" "$list" --to-datetime "$from" >/dev/null

if [ "$supervised" = 1 ]; then
  bash "$here/services.sh" start "$service"
fi
echo "restore: done; $service catches up from the topics"
