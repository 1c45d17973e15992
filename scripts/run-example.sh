#!/usr/bin/env bash
# The README's "try it" command: install everything, then run muster on the example fleet.
#
#   scripts/run-example.sh
#
# Starts three kubernetes-mcp-server instances (one per "management cluster", on a fake
# kubeconfig, 127.0.0.1:18181-18183) and `muster serve --config-path examples/fleet` on
# http://127.0.0.1:8090/mcp. Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/muster-target}"

scripts/install-peers.sh
# shellcheck disable=SC1091
source "${MUSTER_PEERS_DIR:-$HOME/.cache/muster-peers}/env.sh"
cargo build --locked

# Status is written back into the resource files; run on a copy so the repo stays clean.
FLEET="$(mktemp -d)"
cp -r examples/fleet/. "$FLEET/"

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$FLEET"; }
trap cleanup EXIT INT TERM
for port in 18181 18182 18183; do
  "$MUSTER_K8S_MCP" --port "$port" --bind-address 127.0.0.1 --read-only --kubeconfig "$PWD/tests/peers/fake-kubeconfig.yaml" >/dev/null 2>&1 &
  pids+=("$!")
done

echo "muster: MCP endpoint http://127.0.0.1:8090/mcp (fleet config copied to $FLEET)" >&2
"$CARGO_TARGET_DIR/debug/muster" serve --config-path "$FLEET" &
pids+=("$!")
wait "${pids[-1]}"
