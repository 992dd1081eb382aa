#!/usr/bin/env bash
# The gateway benchmark: our gateway and the Node socket.io peer, side by
# side, one after the other, on this machine, driven by the same load
# generator (bench/loadgen) through the same nats-server.
#
#   bench/run.sh              every scenario (about 10 minutes), then
#                             bench/results/<date>.jsonl and bench/report.md
#   bench/run.sh --quick      100 clients, 5 s window (a smoke run; results
#                             go to bench/results/<date>-quick.jsonl, the
#                             report to stdout unless --report is given)
#
# Options:
#   --quick             the small run above
#   --ours-only         only our gateway in its default configuration (no
#                       Node peer, no socketioxide-only variant, no ceiling)
#   --only LIST         only these scenario labels (comma-separated), e.g.
#                       fanout-1000,idle-10000
#   --no-build          use the release binaries already built
#   --results FILE      append the JSON lines here instead
#   --report FILE       write the Markdown report here instead
#   --require-delivery R  fail unless every fan-out run got every client
#                       ready and delivered at least R (used by smoke.sh)
#
# Each scenario starts a fresh server on a free port, runs one `loadgen` mode
# against it and stops it by PID. Servers: `ours` (the gateway as configured
# by default: WebSocket-only Socket.IO clients on its own fast path),
# `ours-sio` (SOCKETIO_FAST_PATH=false: every client through socketioxide),
# `node` (bench/peers/node) and `ceiling` (loadgen's trivial server). One nats-server -js (free port, store under /tmp) serves every run.
# The storm scenario (storm-2000, ours only) starts its own redis-server and
# two replicas sharing it, and `loadgen storm` SIGKILLs one of them under
# 2,000 dashboards (see bench/loadgen/src/storm.rs); --only storm-2000 runs
# just that (it needs redis-server on PATH).
# Environment: WARMUP, DURATION (seconds, default 3 and 10),
# CONNECT_RATE (default 1000/s), SLOW_CLIENTS (default 1), GATEWAY_LOG
# (the storm replicas' RUST_LOG, default warn), BENCH_KEEP=1 (keep the work
# directory with every server's log).
set -euo pipefail

QUICK=0
OURS_ONLY=0
BUILD=1
ONLY=""
RESULTS=""
REPORT=""
REQUIRE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --ours-only) OURS_ONLY=1 ;;
    --no-build) BUILD=0 ;;
    --only) ONLY=",$2,"; shift ;;
    --results) RESULTS="$2"; shift ;;
    --report) REPORT="$2"; shift ;;
    --require-delivery) REQUIRE="$2"; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$ROOT/bench
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-target}
case "$TARGET" in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
LOADGEN=$TARGET/release/loadgen
GATEWAY=$TARGET/release/gateway
NODE_PEER=$BENCH/peers/node

WARMUP=${WARMUP:-3}
DURATION=${DURATION:-10}
CONNECT_RATE=${CONNECT_RATE:-1000}
SLOW_CLIENTS=${SLOW_CLIENTS:-1}
if [ "$QUICK" = 1 ]; then
  WARMUP=${WARMUP_QUICK:-2}
  DURATION=${DURATION_QUICK:-5}
fi

say() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
started=$(date +%s)

# Ten thousand sockets per process need more than the usual 1024 files.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 12000 ]; then
  say "warning: open-file limit is $(ulimit -n); the 10,000-connection scenarios will fail"
fi

command -v nats-server >/dev/null || { echo "run.sh: nats-server not found (apt-get install nats-server)" >&2; exit 1; }
if [ "$OURS_ONLY" = 0 ]; then
  if ! command -v node >/dev/null; then
    say "node not found: running ours only"
    OURS_ONLY=1
  elif [ ! -d "$NODE_PEER/node_modules/socket.io" ]; then
    say "installing the Node peer's packages (npm ci)"
    (cd "$NODE_PEER" && npm ci --no-audit --no-fund --loglevel=error) >&2
  fi
fi

if [ "$BUILD" = 1 ]; then
  say "building release binaries (gateway, loadgen)"
  cargo build --release -p gateway -p loadgen >&2
