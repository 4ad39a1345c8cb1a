#!/usr/bin/env bash
# Stops the local infrastructure started by scripts/up-infra.sh (the Kafka
# broker, then PostgreSQL). Data in .local/ is kept. Idempotent; tries both
# even if one fails, and exits non-zero if either did.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

rc=0
bash "$REPO_ROOT/scripts/kafka.sh" stop || rc=1
bash "$REPO_ROOT/scripts/pg.sh" stop || rc=1
if [ "$rc" -ne 0 ]; then
  die "could not stop everything (see the messages above)"
fi
say "infrastructure down"
