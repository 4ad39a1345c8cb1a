#!/usr/bin/env bash
# Runs a local single-node Apache Kafka broker (KRaft, broker+controller in one
# JVM) for development and tests. All state lives in .local/kafka/.
#
# Usage: scripts/kafka.sh fetch|start|stop|status|wait [SECONDS]|restart|topics [ARGS]
#                         |lag [GROUP]|tool CLASS [ARGS]
#   fetch    download the pinned Kafka jars (scripts/kafka/pom.xml) with Maven
#   start    start the broker in the background (formats storage on first run)
#            and wait until it is ready; no-op if already running
#   stop     SIGTERM, wait up to $KAFKA_STOP_TIMEOUT (30) s, then SIGKILL
#   status   print running/stopped; exit 0 if running, 3 if stopped
#   wait     wait until the broker answers a metadata request (default 60 s)
#   restart  stop, then start
#   topics   list topics; with ARGS, run kafka-topics with those ARGS instead,
#            e.g. `topics --describe --topic orders`
#   lag      how far each consumer group (or GROUP: a service's group is its
#            name) is behind, per partition: committed offset, end, LAG
#   tool     run any Kafka tool class on the broker's classpath, e.g.
#            `tool org.apache.kafka.tools.consumer.group.ConsumerGroupCommand
#             --bootstrap-server 127.0.0.1:9092 --describe --all-groups`
# Environment: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093), KAFKA_STOP_TIMEOUT (30)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

KAFKA_DIR="$LOCAL_DIR/kafka"
LIBS_DIR="$KAFKA_DIR/libs"
DATA_DIR="$KAFKA_DIR/data"
LOG_FILE="$KAFKA_DIR/kafka.log"
PID_FILE="$KAFKA_DIR/kafka.pid"
PROPS_FILE="$KAFKA_DIR/server.properties"
LOG4J_BROKER="$KAFKA_DIR/log4j2-broker.xml"
LOG4J_TOOLS="$KAFKA_DIR/log4j2-tools.xml"
POM="$REPO_ROOT/scripts/kafka/pom.xml"
FETCH_MARKER="$LIBS_DIR/.fetched"

KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
[[ "$KAFKA_PORT$KAFKA_CONTROLLER_PORT" =~ ^[0-9]+$ ]] || die "KAFKA_PORT and KAFKA_CONTROLLER_PORT must be port numbers"
check_deadline "$KAFKA_STOP_TIMEOUT"

need_java() {
  command -v java >/dev/null || die "java not found (run scripts/install-deps.sh)"
}

pom_hash() { sha256sum "$POM" | cut -d' ' -f1; }

is_fetched() {
  [ -f "$FETCH_MARKER" ] && [ "$(cat "$FETCH_MARKER")" = "$(pom_hash)" ]
}

cmd_fetch() {
  if is_fetched; then
    say "jars already fetched ($LIBS_DIR)"
    return 0
  fi
  command -v mvn >/dev/null || die "mvn not found (run scripts/install-deps.sh)"
  need_java
  mkdir -p "$KAFKA_DIR"
  local tmp="$KAFKA_DIR/libs.tmp"
  rm -rf "$tmp"
  say "fetching Kafka jars with Maven (scripts/kafka/pom.xml) ..."
  # sed: Debian's Maven prints stray colour-reset codes even in batch mode.
  if ! mvn -q -B -f "$POM" dependency:copy-dependencies -DoutputDirectory="$tmp" 2>&1 |
    sed 's/\x1b\[[0-9;]*m//g'; then
    rm -rf "$tmp"
    die "Maven could not fetch the Kafka jars"
  fi
  ls "$tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || die "fetch produced no kafka_2.13 jar in $tmp"
  if broker_pid >/dev/null; then
    warn "the broker is running on the old jars; restart it to use the new ones"
  fi
  rm -rf "$LIBS_DIR"
  mv "$tmp" "$LIBS_DIR"
  pom_hash >"$FETCH_MARKER"
  say "fetched $(find "$LIBS_DIR" -name '*.jar' | wc -l) jars into $LIBS_DIR"
}

ensure_fetched() { is_fetched || cmd_fetch; }

