#!/usr/bin/env bash
# Installs the Debian packages needed to build, test and run the widget store
# (`make deps`; `make up` and `make test` run it first). Idempotent: packages
# already present are left alone. pytest and Node.js (the browser test's
# driver) come from Debian only when the machine has none, so a newer one
# installed otherwise (pip, NodeSource) is kept.
set -euo pipefail

packages=(
  build-essential pkg-config clang-format
  librdkafka-dev libpq-dev libmicrohttpd-dev libcjson-dev check libssl-dev uuid-dev
  libcurl4-openssl-dev
  postgresql postgresql-contrib postgresql-client
  openjdk-17-jre-headless maven
  curl jq procps psmisc
  nftables
  python3-venv python3-yaml
  supervisor
  kcat
)

python3 -c 'import pytest' 2>/dev/null || packages+=(python3-pytest)
command -v node >/dev/null || packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
