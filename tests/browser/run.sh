#!/usr/bin/env bash
# Headless-browser end-to-end test of the widget store page.
#   tests/browser/run.sh                      # against http://localhost:8080
#   BASE_URL=http://host:port tests/browser/run.sh
# Installs Debian's Chromium if missing and the pinned playwright-core (npm ci,
# no browser download) if node_modules is missing, then runs the test.
set -euo pipefail
cd "$(dirname "$0")"

export BASE_URL="${BASE_URL:-http://localhost:8080}"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

if [ ! -x "$CHROMIUM" ]; then
  echo "run.sh: $CHROMIUM missing, installing Debian's chromium" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get install -y chromium || { $SUDO apt-get update && $SUDO apt-get install -y chromium; }
fi

if [ ! -d node_modules/playwright-core ]; then
  echo "run.sh: installing node dependencies (npm ci)" >&2
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
fi

exec node buy_and_dispatch.test.mjs
