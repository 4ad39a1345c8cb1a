#!/usr/bin/env bash
# Brings up the whole widget store locally (what `make up` runs after `make all`):
# installs the Debian packages, fetches Kafka, starts PostgreSQL and Kafka,
# applies every service's migrations, then runs the five services under this
# project's own supervisord (config generated into .local/supervisor/, logs in
# .local/logs/) and waits until every one is ready. Idempotent: run it again to
# pick up rebuilt binaries or changed settings (only what changed restarts).
# Stop everything with scripts/down.sh; manage services with scripts/services.sh.
#
# Environment:
#   UP_TIMEOUT          seconds to wait for readiness (90)
#   SERVICE_BIN_DIR     where the service binaries are (build/services; relative
#                       paths are from the repo root), e.g. build/asan/services
#   SERVICES_ENV_FILE   file of KEY=VALUE lines added to every service's
#                       environment (after, so overriding, the defaults below)
#   <NAME>_DATABASE_URL a service's database (default: .local/secrets.env)
#   KAFKA_BROKERS       (127.0.0.1:$KAFKA_PORT), LOG_LEVEL (info)
#   UP_PORT_OFFSET      added to every service port (0: api 8080 and 9100-9104)
#   SKIP_INSTALL=1      skip scripts/install-deps.sh (packages known present)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source-path=SCRIPTDIR source=lib/supervisor.sh
source "$REPO_ROOT/scripts/lib/supervisor.sh"

