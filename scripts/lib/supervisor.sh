# Shared by up.sh, down.sh and services.sh (sourced after common.sh): where the
# project's own supervisord instance keeps its files, and small helpers around
# it. It never touches a system-wide supervisord (/etc/supervisor).

# shellcheck shell=bash disable=SC2034
SERVICES=(api checkout inventory payment dispatch)
# UP_PORT_OFFSET (0) shifts every port, e.g. to run beside services that
# someone started by hand on the default ones.
UP_PORT_OFFSET="${UP_PORT_OFFSET:-0}"
[[ "$UP_PORT_OFFSET" =~ ^[0-9]+$ ]] || die "UP_PORT_OFFSET must be a whole number"
declare -A ADMIN_PORTS=(
  [api]=$((9100 + UP_PORT_OFFSET)) [checkout]=$((9101 + UP_PORT_OFFSET))
  [inventory]=$((9102 + UP_PORT_OFFSET)) [payment]=$((9103 + UP_PORT_OFFSET))
  [dispatch]=$((9104 + UP_PORT_OFFSET))
)
API_HTTP_PORT=$((8080 + UP_PORT_OFFSET))

SUP_DIR="$LOCAL_DIR/supervisor"
SUP_CONF="$SUP_DIR/supervisord.conf"
SUP_PIDFILE="$SUP_DIR/supervisord.pid"
SUP_LOG="$SUP_DIR/supervisord.log"
SUP_LOCK="$SUP_DIR/.lock"
SERVICE_LOG_DIR="$LOCAL_DIR/logs"
# A unix socket path must fit in 108 bytes; fall back to /tmp for deep checkouts.
SUP_SOCK="$SUP_DIR/supervisor.sock"
if [ "${#SUP_SOCK}" -gt 100 ]; then
  SUP_SOCK="/tmp/widgetstore-supervisor-$(printf '%s' "$REPO_ROOT" | sha256sum | cut -c1-12).sock"
fi

is_service() {
  local s
  for s in "${SERVICES[@]}"; do [ "$s" = "$1" ] && return 0; done
  return 1
}

# Prints the pid of this project's supervisord; fails if it is not running.
sup_pid() {
  [ -f "$SUP_PIDFILE" ] || return 1
  local pid cmdline stat
  pid="$(cat "$SUP_PIDFILE" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [ "${stat%% *}" != Z ] || return 1
  # Guard against pid reuse: it must be supervisord on our configuration.
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmdline" == *supervisord*"$SUP_CONF"* ]] || return 1
  echo "$pid"
}

ctl() {
  supervisorctl -c "$SUP_CONF" "$@"
}

# Prints "NAME STATE" for every program (empty if supervisord does not answer).
sup_states() {
  ctl status 2>/dev/null | awk 'NF >= 2 { print $1, $2 }' || true
}

# Serialises up/down/services start-stop; descriptor 8 stays locked until the
# script exits (supervisord must not inherit it: started with 8>&-).
sup_lock() {
  mkdir -p "$SUP_DIR"
  exec 8>"$SUP_LOCK"
  flock -w 180 8 || die "timed out waiting for $SUP_LOCK"
}

# HTTP status code of GET $1 (000 if nothing answers).
http_code() {
  curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" 2>/dev/null || true
}

# Who listens on TCP port $1 (for error messages); empty if unknown.
port_owner() {
  command -v ss >/dev/null || return 0
  ss -ltnpH "sport = :$1" 2>/dev/null | grep -o 'users:(([^)]*))' | head -n1 || true
}

# Pids of processes that this project's supervisord started (their environment
# names its socket) but that outlived it, e.g. after it was killed with SIGKILL.
orphan_pids() {
  local f pid want="SUPERVISOR_SERVER_URL=unix://$SUP_SOCK"
  for f in /proc/[0-9]*/environ; do
    pid="${f#/proc/}"
    pid="${pid%/environ}"
    [ "$pid" != $$ ] || continue
    if { tr '\0' '\n' <"$f"; } 2>/dev/null | grep -qxF "$want"; then
      echo "$pid"
    fi
  done
}
