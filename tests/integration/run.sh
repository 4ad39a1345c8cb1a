#!/usr/bin/env bash
# Runs the integration tests: starts the local PostgreSQL and Kafka if they
# are not running (scripts/up-infra.sh), then pytest over tests/integration.
# Extra arguments go to pytest, e.g. -k two_relays to run one test.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bash "$root/scripts/up-infra.sh"
cd "$root/tests/integration"
exec python3 -m pytest -v -rA "$@" .
