#!/usr/bin/env bash
# Rewinds a consumer group so its service re-reads a topic: to the start, to
# an offset, or to a point in time. Every consumer is idempotent (inbox), so a
# replay changes nothing that was already applied; it recovers what a lost or
# restored database no longer has.
#
# Usage: scripts/replay.sh GROUP TOPIC --to-earliest
#        scripts/replay.sh GROUP TOPIC --to-offset N
#        scripts/replay.sh GROUP TOPIC --to-datetime 2026-11-22T10:00:00.000
#
# The group's consumers must be stopped first (Kafka refuses to move the
# offsets of an active group). It uses Kafka's own ConsumerGroupCommand, so
# the broker's jars must be fetched (scripts/kafka.sh fetch).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 3 ] || { sed -n '2,13p' "$0" >&2; exit 2; }
group=$1 topic=$2
shift 2
case "$1" in
--to-earliest | --to-offset | --to-datetime) ;;
*) echo "replay: unknown target $1" >&2; exit 2 ;;
esac
brokers=${KAFKA_BROKERS:-127.0.0.1:${KAFKA_PORT:-9092}}
# The tool reports a refused reset (an active group) on stdout with exit code
# 0, so success is recognised by the table of new offsets it prints.
out=$(bash "$here/kafka.sh" tool org.apache.kafka.tools.consumer.group.ConsumerGroupCommand \
  --bootstrap-server "$brokers" --group "$group" --topic "$topic" --reset-offsets "$@" --execute 2>&1) || true
printf '%s\n' "$out"
if grep -q '^Error' <<<"$out" || ! grep -q "^$group " <<<"$out"; then
  echo "replay: offsets of group $group not moved" >&2
  exit 1
fi