fi

stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
mkdir -p "$BENCH/results"
if [ -z "$RESULTS" ]; then
  if [ "$QUICK" = 1 ]; then RESULTS=$BENCH/results/$stamp-quick.jsonl; else RESULTS=$BENCH/results/$stamp.jsonl; fi
fi
if [ -z "$REPORT" ] && [ "$QUICK" = 0 ]; then REPORT=$BENCH/report.md; fi

WORK=$(mktemp -d /tmp/mt5-bench.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "${BENCH_KEEP:-}" ]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export JWT_SECRET="bench-$(date +%s)-$RANDOM$RANDOM-$RANDOM$RANDOM$RANDOM$RANDOM"

wait_port() { # port seconds
  local deadline=$((SECONDS + $2))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    [ $SECONDS -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

NATS_PORT=$("$LOADGEN" free-port)
nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$WORK/nats" >"$WORK/nats.log" 2>&1 &
NATS_PID=$!
PIDS+=("$NATS_PID")
wait_port "$NATS_PORT" 10 || { cat "$WORK/nats.log" >&2; exit 1; }
NATS_URL=nats://127.0.0.1:$NATS_PORT
say "nats-server $NATS_URL (pid $NATS_PID)"

SERVER_PID=""
SERVER_URL=""
start_server() { # ours | ours-sio | node | ceiling
  local port log fast=true
  port=$("$LOADGEN" free-port)
  log=$WORK/$1.log
  case "$1" in
    ours | ours-sio)
      [ "$1" = ours-sio ] && fast=false
      env NATS_URL="$NATS_URL" GATEWAY_ADDR="127.0.0.1:$port" DEFAULT_ACCOUNT=bench \
        QUOTE_THROTTLE_MS=0 "${LIFTS[@]}" DRAIN_TIMEOUT_SECS=1 \
        SOCKETIO_FAST_PATH=$fast RUST_LOG=warn LOG_FORMAT=text "$GATEWAY" >"$log" 2>&1 &
      ;;
    node)
      env PORT="$port" HOST=127.0.0.1 NATS_URL="$NATS_URL" DEFAULT_ACCOUNT=bench \
        node "$NODE_PEER/server.mjs" >"$log" 2>&1 &
      ;;
    ceiling)
      "$LOADGEN" ceiling-server --addr "127.0.0.1:$port" --nats-url "$NATS_URL" >"$log" 2>&1 &
      ;;
  esac
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  SERVER_URL=http://127.0.0.1:$port
  if ! wait_port "$port" 30; then
    say "$1 did not start:"; tail -20 "$log" >&2; return 1
  fi
  if [ "$1" = ours ] || [ "$1" = ours-sio ]; then
    # Ready once its JetStream feed is up.
    local deadline=$((SECONDS + 20))
    until curl -fs "$SERVER_URL/health/ready" >/dev/null 2>&1; do
      [ $SECONDS -lt $deadline ] || { say "ours never got ready"; tail -20 "$log" >&2; return 1; }
      sleep 0.1
    done
  fi
  # A moment for the Node peer's NATS subscription.
  sleep 0.5
}

stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  local keep=()
  for pid in "${PIDS[@]}"; do [ "$pid" = "$SERVER_PID" ] || keep+=("$pid"); done
  PIDS=("${keep[@]}")
  SERVER_PID=""
}

FAILED=0
# Every load client comes from this one machine and user: lift the
# per-user and per-address connection limits for our gateway.
LIFTS=(MAX_CONNECTIONS_PER_USER=100000 MAX_CONNECTIONS=100000 MAX_CONNECTIONS_PER_IP=100000
  HANDSHAKES_PER_SEC_PER_IP=100000 MAX_PENDING_SESSIONS_PER_IP=100000)

