#!/usr/bin/env bash
# Runs the messaging micro-benchmark against the local PostgreSQL and Kafka
# (started if needed) in a fresh database, and prints its figures.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-build}
bash "$root/scripts/up-infra.sh"
name="bench_$(date +%s)"
bash "$root/scripts/pg.sh" createdb "$name" >/dev/null
trap 'bash "$root/scripts/pg.sh" dropdb "$name" >/dev/null' EXIT
url=$(grep "^${name^^}_DATABASE_URL=" "$root/.local/secrets.env" | cut -d= -f2-)
owner_url=$(grep "^${name^^}_OWNER_DATABASE_URL=" "$root/.local/secrets.env" | cut -d= -f2-)
bash "$root/scripts/migrate.sh" "$name" "$owner_url" >/dev/null
BENCH_DATABASE_URL="$url" BENCH_TOPIC="$name" "$root/$build/tests/outbox_bench"