# Runs a Kafka tool class with a small, quick-starting JVM; logs go to stderr at WARN.
run_tool() {
  need_java
  ensure_fetched
  write_log4j_configs
  java -Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$LOG4J_TOOLS" \
    -cp "$LIBS_DIR/*" "$@"
}

write_log4j_configs() {
  mkdir -p "$KAFKA_DIR"
  # Broker: INFO to stdout, which start redirects to kafka.log; chatty loggers at WARN.
  cat >"$LOG4J_BROKER" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <Console name="STDOUT" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="STDOUT"/></Root>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="kafka.log.LogCleaner" level="WARN"/>
    <Logger name="org.apache.kafka.clients" level="WARN"/>
    <Logger name="org.apache.kafka.common.utils.AppInfoParser" level="WARN"/>
    <Logger name="org.apache.kafka.common.config.AbstractConfig" level="WARN"/>
    <!-- per-partition chatter: hundreds of lines per start and topic -->
    <Logger name="org.apache.kafka.controller.ReplicationControlManager" level="WARN"/>
    <Logger name="org.apache.kafka.controller.PartitionChangeBuilder" level="WARN"/>
    <Logger name="org.apache.kafka.coordinator.common.runtime.CoordinatorRuntime" level="WARN"/>
    <Logger name="org.apache.kafka.storage.internals.log" level="WARN"/>
    <Logger name="kafka.log.LogManager" level="WARN"/>
    <Logger name="kafka.cluster.Partition" level="WARN"/>
  </Loggers>
</Configuration>
EOF
  cat >"$LOG4J_TOOLS" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <Console name="STDERR" target="SYSTEM_ERR">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="WARN"><AppenderRef ref="STDERR"/></Root>
  </Loggers>
</Configuration>
EOF
}

write_props() {
  cat >"$PROPS_FILE" <<EOF
# Generated by scripts/kafka.sh on every start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA_DIR
num.partitions=4
default.replication.factor=1
auto.create.topics.enable=true
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
# After a crash, the restarted node (broker and controller in one) cannot
# register again until the controller has timed out its previous
# incarnation's session (9 s by default); keep that short on one node.
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
EOF
}

# True while pid $1 exists and is not a zombie (a killed broker stays a zombie
# until whoever adopted it reaps it).
pid_alive() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [ "${stat%% *}" != Z ]
}

# Prints the pid of our running broker; fails if it is not running.
broker_pid() {
  [ -f "$PID_FILE" ] || return 1
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  pid_alive "$pid" || return 1
  # Guard against pid reuse: it must be a kafka.Kafka JVM on our properties file.
  local cmdline
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmdline" == *"kafka.Kafka $PROPS_FILE"* ]] || return 1
  echo "$pid"
}

tail_log() {
  if [ -f "$LOG_FILE" ]; then
    warn "last lines of $LOG_FILE:"
    tail -n "${1:-30}" "$LOG_FILE" >&2
  fi
}

# One readiness probe: the port accepts connections and a metadata request
# lists broker 1 (fenced brokers are not listed, so this means it can serve).
probe() {
  port_open "$KAFKA_PORT" || return 1
  # Output is captured, not piped into grep -q, which under pipefail could
  # fail the probe with SIGPIPE once the topic list gets long.
  local out
  if command -v kcat >/dev/null; then
    out="$(kcat -b "$BOOTSTRAP" -L -m 2 2>/dev/null)" || return 1
    grep -q "broker 1 at " <<<"$out"
  else
    out="$(run_tool org.apache.kafka.tools.BrokerApiVersionsCommand \
      --bootstrap-server "$BOOTSTRAP" 2>/dev/null)" || return 1
    grep -qE '\(id: 1 .*isFenced: false' <<<"$out"
  fi
}

cmd_wait() {
  local deadline="${1:-60}"
  check_deadline "$deadline"
  local end=$(($(now_ms) + deadline * 1000)) had_pid=0
  [ -f "$PID_FILE" ] && had_pid=1
  while :; do
    if probe; then
      say "broker ready on $BOOTSTRAP"
      return 0
    fi
    if [ "$had_pid" = 1 ] && ! broker_pid >/dev/null; then
      tail_log 40
      die "broker process exited (see $LOG_FILE)"
    fi
    if [ "$(now_ms)" -ge "$end" ]; then
      tail_log 40
      die "broker not ready on $BOOTSTRAP after ${deadline}s"
    fi
    sleep 0.5
  done
}

# Serialises start/stop across concurrent callers; descriptor 9 stays locked
# until this script exits (the broker must not inherit it: see cmd_start).
with_lock() {
  mkdir -p "$KAFKA_DIR"
  exec 9>"$KAFKA_DIR/.lock"
  flock -w 120 9 || die "timed out waiting for $KAFKA_DIR/.lock"
}

cmd_start() {
  local pid
  with_lock
  if pid="$(broker_pid)"; then
    say "already running (pid $pid)"
    cmd_wait 60
    return 0
  fi
  rm -f "$PID_FILE"
  need_java
  ensure_fetched
  if port_open "$KAFKA_PORT" || port_open "$KAFKA_CONTROLLER_PORT"; then
    die "port $KAFKA_PORT or $KAFKA_CONTROLLER_PORT is already in use by another process"
  fi
  mkdir -p "$DATA_DIR"
  write_log4j_configs
  write_props
  if [ ! -f "$DATA_DIR/meta.properties" ]; then
    local cluster_id
    cluster_id="$(run_tool kafka.tools.StorageTool random-uuid)"
    say "formatting storage in $DATA_DIR (cluster id $cluster_id)"
    run_tool kafka.tools.StorageTool format --ignore-formatted \
      --cluster-id "$cluster_id" --config "$PROPS_FILE" >/dev/null ||
      die "formatting storage failed"
  fi
  [ -f "$LOG_FILE" ] && mv -f "$LOG_FILE" "$LOG_FILE.1"
  say "starting broker on $BOOTSTRAP (controller 127.0.0.1:$KAFKA_CONTROLLER_PORT), log $LOG_FILE"
  # setsid: own session, so a Ctrl-C in the caller's terminal does not reach it.
  # The inner shell records its own pid and then execs the JVM (same pid).
  # shellcheck disable=SC2016
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$PID_FILE" \
    java -Xms512m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$LOG4J_BROKER" \
    -cp "$LIBS_DIR/*" kafka.Kafka "$PROPS_FILE" \
    </dev/null >>"$LOG_FILE" 2>&1 9>&- &
  # Give the pid file a moment to appear.
  for _ in $(seq 1 50); do
    [ -s "$PID_FILE" ] && break
    sleep 0.1
  done
  cmd_wait "${KAFKA_START_TIMEOUT:-60}"
}

cmd_stop() {
  local pid
  with_lock
  if ! pid="$(broker_pid)"; then
    rm -f "$PID_FILE"
    say "not running"
    return 0
  fi
  say "stopping broker (pid $pid) ..."
  kill -TERM "$pid" 2>/dev/null || true
  local end=$(($(now_ms) + KAFKA_STOP_TIMEOUT * 1000))
  while pid_alive "$pid"; do
    if [ "$(now_ms)" -ge "$end" ]; then
      warn "still running after ${KAFKA_STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do
        pid_alive "$pid" || break
        sleep 0.1
      done
      pid_alive "$pid" && die "could not stop pid $pid"
      break
    fi
    sleep 0.2
  done
  rm -f "$PID_FILE"
  say "stopped"
}

cmd_status() {
  local pid
  if pid="$(broker_pid)"; then
    echo "kafka: running (pid $pid, $BOOTSTRAP)"
    return 0
  fi
  echo "kafka: stopped"
  return 3
}

cmd_topics() {
  if [ $# -eq 0 ]; then
    set -- --list
  fi
  run_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" "$@"
}

cmd_lag() {
  if [ $# -eq 0 ]; then
    set -- --all-groups
  else
    set -- --group "$1"
  fi
  run_tool org.apache.kafka.tools.consumer.group.ConsumerGroupCommand \
    --bootstrap-server "$BOOTSTRAP" --describe "$@"
}

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
  exit 2
}

[ $# -ge 1 ] || usage
cmd="$1"
shift
case "$cmd" in
fetch) cmd_fetch ;;
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
wait) cmd_wait "$@" ;;
restart)
  cmd_stop
  cmd_start
  ;;
topics) cmd_topics "$@" ;;
lag)
  [ $# -le 1 ] || die "usage: kafka.sh lag [GROUP]"
  cmd_lag "$@"
  ;;
tool)
  [ $# -ge 1 ] || die "usage: kafka.sh tool CLASS [ARGS]"
  run_tool "$@"
  ;;
-h | --help | help) usage ;;
*)
  warn "unknown command '$cmd'"
  usage
  ;;
esac