# run_case LABEL SERVER MODE [loadgen args...]
run_case() {
  local label=$1 server=$2 mode=$3
  shift 3
  if [ -n "$ONLY" ] && [[ "$ONLY" != *",$label,"* ]]; then return 0; fi
  if [ "$OURS_ONLY" = 1 ] && [ "$server" != ours ]; then return 0; fi
  say "$label: $server ($mode $*)"
  start_server "$server" || { FAILED=1; stop_server; return 0; }
  local extra=()
  [ "$mode" = fanout ] && extra+=(--nats-url "$NATS_URL")
  [ "$mode" = fanout ] && [ -n "$REQUIRE" ] && extra+=(--require-delivery "$REQUIRE")
  [[ "$server" = ours* ]] && extra+=(--metrics-path /metrics)
  if ! "$LOADGEN" "$mode" --url "$SERVER_URL" --server "$server" --label "$label" \
    --account bench --server-pid "$SERVER_PID" --nats-pid "$NATS_PID" \
    --out "$RESULTS" "${extra[@]}" "$@" >"$WORK/last.json"; then
    say "$label/$server: loadgen failed"
    FAILED=1
  fi
  summarize "$WORK/last.json"
  stop_server
}

summarize() { # one readable line per run, from the JSON line
  local l
  l=$(cat "$1" 2>/dev/null || true)
  [ -n "$l" ] || return 0
  field() { printf '%s' "$l" | grep -o "\"$1\":[^,}]*" | head -1 | cut -d: -f2; }
  case "$(field mode)" in
    '"fanout"') say "  ready $(field ready)/$(field clients), $(field msgs_per_s) msgs/s, delivered $(field delivery_ratio), p99 $(printf '%s' "$l" | grep -o '"p99":[0-9]*' | tail -1 | cut -d: -f2) us, server CPU $(field server_cpu_pct)%, loadgen CPU $(field loadgen_cpu_pct)%, machine $(field machine_busy_pct)%" ;;
    '"idle"') say "  held $(field ready)/$(field clients), $(field server_rss_per_conn_kib) KiB per connection" ;;
    '"connect"') say "  $(field ready) handshakes, $(field handshakes_per_s)/s" ;;
  esac
}

