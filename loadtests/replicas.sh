#!/usr/bin/env bash
# Several replicas sharing Valkey against one muster in memory, in one run: the same echo upstream,
# the same light client (examples/loadgen.rs), stages taken in turn. The replicas get the calls
# round-robin (every call of a session to the next replica: no sticky routing), as a Service would.
#
#   loadtests/replicas.sh BIN                 # a release build of muster
#   REPLICAS=3 ROUNDS=2 SECONDS_PER_RUN=10 loadtests/replicas.sh BIN
#
# Needs redis-server (scripts/install-peers.sh installs it). Prints calls/s, latency and the CPU per
# call summed over every muster process of the case. Everything binds 127.0.0.1; everything started
# here is stopped on exit. `store-commands` is how many commands Valkey served during the stage
# (the sessions are opened before it, so a healthy path should add none).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/muster-target}"
BIN="${1:?usage: loadtests/replicas.sh BIN}"
REPLICAS="${REPLICAS:-3}"; ROUNDS="${ROUNDS:-2}"; SECONDS_PER_RUN="${SECONDS_PER_RUN:-10}"
cargo build --release --locked --example echo_upstream --example loadgen
LOADGEN="$CARGO_TARGET_DIR/release/examples/loadgen"

WORK="$(mktemp -d)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM

ECHO_PORT=18400; VALKEY_PORT=18401
"$CARGO_TARGET_DIR/release/examples/echo_upstream" "$ECHO_PORT" >/dev/null 2>&1 & pids+=("$!")
redis-server --port "$VALKEY_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$WORK/valkey.log" 2>&1 & pids+=("$!")
head -c 32 /dev/urandom | base64 >"$WORK/session-keys"

start() { # name port extra-config -> pid
  mkdir -p "$WORK/$1/mcpservers"
  printf 'aggregator:\n  port: %s\n  toolExposure: direct\n%s\n' "$2" "$3" >"$WORK/$1/config.yaml"
  cat >"$WORK/$1/mcpservers/echo.yaml" <<YAML
apiVersion: muster.giantswarm.io/v1alpha1
kind: MCPServer
metadata: {name: echo}
spec: {type: streamable-http, url: "http://127.0.0.1:$ECHO_PORT/mcp", autoStart: true}
YAML
  "$BIN" serve --config-path "$WORK/$1" >"$WORK/$1.log" 2>&1 & pids+=("$!"); echo "$!" >"$WORK/$1.pid"
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$2/readyz" >/dev/null && return; sleep 0.1; done
  echo "$1 did not become ready" >&2; exit 1
}
SHARED="$(printf '  storage: {type: valkey, valkey: {url: "redis://127.0.0.1:%s"}}\n  sessions: {keyFile: %s}' "$VALKEY_PORT" "$WORK/session-keys")"
start memory 18410 ""
MEMORY_PIDS="$(cat "$WORK/memory.pid")"; MEMORY_URL="http://127.0.0.1:18410/mcp"
REPLICA_PIDS=""; REPLICA_URLS=""
for r in $(seq "$REPLICAS"); do
  start "replica$r" $((18420 + r)) "$SHARED"
  REPLICA_PIDS="$REPLICA_PIDS $(cat "$WORK/replica$r.pid")"
  REPLICA_URLS="${REPLICA_URLS:+$REPLICA_URLS,}http://127.0.0.1:$((18420 + r))/mcp"
done

store_commands() { redis-cli -p "$VALKEY_PORT" info stats | tr -d '\r' | awk -F: '/^total_commands_processed/ {print $2}'; }
ticks() { local sum=0; for pid in $1; do sum=$((sum + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done; echo "$sum"; }
measure() { # label pids urls sessions think_ms
  local before out calls commands
  before=$(ticks "$2"); commands=$(store_commands)
  out=$("$LOADGEN" "$3" x_echo_echo "$4" "$5" "$SECONDS_PER_RUN")
  calls=$(sed -E 's/^calls=([0-9]+).*/\1/' <<<"$out")
  echo "$1 sessions=$4 think=${5}ms $out cpu/call=$(( ($(ticks "$2") - before) * 1000000 / $(getconf CLK_TCK) / (calls > 0 ? calls : 1) ))µs store-commands=$(( $(store_commands) - commands - 1 ))"
}
for round in $(seq "$ROUNDS"); do
  echo "== round $round"
  for stage in "1 0" "16 0"; do
    # shellcheck disable=SC2086
    measure "memory x1" "$MEMORY_PIDS" "$MEMORY_URL" $stage
    # shellcheck disable=SC2086
    measure "valkey x$REPLICAS" "$REPLICA_PIDS" "$REPLICA_URLS" $stage
  done
done
