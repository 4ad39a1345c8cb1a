#!/usr/bin/env bash
# Builds the container image from the top-level Dockerfile with podman and
# runs it for real: the migrations (scripts/migrate.sh in the image, as
# docker-compose.yml's migrate job does), then the five services, each in its
# own container against the local PostgreSQL and Kafka (host network, fresh
# databases and a topic prefix of their own), then one purchase through the
# containerised api until the order is DISPATCHED. Cleans up after itself.
#
# Needs podman, runc and, where no registry is reachable, debootstrap (to
# make the debian:12 base image from the Debian mirror); installs them if
# missing. Usage: tests/deploy/image.sh (or make test-image).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
say() { echo "image: $*"; }
die() { echo "image: FAIL: $*" >&2; exit 1; }

need=()
for p in podman runc debootstrap; do command -v "$p" >/dev/null || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  apt-get install -y -q --no-install-recommends podman runc debootstrap >/dev/null
fi
podman() { command podman --runtime runc --cgroup-manager cgroupfs "$@"; }
# Some sandboxes refuse the runtime's default (very high) limits.
run() { podman run --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 "$@"; }

if ! podman image exists docker.io/library/debian:12; then
  if ! podman pull -q docker.io/library/debian:12 >/dev/null 2>&1; then
    say "no registry: making debian:12 from the Debian mirror with debootstrap"
    rootfs=$(mktemp -d)
    debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
    rm -f "$rootfs"/var/cache/apt/archives/*.deb
    tar -C "$rootfs" -c . | podman import --change 'CMD ["bash"]' - docker.io/library/debian:12 >/dev/null
    rm -rf "$rootfs"
  fi
fi
podman image exists docker.io/library/debian:12-slim ||
  podman pull -q docker.io/library/debian:12-slim >/dev/null 2>&1 ||
  podman tag docker.io/library/debian:12 docker.io/library/debian:12-slim

say "building widgetstore:local"
podman build -q --network host -t widgetstore:local . >/dev/null

bash scripts/up-infra.sh >/dev/null
tag="img$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')"
services=(api checkout inventory payment dispatch)
started=()
cleanup() {
  for s in "${started[@]}"; do podman rm -f -t 10 "$tag-$s" >/dev/null 2>&1 || true; done
  for s in "${services[@]}"; do bash scripts/pg.sh dropdb "${tag}_$s" >/dev/null 2>&1 || true; done
  KAFKA_BROKERS=localhost:9092 MSGTEST_DATABASE_URL=unused build/tests/msgtest delete-topics "$tag." \
    >/dev/null 2>&1 || true
}
trap cleanup EXIT

# Fresh databases; the URLs over TCP, since the containers cannot see the
# local server's socket directory.
envfile=$(mktemp)
chmod 600 "$envfile"
for s in "${services[@]}"; do
  bash scripts/pg.sh createdb "${tag}_$s" >/dev/null
  for kind in DATABASE_URL OWNER_DATABASE_URL; do
    url=$(grep -E "^${tag^^}_${s^^}_$kind=" .local/secrets.env | tail -n1 | cut -d= -f2-)
    url=$(sed -E 's#@[^@/]*:([0-9]+)/#@127.0.0.1:\1/#' <<<"$url")
    echo "${s^^}_$kind=$url" >>"$envfile"
  done
done

say "migrating in the image"
run --rm --network host --env-file "$envfile" widgetstore:local bash -c \
  'for s in api checkout inventory payment dispatch; do bash scripts/migrate.sh "$s" >/dev/null || exit 1; done'

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http_port=$(free_port)
declare -A admin
for s in "${services[@]}"; do
  admin[$s]=$(free_port)
  url=$(grep -E "^${s^^}_DATABASE_URL=" "$envfile" | cut -d= -f2-)
  run -d --name "$tag-$s" --network host -e DATABASE_URL="$url" -e KAFKA_BROKERS=127.0.0.1:9092 \
    -e KAFKA_TOPIC_PREFIX="$tag." -e ADMIN_PORT="${admin[$s]}" -e HTTP_PORT="$http_port" \
    -e DISPATCH_INTERVAL_MS=100 widgetstore:local "/app/bin/$s" >/dev/null
  started+=("$s")
done
rm -f "$envfile"

# Waits up to $1 seconds for command $2... to succeed.
await() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.5
  done
}
for s in "${services[@]}"; do
  await 60 curl -fsS "http://127.0.0.1:${admin[$s]}/readyz" || {
    podman logs --tail 20 "$tag-$s" >&2 || true
    die "$s in its container never became ready"
  }
done
say "five containers ready"

base="http://127.0.0.1:$http_port"
payment_id=$(curl -fsS -X POST "$base/checkout/$tag-key") || die "checkout failed"
order_id=$(curl -fsS -X POST "$base/payment_webhook/$payment_id/paid") || die "webhook failed"
dispatched() { curl -fsS "$base/order/$order_id" | grep -q '"order_status" *: *1'; }
await 60 dispatched || die "order $order_id never reached DISPATCHED: $(curl -sS "$base/order/$order_id")"
curl -fsS -o /dev/null "$base/" || die "the page is not served"
say "ok: built, migrated, and a purchase went from checkout to DISPATCHED (order $order_id) in containers"
