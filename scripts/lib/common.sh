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