# run_storm LABEL CLIENTS: two replicas on one Redis; loadgen kills the first.
run_storm() {
  local label=$1 clients=$2
  if [ -n "$ONLY" ] && [[ "$ONLY" != *",$label,"* ]]; then return 0; fi
  command -v redis-server >/dev/null || { say "$label: redis-server not found; skipped"; return 0; }
  say "$label: two replicas, $clients dashboards on one, SIGKILL"
  local rport rpid ports=() pids=() i
  rport=$("$LOADGEN" free-port)
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
  rpid=$!
  PIDS+=("$rpid")
  wait_port "$rport" 10 || { say "redis did not start"; FAILED=1; return 0; }
  for i in 1 2; do
    ports[$i]=$("$LOADGEN" free-port)
    env NATS_URL="$NATS_URL" REDIS_URL="redis://127.0.0.1:$rport" GATEWAY_ADDR="127.0.0.1:${ports[$i]}" \
      DEFAULT_ACCOUNT=storm REPLICA_ID="storm-$i" QUOTE_THROTTLE_MS=0 "${LIFTS[@]}" \
      DRAIN_TIMEOUT_SECS=1 RUST_LOG="${GATEWAY_LOG:-warn}" LOG_FORMAT=text "$GATEWAY" >"$WORK/$label-$i.log" 2>&1 &
    pids[$i]=$!
    PIDS+=("${pids[$i]}")
  done
  for i in 1 2; do
    local deadline=$((SECONDS + 30))
    until curl -fs "http://127.0.0.1:${ports[$i]}/health/ready" >/dev/null 2>&1; do
      [ $SECONDS -lt $deadline ] || { say "replica $i never got ready"; tail -20 "$WORK/$label-$i.log" >&2; FAILED=1; return 0; }
      sleep 0.1
    done
  done
  if ! "$LOADGEN" storm --victim-url "http://127.0.0.1:${ports[1]}" --victim-pid "${pids[1]}" \
    --survivor-url "http://127.0.0.1:${ports[2]}" --survivor-pid "${pids[2]}" \
    --nats-url "$NATS_URL" --clients "$clients" --label "$label" --out "$RESULTS" >"$WORK/last.json"; then
    say "$label: loadgen failed"; tail -20 "$WORK/$label-2.log" >&2
    FAILED=1
  fi
  local l
  l=$(cat "$WORK/last.json" 2>/dev/null || true)
  [ -n "$l" ] && say "  $(printf '%s' "$l" | grep -o '"\(all_live_s\|lost\|stale\|duplicates\|duplicates_max_s_of_traffic\|resume_gaps\|survivor_rss_peak_kib\)":[^,}]*' | tr '\n' ' ')"
  for pid in "${pids[@]}" "$rpid"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}" "$rpid"; do wait "$pid" 2>/dev/null || true; done
  local keep=() p
  for p in "${PIDS[@]}"; do [[ " ${pids[*]} $rpid " == *" $p "* ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- gateway bus protocol 2>/dev/null || echo ' + uncommitted gateway changes')"
if [ "$BUILD" = 0 ]; then
  GIT_REV="$GIT_REV (not rebuilt: gateway binary of $(date -u -r "$GATEWAY" +%Y-%m-%dT%H:%MZ 2>/dev/null || echo '?'))"
fi
say "results: $RESULTS (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
WINDOW=(--warmup "$WARMUP" --duration "$DURATION")
FAN=("${WINDOW[@]}" --connect-rate "$CONNECT_RATE")
if [ "$QUICK" = 1 ]; then
  for s in ours node; do
    run_case fanout-100 "$s" fanout --clients 100 --publish-rate 100 --symbols 20 "${FAN[@]}"
  done
else
  for n in 100 1000 3000 6000; do
    for s in ours ours-sio node; do
      run_case "fanout-$n" "$s" fanout --clients "$n" --publish-rate 100 --symbols 20 "${FAN[@]}"
    done
  done
  # The load generator's own ceiling at the heaviest fan-out.
  run_case fanout-6000 ceiling fanout --clients 6000 --publish-rate 100 --symbols 20 "${FAN[@]}"
  for s in ours ours-sio node; do
    run_case fanout-10000x10 "$s" fanout --clients 10000 --publish-rate 10 --symbols 10 \
      "${WINDOW[@]}" --connect-rate 2000 --ramp-timeout 90
  done
  for s in ours ours-sio node; do
    run_case idle-10000 "$s" idle --clients 10000 --connect-rate 2000 --ramp-timeout 90 --settle 3
  done
  for s in ours ours-sio node; do
    run_case connect-5000 "$s" connect --clients 5000 --connect-rate 0 --max-inflight 256
  done
  for s in ours node; do
    run_case polling-100 "$s" fanout --transport polling --clients 100 --publish-rate 100 --symbols 20 "${FAN[@]}"
  done
  for s in ours ours-sio node; do
    run_case slow-1000 "$s" fanout --clients 1000 --slow-clients "$SLOW_CLIENTS" --publish-rate 100 --symbols 20 "${FAN[@]}"
  done
  run_storm storm-2000 2000
fi

took=$(($(date +%s) - started))
notes=(
  --note "$(nats-server --version 2>/dev/null | head -1), JetStream on, store in /tmp"
  --note "ours: release build, QUOTE_THROTTLE_MS=0, in-memory sessions, defaults otherwise (SOCKETIO_FAST_PATH=true, SOCKET_BUFFER 128, CLIENT_QUEUE_LIMIT 4096); ours-sio: the same with SOCKETIO_FAST_PATH=false"
  --note "warm-up ${WARMUP} s, window ${DURATION} s per run; whole benchmark took ${took} s"
  --note "git $GIT_REV"
)
if [ "$OURS_ONLY" = 0 ]; then
  notes+=(--note "node $(node --version), socket.io $(node -p "require('$NODE_PEER/node_modules/socket.io/package.json').version" 2>/dev/null || echo '?')")
fi
if [ -n "$REPORT" ]; then
  "$LOADGEN" report --results "$RESULTS" --out "$REPORT" "${notes[@]}"
  say "report: $REPORT"
else
  "$LOADGEN" report --results "$RESULTS" "${notes[@]}"
fi
say "done in ${took} s; results: $RESULTS"
exit "$FAILED"
