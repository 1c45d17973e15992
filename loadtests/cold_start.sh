#!/usr/bin/env bash
# Cold start with N backends (default 30): time from `muster serve` to /readyz 200 (every backend
# connected and listed, catalog built). The backends are N MCPServers on one echo upstream that
# answers after DELAY_MS (default 300) per request, so "the slowest upstream's own latency" is
# known: initialize, notifications/initialized and tools/list, each DELAY_MS, in sequence; a parallel
# fan-out over N backends should be ready just after one backend alone (run with N=1 to compare).
#
#   loadtests/cold_start.sh [N]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/muster-target}"
N="${1:-30}"; DELAY_MS="${DELAY_MS:-300}"
cargo build --release --locked --bin muster --example echo_upstream
WORK="$(mktemp -d)"; pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM
ECHO_PORT=18230; MUSTER_PORT=18293
ECHO_DELAY_MS="$DELAY_MS" "$CARGO_TARGET_DIR/release/examples/echo_upstream" "$ECHO_PORT" >/dev/null 2>&1 & pids+=("$!")
sleep 0.5
mkdir -p "$WORK/mcpservers"
printf 'aggregator:\n  port: %s\n  toolExposure: direct\n' "$MUSTER_PORT" >"$WORK/config.yaml"
for i in $(seq "$N"); do
  printf 'apiVersion: muster.giantswarm.io/v1alpha1\nkind: MCPServer\nmetadata: {name: echo-%s}\nspec: {type: streamable-http, url: "http://127.0.0.1:%s/mcp", autoStart: true}\n' "$i" "$ECHO_PORT" >"$WORK/mcpservers/echo-$i.yaml"
done
start=$(date +%s%N)
RUST_LOG=warn "$CARGO_TARGET_DIR/release/muster" serve --config-path "$WORK" >"$WORK/muster.log" 2>&1 & pids+=("$!")
until curl -sf "http://127.0.0.1:$MUSTER_PORT/readyz" >/dev/null; do sleep 0.01; done
end=$(date +%s%N)
tools=$(curl -s "http://127.0.0.1:$MUSTER_PORT/readyz")
echo "backends=$N upstream_delay_ms=$DELAY_MS ready_after_ms=$(((end - start) / 1000000)) $tools"