UP_TIMEOUT="${UP_TIMEOUT:-90}"
check_deadline "$UP_TIMEOUT"
BIN_DIR="${SERVICE_BIN_DIR:-build/services}"
[[ "$BIN_DIR" == /* ]] || BIN_DIR="$REPO_ROOT/$BIN_DIR"
SECRETS="$LOCAL_DIR/secrets.env"
KAFKA_BROKERS="${KAFKA_BROKERS:-127.0.0.1:${KAFKA_PORT:-9092}}"
LOG_LEVEL="${LOG_LEVEL:-info}"

# --- 1. packages and infrastructure ------------------------------------------

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  bash "$REPO_ROOT/scripts/install-deps.sh"
fi
for c in supervisord supervisorctl curl flock; do
  command -v "$c" >/dev/null || die "$c not found; run scripts/install-deps.sh"
done

for s in "${SERVICES[@]}"; do
  [ -x "$BIN_DIR/$s" ] || die "no service binary $BIN_DIR/$s (run make all, or set SERVICE_BIN_DIR)"
done

bash "$REPO_ROOT/scripts/kafka.sh" fetch
bash "$REPO_ROOT/scripts/up-infra.sh"

# --- 2. migrations -----------------------------------------------------------

# A service's URL (the role it runs as): $<NAME>_DATABASE_URL, then secrets.env.
database_url() {
  local key="${1^^}_DATABASE_URL" url
  url="${!key:-}"
  if [ -z "$url" ] && [ -f "$SECRETS" ]; then
    url="$(grep -E "^${key}=" "$SECRETS" | tail -n1 | cut -d= -f2- || true)"
  fi
  [ -n "$url" ] || die "no database URL for $1: set $key or run scripts/pg.sh init"
  echo "$url"
}

for s in "${SERVICES[@]}"; do
  bash "$REPO_ROOT/scripts/migrate.sh" "$s"
done

# --- 3. supervisord configuration ---------------------------------------------

# Checks that a value can go into a supervisor `environment=` list: supervisor
# splits the list with a non-POSIX shlex (no escapes) and its config parser
# strips " ;" / " #" comments. (It also expands %(...)s: env_value doubles %.)
check_env_value() { # KEY VALUE
  local v="$2"
  if [[ "$v" == *'"'* || "$v" == *$'\n'* || "$v" == \'* || "$v" == *\' ||
    "$v" =~ [[:space:]][\;\#] ]]; then
    die "the value of $1 cannot be passed through supervisor (it contains \", a newline, a leading/trailing ' or a ' ;'/' #' sequence)"
  fi
}
env_value() { printf '"%s"' "${1//%/%%}"; }

declare -A DB_URL=()
for s in "${SERVICES[@]}"; do
  DB_URL[$s]="$(database_url "$s")"
  check_env_value "${s^^}_DATABASE_URL" "${DB_URL[$s]}"
done
check_env_value KAFKA_BROKERS "$KAFKA_BROKERS"
check_env_value LOG_LEVEL "$LOG_LEVEL"

# Extra KEY=VALUE lines for every program, from $SERVICES_ENV_FILE.
extra_keys=()
declare -A extra=()
if [ -n "${SERVICES_ENV_FILE:-}" ]; then
  [ -f "$SERVICES_ENV_FILE" ] || die "SERVICES_ENV_FILE=$SERVICES_ENV_FILE: no such file"
  lineno=0
  while IFS= read -r line || [ -n "$line" ]; do
    lineno=$((lineno + 1))
    line="${line%$'\r'}"
    [[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
    line="${line#export }"
    [[ "$line" =~ ^[[:space:]]*([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] ||
      die "$SERVICES_ENV_FILE:$lineno: expected KEY=VALUE"
    k="${BASH_REMATCH[1]}" v="${BASH_REMATCH[2]}"
    # One pair of surrounding quotes is removed, as a shell would.
    if [[ "$v" =~ ^\"(.*)\"$ || "$v" =~ ^\'(.*)\'$ ]]; then v="${BASH_REMATCH[1]}"; fi
    check_env_value "$k" "$v"
    [ -n "${extra[$k]+x}" ] || extra_keys+=("$k")
    extra[$k]="$v"
  done <"$SERVICES_ENV_FILE"
fi

# Start order (supervisor stops in the reverse order): the services that only
# consume first, checkout next, the public api last.
declare -A PRIORITY=([inventory]=100 [payment]=100 [dispatch]=100 [checkout]=200 [api]=300)

# Kafka allows letters, digits, '.', '_' and '-' in a group.instance.id.
INSTANCE_HOST="$(hostname | tr -c 'A-Za-z0-9._\n-' '_')"

program_section() { # NAME
  local s="$1" k
  local -A env=()
  local -a keys=(DATABASE_URL KAFKA_BROKERS ADMIN_PORT LOG_LEVEL)
  env[DATABASE_URL]="${DB_URL[$s]}"
  env[KAFKA_BROKERS]="$KAFKA_BROKERS"
  env[ADMIN_PORT]="${ADMIN_PORTS[$s]}"
  env[LOG_LEVEL]="$LOG_LEVEL"
  # Static group membership: a service the supervisor restarts after a crash
  # takes its partitions back at once, with no rebalance and no wait for its
  # old session to time out. One process per service here, so the name is
  # unique (the host and port tell apart two copies sharing a broker).
  keys+=(KAFKA_INSTANCE_ID)
  env[KAFKA_INSTANCE_ID]="$s.$INSTANCE_HOST.${ADMIN_PORTS[$s]}"
  if [ "$s" = api ]; then
    keys+=(HTTP_PORT)
    env[HTTP_PORT]="$API_HTTP_PORT"
  fi
  # A fingerprint of the binary: a rebuilt binary changes the program's
  # environment, so `supervisorctl update` restarts just that program.
  keys+=(WIDGETSTORE_BINARY_SHA256)
  env[WIDGETSTORE_BINARY_SHA256]="$(sha256sum "$BIN_DIR/$s" | cut -c1-16)"
  for k in "${extra_keys[@]}"; do
    [ -n "${env[$k]+x}" ] || keys+=("$k")
    env[$k]="${extra[$k]}"
  done
  local list="" sep=""
  for k in "${keys[@]}"; do
    list+="$sep$k=$(env_value "${env[$k]}")"
    sep=","
  done
  cat <<EOF

[program:$s]
command=$BIN_DIR/$s
directory=$REPO_ROOT
environment=$list
priority=${PRIORITY[$s]}
autostart=true
autorestart=true
startsecs=1
startretries=1000000
stopsignal=TERM
stopwaitsecs=15
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile=$SERVICE_LOG_DIR/$s.log
stdout_logfile_maxbytes=20MB
stdout_logfile_backups=5
EOF
}

write_conf() {
  local tmp user_line=""
  # As root, say so (silences supervisord's warning about running as root).
  [ "$(id -u)" -ne 0 ] || user_line="user=root"
  mkdir -p "$SUP_DIR" "$SERVICE_LOG_DIR"
  chmod 700 "$SUP_DIR"
  tmp="$(mktemp "$SUP_CONF.XXXXXX")"
  chmod 600 "$tmp"
  {
    cat <<EOF
; Generated by scripts/up.sh on every run; edit the script, not this file.
; Mode 600: it holds the services' database URLs (from .local/secrets.env).
; Control: bash scripts/services.sh, or supervisorctl -c $SUP_CONF

[unix_http_server]
file=$SUP_SOCK
chmod=0700

[supervisord]
logfile=$SUP_LOG
logfile_maxbytes=5MB
logfile_backups=3
loglevel=info
pidfile=$SUP_PIDFILE
childlogdir=$SERVICE_LOG_DIR
directory=$REPO_ROOT
identifier=widgetstore
umask=027
nodaemon=false
$user_line

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://$SUP_SOCK
EOF
    for s in "${SERVICES[@]}"; do program_section "$s"; done
  } >"$tmp"
  mv -f "$tmp" "$SUP_CONF"
}

# --- 4. start or update supervisord -------------------------------------------

sup_lock
write_conf

if pid="$(sup_pid)"; then
  say "supervisord already running (pid $pid); applying the configuration"
  ctl reread
  ctl update
  # Start whatever was stopped by hand (services.sh stop) or gave up.
  while read -r name state; do
    case "$state" in
    STOPPED | EXITED | FATAL) ctl start "$name" ;;
    esac
  done < <(sup_states)
else
  # Nothing of ours runs: the ports must be free, or the readiness checks
  # below would be answered by some other process.
  busy=()
  for port in "$API_HTTP_PORT" "${ADMIN_PORTS[@]}"; do
    port_open "$port" && busy+=("$port $(port_owner "$port")")
  done
  if [ ${#busy[@]} -gt 0 ]; then
    printf '  port %s\n' "${busy[@]}" >&2
    die "ports needed by the services are in use (a service started by hand? one left over from a killed supervisord: make down stops it)"
  fi
  rm -f "$SUP_PIDFILE"
  say "starting supervisord ($SUP_CONF, log $SUP_LOG)"
  # A clean environment, so nothing from the caller's shell (a DATABASE_URL,
  # KAFKA_GROUP, ...) leaks into the services; the programs' own environment
  # comes from the configuration.
  env -i PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    HOME="${HOME:-/root}" LANG=C.UTF-8 USER="$(id -un)" \
    supervisord -c "$SUP_CONF" 8>&- ||
    die "supervisord did not start (see $SUP_LOG)"
  end=$(($(now_ms) + 15000))
  until ctl pid >/dev/null 2>&1; do
    [ "$(now_ms)" -lt "$end" ] || die "supervisord does not answer on $SUP_SOCK (see $SUP_LOG)"
    sleep 0.2
  done
fi

# --- 5. wait for readiness ----------------------------------------------------

say "waiting up to ${UP_TIMEOUT}s for the services to be ready ..."
end=$(($(now_ms) + UP_TIMEOUT * 1000))
declare -A why=()
while :; do
  why=()
  declare -A state=()
  while read -r name st; do state[$name]="$st"; done < <(sup_states)
  for s in "${SERVICES[@]}"; do
    st="${state[$s]:-UNKNOWN}"
    if [ "$st" != RUNNING ]; then
      why[$s]="supervisor state $st"
      continue
    fi
    code="$(http_code "http://127.0.0.1:${ADMIN_PORTS[$s]}/readyz")"
    [ "$code" = 200 ] || why[$s]="GET :${ADMIN_PORTS[$s]}/readyz -> $code"
  done
  if [ -z "${why[api]+x}" ]; then
    code="$(http_code "http://127.0.0.1:$API_HTTP_PORT/product")"
    [ "$code" = 200 ] || why[api]="GET :$API_HTTP_PORT/product -> $code"
  fi
  [ ${#why[@]} -eq 0 ] && break
  if [ "$(now_ms)" -ge "$end" ]; then
    warn "not ready after ${UP_TIMEOUT}s:"
    for s in "${SERVICES[@]}"; do
      [ -n "${why[$s]+x}" ] || continue
      warn "  $s: ${why[$s]}"
    done
    for s in "${SERVICES[@]}"; do
      [ -n "${why[$s]+x}" ] || continue
      warn "--- last lines of $SERVICE_LOG_DIR/$s.log:"
      tail -n 25 "$SERVICE_LOG_DIR/$s.log" >&2 2>/dev/null || warn "(no log yet)"
    done
    die "the services are left running under supervisord; inspect with 'bash scripts/services.sh status', stop with 'make down'"
  fi
  sleep 0.5
done

ctl status || true
echo "Widget store is up: http://localhost:$API_HTTP_PORT"
echo "Logs in .local/logs/<service>.log ('bash scripts/services.sh status|logs NAME|restart NAME'); stop everything with 'make down'."
