#!/usr/bin/env bash
# Rewinds a consumer group so its service re-reads topics: to the start, to an
# offset, or to a point in time. Every consumer is idempotent (inbox), so a
# replay changes nothing that was already applied; it recovers what a lost or
# restored database no longer has.
#
# Usage: scripts/replay.sh GROUP TOPIC[,TOPIC...] --to-earliest
#        scripts/replay.sh GROUP TOPIC[,TOPIC...] --to-offset N
#        scripts/replay.sh GROUP TOPIC[,TOPIC...] --to-datetime 2026-11-22T10:00:00.000Z
#
# The group's consumers must be stopped first: Kafka refuses to move the
# offsets of an active group, so this retries for up to REPLAY_WAIT_S (30)
# seconds while the broker notices that they left. It uses Kafka's own
# ConsumerGroupCommand (the broker's jars: scripts/kafka.sh fetch).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 3 ] || { sed -n '2,15p' "$0" >&2; exit 2; }
group=$1
IFS=, read -r -a topic_list <<<"$2"
shift 2
case "$1" in
--to-earliest | --to-offset | --to-datetime) ;;
*) echo "replay: unknown target $1" >&2; exit 2 ;;
esac
brokers=${KAFKA_BROKERS:-127.0.0.1:${KAFKA_PORT:-9092}}
topics=()
for t in "${topic_list[@]}"; do topics+=(--topic "$t"); done

# The tool reports a refused reset (an active group) on stdout with exit code
# 0, so success is recognised by the table of new offsets it prints.
deadline=$((SECONDS + ${REPLAY_WAIT_S:-30}))
while :; do
  out=$(bash "$here/kafka.sh" tool org.apache.kafka.tools.consumer.group.ConsumerGroupCommand \
    --bootstrap-server "$brokers" --group "$group" "${topics[@]}" --reset-offsets "$@" \
    --execute 2>&1) || true
  if ! grep -q '^Error' <<<"$out" && grep -q "^$group " <<<"$out"; then
    printf '%s\n' "$out"
    exit 0
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    printf '%s\n' "$out" >&2
    echo "replay: offsets of group $group not moved (are its consumers stopped?)" >&2
    exit 1
  fi
  sleep 1
done
