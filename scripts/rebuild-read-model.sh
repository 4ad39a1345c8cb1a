#!/usr/bin/env bash
# Drops the api service's read model (products, orders, progress) and rebuilds
# it from the topics alone: empties those tables and the api's inbox, rewinds
# the api consumer group to the start of checkout.events, inventory.events and
# dispatch.events, and lets api re-read them. The HTTP idempotency records
# (checkout_requests) are kept: they are not derived from any topic.
#
# Usage: scripts/rebuild-read-model.sh
#   When the services run under `make up`, api is stopped first and started
#   again afterwards. Overrides (used by the tests): API_DATABASE_URL,
#   KAFKA_GROUP (default api), KAFKA_TOPIC_PREFIX, KAFKA_BROKERS,
#   SKIP_SUPERVISOR=1 (the caller stops and starts api itself).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

url=${API_DATABASE_URL:-$(grep -E '^API_DATABASE_URL=' "$root/.local/secrets.env" | cut -d= -f2-)}
group=${KAFKA_GROUP:-api}
prefix=${KAFKA_TOPIC_PREFIX:-}
brokers=${KAFKA_BROKERS:-127.0.0.1:9092}
supervised=0
if [ "${SKIP_SUPERVISOR:-0}" != 1 ] && bash "$here/services.sh" status api >/dev/null 2>&1; then
  supervised=1
  bash "$here/services.sh" stop api
fi

echo "rebuild: emptying the read model"
psql "$url" -X -q -v ON_ERROR_STOP=1 <<'SQL'
BEGIN;
TRUNCATE products, orders, order_progress, inbox;
COMMIT;
SQL

echo "rebuild: rewinding group $group"
topics=()
for t in checkout.events inventory.events dispatch.events; do topics+=(--topic "$prefix$t"); done
for attempt in $(seq 1 30); do
  out=$(bash "$here/kafka.sh" tool org.apache.kafka.tools.consumer.group.ConsumerGroupCommand \
    --bootstrap-server "$brokers" --group "$group" "${topics[@]}" --reset-offsets --to-earliest \
    --execute 2>&1) || true
  if ! grep -q '^Error' <<<"$out" && grep -q "^$group " <<<"$out"; then
    break
  fi
  [ "$attempt" -lt 30 ] || { printf '%s\n' "$out" >&2; echo "rebuild: cannot rewind $group" >&2; exit 1; }
  sleep 1 # the broker has not yet noticed that the group's members left
done

if [ "$supervised" = 1 ]; then
  bash "$here/services.sh" start api
fi
echo "rebuild: done; api re-reads the topics (watch GET /orders fill up)"
