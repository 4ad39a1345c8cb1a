#!/usr/bin/env bash
# Controls the services run by scripts/up.sh: a thin wrapper around
# supervisorctl on this project's supervisord (.local/supervisor/).
#
# Usage: scripts/services.sh status [NAME]
#                            start|stop|restart NAME|all
#                            logs NAME [-f] [-n LINES]   (.local/logs/NAME.log)
#                            ctl ARGS...                 (any supervisorctl command)
# NAME is api, checkout, inventory, payment or dispatch. `stop` keeps a service
# down until `start` (or the next scripts/up.sh); a service that crashes is
# restarted by supervisord.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source-path=SCRIPTDIR source=lib/supervisor.sh
source "$REPO_ROOT/scripts/lib/supervisor.sh"

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
  exit 2
}

need_name() { # NAME [all-allowed]
  [ -n "${1:-}" ] || usage
  if [ "$1" = all ] && [ "${2:-}" = all ]; then return 0; fi
  is_service "$1" || die "unknown service '$1' (one of: ${SERVICES[*]}${2:+, all})"
}

need_running() {
  sup_pid >/dev/null || {
    echo "services: not running (start them with make up)" >&2
    exit 3
  }
}

[ $# -ge 1 ] || usage
cmd="$1"
shift
case "$cmd" in
status)
  need_running
  [ $# -eq 0 ] || need_name "$1"
  ctl status "$@"
  ;;
start | stop | restart)
  [ $# -eq 1 ] || usage
  need_name "$1" all
  need_running
  ctl "$cmd" "$1"
  ;;
logs)
  need_name "${1:-}"
  name="$1"
  shift
  follow=() lines=100
  while [ $# -gt 0 ]; do
    case "$1" in
    -f) follow=(-F) ;;
    -n)
      [[ "${2:-}" =~ ^[0-9]+$ ]] || die "-n needs a number"
      lines="$2"
      shift
      ;;
    *) usage ;;
    esac
    shift
  done
  log="$SERVICE_LOG_DIR/$name.log"
  [ -f "$log" ] || [ ${#follow[@]} -gt 0 ] || die "no log yet: $log"
  exec tail -n "$lines" "${follow[@]}" "$log"
  ;;
ctl)
  need_running
  ctl "$@"
  ;;
-h | --help | help) usage ;;
*)
  warn "unknown command '$cmd'"
  usage
  ;;
esac
