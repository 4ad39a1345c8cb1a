#!/usr/bin/env bash
# Runs the integration tests: starts the local PostgreSQL and Kafka if they
# are not running (scripts/up-infra.sh), then pytest over tests/integration.
# Extra arguments go to pytest, e.g. -k two_relays to run one test.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bash "$root/scripts/up-infra.sh"
cd "$root/tests/integration"
# Not on a terminal (CI, a log file), pytest cuts each line of its summary
# at 80 columns, which drops the error after a long test name.
[ -t 1 ] || export COLUMNS="${COLUMNS:-250}"
exec python3 -m pytest -v -rA "$@" .
