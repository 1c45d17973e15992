#!/usr/bin/env bash
# Soak: 16 agent sessions calling through muster for SOAK (default 5m); prints muster's RSS every
# 30 s and k6's error count at the end. Flat RSS and zero errors is the pass.
#
#   loadtests/soak.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/muster-target}"
SOAK="${SOAK:-5m}"; VUS="${VUS:-16}"
K6="${MUSTER_PEERS_DIR:-$HOME/.cache/muster-peers}/k6/bin/k6"
[[ -x "$K6" ]] || { echo "run loadtests/run.sh once first (it installs k6)" >&2; exit 1; }
cargo build --release --locked --bin muster --example echo_upstream
WORK="$(mktemp -d)"; pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM
ECHO_PORT=18250; MUSTER_PORT=18294
"$CARGO_TARGET_DIR/release/examples/echo_upstream" "$ECHO_PORT" >/dev/null 2>&1 & pids+=("$!")
mkdir -p "$WORK/mcpservers"
printf 'aggregator:\n  port: %s\n  toolExposure: direct\n' "$MUSTER_PORT" >"$WORK/config.yaml"
printf 'apiVersion: muster.giantswarm.io/v1alpha1\nkind: MCPServer\nmetadata: {name: echo}\nspec: {type: streamable-http, url: "http://127.0.0.1:%s/mcp", autoStart: true}\n' "$ECHO_PORT" >"$WORK/mcpservers/echo.yaml"
"$CARGO_TARGET_DIR/release/muster" serve --config-path "$WORK" >"$WORK/muster.log" 2>&1 & MUSTER_PID=$!; pids+=("$MUSTER_PID")
until curl -sf "http://127.0.0.1:$MUSTER_PORT/readyz" >/dev/null; do sleep 0.1; done
( while kill -0 "$MUSTER_PID" 2>/dev/null; do echo "t=$(date +%T) muster RSS $(awk '/VmRSS/ {print $2}' /proc/$MUSTER_PID/status) kB"; sleep 30; done ) & pids+=("$!")
"$K6" run --no-usage-report --quiet -e MCP_URL="http://127.0.0.1:$MUSTER_PORT/mcp" -e TOOL=x_echo_echo -e VUS="$VUS" -e DURATION="$SOAK" \
  --summary-trend-stats "avg,med,p(99),max" loadtests/k6/tool_call.js 2>&1 | grep -E "mcp_tools_call_ms|http_reqs|http_req_failed|checks_succeeded|mcp_call_errors" || true
echo "final muster RSS $(awk '/VmRSS/ {print $2}' /proc/$MUSTER_PID/status) kB"
