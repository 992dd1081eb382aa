#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what is
# missing (nats-server, redis-server, nginx, chromium, the Node and Python
# test clients), checks formatting and lints (clippy, warnings are errors),
# builds the binaries, and runs unit, end-to-end and browser tests. Every
# end-to-end test starts its own NATS, Redis, nginx and gateways on free
# ports, so nothing here needs a server already running; NATS and Redis are
# also started on their default ports when not answering (as the
# README promises; --no-services skips it), for trying the gateway by hand.
#
# The compose test (scripts/compose-test.sh) ends it: the real
# docker-compose.yml on a local dockerd, images built offline; it skips
# with its reason where dockerd cannot run.
#
# Usage: scripts/test.sh [--no-install] [--no-browser] [--no-services] [--no-bench] [--no-compose]
set -euo pipefail
cd "$(dirname "$0")/.."

install=1 browser=1 services=1 bench=1 compose=1
for arg in "$@"; do
  case "$arg" in
    --no-install) install=0 ;;
    --no-browser) browser=0 ;;
    --no-services) services=0 ;;
    --no-bench) bench=0 ;;
    --no-compose) compose=0 ;;
    *) echo "unknown option $arg" >&2; exit 64 ;;
  esac
done

step() { printf '\n==> %s\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

if [ "$install" = 1 ]; then
  missing=()
  have nats-server || missing+=(nats-server)
  have redis-server || missing+=(redis-server)
  have redis-sentinel || missing+=(redis-sentinel)
  have nginx || missing+=(nginx-light)
  have openssl || missing+=(openssl)
  if [ "$browser" = 1 ]; then have chromium || missing+=(chromium); fi
  if [ ${#missing[@]} -gt 0 ]; then
    step "apt-get install ${missing[*]}"
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  step "npm ci (socket.io-client for the tests)"
  (cd tests/clients/node && npm ci --no-audit --no-fund --loglevel=error)
  if [ "$browser" = 1 ]; then
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
  fi
  step "pip install python-socketio, PyYAML, kubernetes-validate"
  python3 -c 'import socketio, websocket, yaml' 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check 'python-socketio[client]>=5,<6' 'websocket-client>=1' 'PyYAML>=6'
  command -v kubernetes-validate >/dev/null 2>&1 ||
    python3 -m pip install --quiet --disable-pip-version-check 'kubernetes-validate>=1.37,<2'
fi
export PATH="$PATH:/usr/sbin"

if [ "$services" = 1 ]; then
  step "NATS on 4222 and Redis on 6379 (for manual use)"
  (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null || { nats-server -js -p 4222 -sd /tmp/nats-store >/tmp/nats.log 2>&1 & }
  (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null || { redis-server --port 6379 --save "" --daemonize yes >/dev/null; }
fi

step "deployment files (docker-compose.yml, deploy/k8s, deploy/nginx)"
python3 scripts/check-deploy.py

step "cargo fmt --all --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build --workspace --bins"
cargo build --workspace --bins

step "cargo test --workspace"
cargo test --workspace

if [ "$browser" = 1 ]; then
  step "browser tests (headless Chromium)"
  (cd tests/browser && node --test --test-concurrency=1 .)
fi

if [ "$bench" = 1 ]; then
  step "benchmark smoke (100 clients, 5 s; release build)"
  bash bench/smoke.sh
fi

if [ "$compose" = 1 ]; then
  step "compose test (docker-compose.yml on a local dockerd, images built offline)"
  opts=(); [ "$install" = 1 ] || opts+=(--no-install)
  bash scripts/compose-test.sh "${opts[@]}"
fi

step "all tests passed"
