#!/usr/bin/env bash
# Lists a service's dead letters, or hands one back to the service once the
# cause is fixed, for the system `make up` runs (the services' binaries do the
# work: `SERVICE dead-letters`, see shared/dead_letters.h).
#
# Usage: scripts/dead-letters.sh SERVICE [--json]
#        scripts/dead-letters.sh SERVICE redrive MESSAGE_ID
#   The database URL comes from <SERVICE>_DATABASE_URL, else .local/secrets.env;
#   KAFKA_BROKERS (default 127.0.0.1:${KAFKA_PORT:-9092}), KAFKA_GROUP and
#   KAFKA_TOPIC_PREFIX as for the service.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[ $# -ge 1 ] || { sed -n '2,10p' "$0" >&2; exit 2; }
service=$1
shift
case "$service" in
api | checkout | inventory | payment | dispatch) ;;
*) echo "dead-letters: unknown service $service" >&2; exit 2 ;;
esac
key="${service^^}_DATABASE_URL"
url=${!key:-$(grep -E "^$key=" "$root/.local/secrets.env" 2>/dev/null | cut -d= -f2-)}
[ -n "$url" ] || { echo "dead-letters: no database URL for $service" >&2; exit 2; }
bin="${SERVICE_BIN_DIR:-$root/build/services}/$service"
[ -x "$bin" ] || { echo "dead-letters: no binary $bin (run make)" >&2; exit 2; }
brokers=${KAFKA_BROKERS:-127.0.0.1:${KAFKA_PORT:-9092}}
DATABASE_URL=$url KAFKA_BROKERS=$brokers LOG_LEVEL=${LOG_LEVEL:-warn} exec "$bin" dead-letters "$@"
