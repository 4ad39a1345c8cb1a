#!/usr/bin/env bash
# Brings up the local infrastructure: fetches the Kafka jars if needed, starts
# PostgreSQL (creating the cluster and service databases on first run) and the
# Kafka broker, and waits until both accept clients. Idempotent: whatever is
# already running is left alone. Stop everything with scripts/down-infra.sh.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

for c in java mvn psql pg_isready; do
  command -v "$c" >/dev/null || die "$c not found; run scripts/install-deps.sh first"
done

bash "$REPO_ROOT/scripts/kafka.sh" fetch
bash "$REPO_ROOT/scripts/pg.sh" start
bash "$REPO_ROOT/scripts/kafka.sh" start
bash "$REPO_ROOT/scripts/pg.sh" wait "${INFRA_WAIT_SECONDS:-60}"
bash "$REPO_ROOT/scripts/kafka.sh" wait "${INFRA_WAIT_SECONDS:-60}"
say "infrastructure up: $(bash "$REPO_ROOT/scripts/pg.sh" status), kafka at 127.0.0.1:${KAFKA_PORT:-9092}; database URLs in .local/secrets.env"
