#!/usr/bin/env bash
# Two muster binaries side by side in one run: the same echo upstream, the same light client
# (examples/loadgen.rs, one thread, a keep-alive connection per session), stages taken in turn
# (A, B, A, B, …) so both see the same background load. For "did this change cost anything?".
#
#   loadtests/compare.sh BIN_A BIN_B            # e.g. a release build of main and of a branch
#   ROUNDS=3 SECONDS_PER_RUN=10 loadtests/compare.sh BIN_A BIN_B
#   EXTRA_B="$(printf '  storage: {type: valkey, valkey: {url: redis://127.0.0.1:6390}}\n  sessions: {keyFile: /tmp/keys}\n')" \
#     loadtests/compare.sh BIN BIN                  # one binary, two configs (EXTRA_A, EXTRA_B: aggregator keys)
#
# Stages: 1 session and 16 sessions in a closed loop, then 1,000 sessions that think 500 ms.
# Prints calls/s, p50/p90/p99 and each muster's CPU per call for each run, then the medians. Builds the release echo
# upstream and loadgen (not the binaries under test). Everything binds 127.0.0.1; everything
# started here is stopped on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/muster-target}"
BIN_A="${1:?usage: loadtests/compare.sh BIN_A BIN_B}"; BIN_B="${2:?usage: loadtests/compare.sh BIN_A BIN_B}"
ROUNDS="${ROUNDS:-3}"; SECONDS_PER_RUN="${SECONDS_PER_RUN:-10}"
cargo build --release --locked --example echo_upstream --example loadgen
LOADGEN="$CARGO_TARGET_DIR/release/examples/loadgen"

# shellcheck source=loadtests/lib.sh
source loadtests/lib.sh
start_echo 18300
declare -A PORT PID
start() { # label binary port
  local extra="EXTRA_$1"
  start_muster "$1" "$2" "$3" "${!extra:-}"
  PID[$1]=$(cat "$WORK/$1.pid"); PORT[$1]=$3
}
start A "$BIN_A" 18391
start B "$BIN_B" 18392

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$LOADGEN" --stages "1 16 1000/500" --rounds "$ROUNDS" --seconds "$SECONDS_PER_RUN" --pid "A=${PID[A]}" --pid "B=${PID[B]}" \
  "A=http://127.0.0.1:${PORT[A]}/mcp@x_echo_echo" "B=http://127.0.0.1:${PORT[B]}/mcp@x_echo_echo"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "A=$BIN_A B=$BIN_B; RSS A $(awk '/VmRSS/ {print $2, $3}' "/proc/${PID[A]}/status"), B $(awk '/VmRSS/ {print $2, $3}' "/proc/${PID[B]}/status")"
