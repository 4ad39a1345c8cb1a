#!/usr/bin/env bash
# Stops the whole widget store (what `make down` runs): the five services,
# gracefully (SIGTERM, up to 15 s each, in the reverse of the start order),
# with this project's supervisord, then PostgreSQL and Kafka
# (scripts/down-infra.sh). Data in .local/ is kept. Idempotent.
#
# Environment: KEEP_INFRA=1 stops only the services and leaves PostgreSQL and
# Kafka running.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source-path=SCRIPTDIR source=lib/supervisor.sh
source "$REPO_ROOT/scripts/lib/supervisor.sh"

rc=0
sup_lock
if pid="$(sup_pid)"; then
  say "stopping the services (supervisord pid $pid) ..."
  # One by one, the public api first (no new orders), the consumers last.
  # (`stop all` would go in start order, and `shutdown` alone prints nothing.)
  ctl stop "${SERVICES[@]}" || true
  ctl shutdown >/dev/null || kill -TERM "$pid" 2>/dev/null || true
  # supervisord stops whatever still runs before it exits; give it time for
  # every program's stopwaitsecs.
  end=$(($(now_ms) + 120000))
  while grep -qs supervisord "/proc/$pid/cmdline"; do
    if [ "$(now_ms)" -ge "$end" ]; then
      warn "supervisord (pid $pid) still running after 120 s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      rc=1
      break
    fi
    sleep 0.2
  done
  say "services stopped"
else
  say "services not running"
fi
rm -f "$SUP_PIDFILE" "$SUP_SOCK"

# Services that outlived a killed supervisord: TERM, then KILL after 15 s.
mapfile -t orphans < <(orphan_pids)
if [ ${#orphans[@]} -gt 0 ]; then
  warn "stopping service processes left over from an earlier supervisord: ${orphans[*]}"
  kill -TERM "${orphans[@]}" 2>/dev/null || true
  end=$(($(now_ms) + 15000))
  while mapfile -t orphans < <(orphan_pids) && [ ${#orphans[@]} -gt 0 ]; do
    if [ "$(now_ms)" -ge "$end" ]; then
      kill -KILL "${orphans[@]}" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
fi
for port in "$API_HTTP_PORT" "${ADMIN_PORTS[@]}"; do
  if port_open "$port"; then
    warn "port $port is still in use: $(port_owner "$port")"
  fi
done

if [ "${KEEP_INFRA:-0}" = 1 ]; then
  say "KEEP_INFRA=1: leaving PostgreSQL and Kafka running"
else
  bash "$REPO_ROOT/scripts/down-infra.sh" || rc=1
fi
exit "$rc"
