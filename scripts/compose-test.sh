#!/usr/bin/env bash
# The real docker-compose.yml, brought up and broken on this machine, with
# no image registry: installs docker.io, docker-compose and debootstrap when
# missing, starts its own dockerd when none runs, builds every image
# offline (deploy/docker/build-images.sh, from the release binaries the test
# run built), drops the containers' egress, brings the stack up and runs
# tests/tests/compose.rs against it: every service healthy, quotes through
# nginx on websocket and polling, a replica killed, nginx restarted while a
# replica is down, the Redis primary killed, the NATS node leading the
# events stream killed, then the one a replica reads from. Then it
# takes everything down and removes what it started: containers, networks,
# volumes, the images it built, its dockerd (by PID), and that dockerd's
# iptables rules.
#
# Skips (exit 0, with the reason) when dockerd cannot run here.
# Usage: [MT5_BIN_DIR=DIR] scripts/compose-test.sh [--no-install] [--keep]
#   --keep  leave the stack and dockerd running (for a look by hand)
# RUST_LOG reaches the gateways (e.g. info,async_nats=debug); with
# MT5_COMPOSE_DEBUG=1 the test prints what the client's replica logged
# after each NATS node kill.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

install=1 keep=0
for arg in "$@"; do
  case "$arg" in
    --no-install) install=0 ;;
    --keep) keep=1 ;;
    *) echo "compose-test.sh: unknown option $arg" >&2; exit 64 ;;
  esac
done
t0=$(date +%s)
say() { printf '  [compose %3ss] %s\n' "$(($(date +%s) - t0))" "$*"; }
skip() { echo "compose test SKIPPED: $*"; exit 0; }
have() { command -v "$1" >/dev/null 2>&1; }

