# Shared helpers for the local-infrastructure scripts (sourced, not run).
# Sets REPO_ROOT and LOCAL_DIR (the git-ignored runtime-state directory).

# shellcheck shell=bash disable=SC2034
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
LOCAL_DIR="$REPO_ROOT/.local"
SCRIPT_NAME="$(basename "${0}" .sh)"

say() { printf '%s: %s\n' "$SCRIPT_NAME" "$*"; }
warn() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() {
  printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2
  exit 1
}

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() {
  timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# Validates a deadline argument (whole seconds).
check_deadline() {
  [[ "$1" =~ ^[0-9]+$ ]] || die "deadline must be a whole number of seconds, got '$1'"
}

# Milliseconds since the epoch (for deadlines finer than $SECONDS).
now_ms() {
  local t="${EPOCHREALTIME//[!0-9]/}"
  echo $((t / 1000))
}

# Moves the password out of the PostgreSQL URL held by the variable named $1
# into PGPASSWORD (exported), so that it stays out of the process list
# (ps, /proc/*/cmdline) of the psql, pg_dump or pg_restore it is passed to.
hide_password() { # VARIABLE-NAME
  local -n hidden_url=$1
  if [[ "$hidden_url" =~ ^(postgres(ql)?://)([^:@/]+):([^@/]*)@(.*)$ ]]; then
    PGPASSWORD="$(printf '%b' "${BASH_REMATCH[4]//%/\\x}")"
    export PGPASSWORD
    hidden_url="${BASH_REMATCH[1]}${BASH_REMATCH[3]}@${BASH_REMATCH[5]}"
  fi
}
