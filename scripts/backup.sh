#!/usr/bin/env bash
# Dumps one service's database (pg_dump, custom format) into .local/backups/,
# named after the service and the UTC time the dump started, and prints the
# file name. Restore it with scripts/restore.sh.
#
# Usage: scripts/backup.sh SERVICE
#   The database URL comes from <SERVICE>_DATABASE_URL, else .local/secrets.env.
#   The dump is readable by its owner only.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/common.sh
source "$root/scripts/lib/common.sh"
umask 077 # a dump holds the whole database: for its owner's eyes only
[ $# -eq 1 ] || { sed -n '2,8p' "$0" >&2; exit 2; }
service=$1
key="${service^^}_DATABASE_URL"
url=${!key:-$(grep -E "^$key=" "$root/.local/secrets.env" | cut -d= -f2-)}
[ -n "$url" ] || { echo "backup: no database URL for $service" >&2; exit 2; }
mkdir -p "$root/.local/backups"
chmod 700 "$root/.local/backups" # made before it was private, too
hide_password url
started=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
file="$root/.local/backups/$service-$started.dump"
pg_dump --format=custom --no-owner --file="$file" "$url"
echo "$file"