if [ "$install" = 1 ]; then
  missing=()
  have dockerd || missing+=(docker.io)
  have docker-compose || missing+=(docker-compose)
  have debootstrap || missing+=(debootstrap)
  if [ ${#missing[@]} -gt 0 ]; then
    say "apt-get install ${missing[*]}"
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
for tool in docker docker-compose debootstrap strip iptables; do
  have "$tool" || skip "$tool is not installed"
done
[ "$(id -u)" = 0 ] || skip "needs root (dockerd, debootstrap, iptables)"

run=$(mktemp -d /tmp/mt5-compose.XXXXXX)
project=mt5ct
own_dockerd="" rules=() forward_policy=""

cleanup() {
  local rc=$?
  if [ "$keep" = 1 ]; then
    say "--keep: stack left running (DOCKER_HOST=${DOCKER_HOST:-default}, project $project)"
    return
  fi
  say "taking everything down"
  docker-compose -p "$project" -f docker-compose.yml down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
  for rule in "${rules[@]}"; do
    # shellcheck disable=SC2086
    iptables -D DOCKER-USER $rule 2>/dev/null || true
  done
  if [ -n "$own_dockerd" ]; then
    kill "$own_dockerd" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$own_dockerd" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$own_dockerd" 2>/dev/null || true
    # What that dockerd added to iptables (chains, jumps, masquerading).
    for t in filter nat; do
      iptables -t $t -S 2>/dev/null | grep -E '^-A (FORWARD|PREROUTING|OUTPUT|POSTROUTING|INPUT) .*(DOCKER|docker0|br-)' |
        sed 's/^-A/-D/' | while read -r r; do
          # shellcheck disable=SC2086
          iptables -t $t $r 2>/dev/null || true
        done
      for c in $(iptables -t $t -S 2>/dev/null | awk '/^-N DOCKER/{print $2}'); do iptables -t $t -F "$c" 2>/dev/null || true; done
      for c in $(iptables -t $t -S 2>/dev/null | awk '/^-N DOCKER/{print $2}'); do iptables -t $t -X "$c" 2>/dev/null || true; done
    done
    [ -n "${forward_policy:-}" ] && iptables -P FORWARD "$forward_policy" 2>/dev/null || true
    ip link del docker0 2>/dev/null || true
    for br in $(ip -o link show type bridge 2>/dev/null | awk -F': ' '{print $2}' | grep '^br-' || true); do
      ip link del "$br" 2>/dev/null || true
    done
    umount -R "$run/data" 2>/dev/null || true
    rm -rf "$run"
  else
    docker image rm mt5-gateway:compose-test mt5-nats:bookworm mt5-redis:bookworm \
      mt5-nginx:bookworm mt5-debian:bookworm >/dev/null 2>&1 || true
    rm -rf "$run"
  fi
  say "done (exit $rc) after $(($(date +%s) - t0)) s"
}
trap cleanup EXIT

# 1. dockerd: the one running, or our own (own socket, state and data, no
#    default bridge), stopped by its PID at the end.
if ! docker info >/dev/null 2>&1; then
  say "starting dockerd"
  forward_policy=$(iptables -S FORWARD 2>/dev/null | awk '/^-P FORWARD/{print $3}')
  mkdir -p "$run/data" "$run/exec"
  dockerd --host "unix://$run/docker.sock" --data-root "$run/data" --exec-root "$run/exec" \
    --pidfile "$run/dockerd.pid" --bridge=none >"$run/dockerd.log" 2>&1 &
  own_dockerd=$!
  export DOCKER_HOST="unix://$run/docker.sock"
  for _ in $(seq 150); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$own_dockerd" 2>/dev/null || break
    sleep 0.2
  done
  if ! docker info >/dev/null 2>&1; then
    reason=$(grep -iE 'level=(error|fatal)|failed' "$run/dockerd.log" | tail -3 || true)
    skip "dockerd cannot start here: ${reason:-$(tail -3 "$run/dockerd.log")}"
  fi
fi

# 2. Images, offline. MT5_BIN_DIR: binaries to use instead of a release
#    build (any profile; they are stripped).
bin_dir=${MT5_BIN_DIR:-target/release}
if [ -z "${MT5_BIN_DIR:-}" ] && { [ ! -x target/release/gateway ] || [ ! -x target/release/ingestor ] ||
  [ -n "$(find gateway ingestor bus protocol sim -name '*.rs' -newer target/release/gateway 2>/dev/null | head -1)" ]; }; then
  say "cargo build --release -p gateway -p ingestor"
  cargo build --release -p gateway -p ingestor >"$run/cargo.log" 2>&1 || { tail -30 "$run/cargo.log"; exit 1; }
fi
say "building images (deploy/docker/build-images.sh)"
deploy/docker/build-images.sh --tag compose-test --bin-dir "$bin_dir"
image_size=$(docker image inspect mt5-gateway:compose-test --format '{{.Size}}')
say "mt5-gateway image: $((image_size / 1000000)) MB"

# 3. Up, secrets random, nginx on a free loopback port.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export MT5_VERSION=compose-test MT5_HTTP_PORT=$port MT5_ACCOUNT=12345678
export JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export REDIS_PASSWORD=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
# Begins like a number on purpose: the compose file must hand it to
# nats-server quoted (unquoted, 5e7b... fails to load).
export NATS_INGESTOR_PASSWORD=5e7b$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
export NATS_GATEWAY_PASSWORD=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
compose() { docker-compose -p "$project" -f docker-compose.yml "$@"; }
say "docker-compose up (networks first, then egress dropped, then containers)"
compose up --no-start >/dev/null 2>&1
for net in $(docker network ls -q --filter "label=com.docker.compose.project=$project"); do
  br="br-${net:0:12}"
  rule="-i $br ! -o $br -m conntrack --ctstate NEW -j DROP"
  # shellcheck disable=SC2086
  iptables -I DOCKER-USER $rule
  rules+=("$rule")
done
compose up -d >/dev/null 2>&1 || { compose ps; compose logs --tail 20; exit 1; }

say "waiting for every service to be healthy"
deadline=$(($(date +%s) + 240))
while :; do
  states=$(for c in $(compose ps -q); do docker inspect -f '{{.Name}} {{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$c"; done)
  if ! grep -vqE ' (healthy|running)$' <<<"$states"; then break; fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "$states"; compose logs --tail 30; exit 1
  fi
  sleep 2
done
say "all healthy after $(($(date +%s) - t0)) s: $(wc -l <<<"$states") containers"

# No route off the machine: the backend network is internal (Docker drops
# whatever its bridge would forward elsewhere), and new outbound
# connections from every project bridge, the edge too, are dropped.
for rule in "${rules[@]}"; do
  # shellcheck disable=SC2086
  iptables -C DOCKER-USER $rule || { echo "egress rule missing: $rule"; exit 1; }
done
iptables -S 2>/dev/null | grep -q "DOCKER-ISOLATION.*br-" || { echo "no isolation rules for the internal network"; exit 1; }
say "egress dropped: ${#rules[@]} DOCKER-USER rules, backend internal"

# 4. The checks, in Rust with the end-to-end fixtures.
say "cargo test -p e2e-tests --test compose"
MT5_COMPOSE_URL="http://127.0.0.1:$port" MT5_COMPOSE_PROJECT=$project \
  cargo test -q -p e2e-tests --test compose -- --ignored --nocapture --test-threads 1
say "compose test passed in $(($(date +%s) - t0)) s; gateway image $((image_size / 1000000)) MB"
