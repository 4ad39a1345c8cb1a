#!/usr/bin/env bash
# Drops the api service's read model (products, orders, progress, restock
# acks) and rebuilds it from the topics alone: empties those tables and the
# api's inbox, rewinds the api consumer group to the start of
# checkout.events, inventory.events and dispatch.events, and lets api re-read
# them. The HTTP idempotency records (checkout_requests) are kept: they are
# not derived from any topic.
#
# Usage: scripts/rebuild-read-model.sh
#   When the services run under `make up`, api is stopped first and started
#   again afterwards. It empties the tables as the database's owner role
#   (the api's own role may not TRUNCATE). Overrides (used by the tests):
#   API_OWNER_DATABASE_URL,
#   KAFKA_GROUP (default api), KAFKA_TOPIC_PREFIX, KAFKA_BROKERS,
#   SKIP_SUPERVISOR=1 (the caller stops and starts api itself).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=lib/common.sh
source "$here/lib/common.sh"

url=${API_OWNER_DATABASE_URL:-$(grep -E '^API_OWNER_DATABASE_URL=' "$root/.local/secrets.env" | cut -d= -f2-)}
group=${KAFKA_GROUP:-api}
prefix=${KAFKA_TOPIC_PREFIX:-}
brokers=${KAFKA_BROKERS:-127.0.0.1:${KAFKA_PORT:-9092}}
supervised=0
if [ "${SKIP_SUPERVISOR:-0}" != 1 ] && bash "$here/services.sh" status api >/dev/null 2>&1; then
  supervised=1
  bash "$here/services.sh" stop api
fi

echo "rebuild: emptying the read model"
hide_password url
psql "$url" -X -q -v ON_ERROR_STOP=1 <<'SQL'
BEGIN;
TRUNCATE products, orders, order_progress, restock_acks, inbox;
COMMIT;
SQL

echo "rebuild: rewinding group $group"
KAFKA_BROKERS=$brokers bash "$here/replay.sh" "$group" \
  "${prefix}checkout.events,${prefix}inventory.events,${prefix}dispatch.events" --to-earliest >/dev/null

if [ "$supervised" = 1 ]; then
  bash "$here/services.sh" start api
fi
echo "rebuild: done; api re-reads the topics (watch GET /orders fill up)"
