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

# shellcheck source=loadtests/lib.sh
source loadtests/lib.sh
start_echo 18400
VALKEY_PORT=18401
redis-server --port "$VALKEY_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$WORK/valkey.log" 2>&1 & pids+=("$!")
head -c 32 /dev/urandom | base64 >"$WORK/session-keys"
SHARED="$(printf '  storage: {type: valkey, valkey: {url: "redis://127.0.0.1:%s"}}\n  sessions: {keyFile: %s}' "$VALKEY_PORT" "$WORK/session-keys")"
start_muster memory "$BIN" 18410 ""
MEMORY_PIDS="$(cat "$WORK/memory.pid")"; MEMORY_URL="http://127.0.0.1:18410/mcp"
REPLICA_PIDS=""; REPLICA_URLS=""
for r in $(seq "$REPLICAS"); do
  start_muster "replica$r" "$BIN" $((18420 + r)) "$SHARED"
  REPLICA_PIDS="$REPLICA_PIDS $(cat "$WORK/replica$r.pid")"
  REPLICA_URLS="${REPLICA_URLS:+$REPLICA_URLS,}http://127.0.0.1:$((18420 + r))/mcp"
done

store_commands() { redis-cli -p "$VALKEY_PORT" info stats | tr -d '\r' | awk -F: '/^total_commands_processed/ {print $2}'; }
ticks() { local sum=0; for pid in $1; do sum=$((sum + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done; echo "$sum"; }
measure() { # label pids urls sessions think_ms
  local before out calls commands
  before=$(ticks "$2"); commands=$(store_commands)
  out=$("$LOADGEN" --rounds 1 --warmup 0 --seconds "$SECONDS_PER_RUN" --stages "$4/$5" "case=$3@x_echo_echo" | head -1)
  calls=$(grep -oE ' calls=[0-9]+' <<<"$out" | cut -d= -f2)
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
