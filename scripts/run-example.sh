#!/usr/bin/env bash
# The README's "try it" command: install everything, then run muster on the example fleet.
#
#   scripts/run-example.sh
#
# Starts one fake Kubernetes API per "management cluster" (examples/fake_kube_api.py, each with
# its own kubeconfig), one kubernetes-mcp-server on each (127.0.0.1:18181-18183), and
# `muster serve --config-path examples/fleet` on http://127.0.0.1:8090/mcp; when muster is ready
# it prints the commands to paste into another terminal. Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/muster-target}"
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"   # as scripts/test.sh: no incremental cache
PEERS_DIR="${MUSTER_PEERS_DIR:-$HOME/.cache/muster-peers}"
MUSTER="$CARGO_TARGET_DIR/debug/muster"

scripts/install-peers.sh
# shellcheck disable=SC1091
source "$PEERS_DIR/env.sh"
cargo build --locked --bin muster

# Status is written back into the resource files; run on a copy so the repo stays clean.
WORK="$(mktemp -d)"
FLEET="$WORK/fleet"
mkdir "$FLEET"
cp -r examples/fleet/. "$FLEET/"

# Polls until 127.0.0.1:PORT accepts connections, or URL answers 2xx, while process PID lives;
# gives up after 30 s.
wait_port() { wait_for "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)" "$@"; }
wait_ok() { wait_for "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)" "$@"; }
wait_for() {
  for _ in $(seq 300); do
    kill -0 "$3" 2>/dev/null || return 1
    "$MUSTER_PYTHON" -c "$1" "$2" 2>/dev/null && return
    sleep 0.1
  done
  return 1
}

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

port=18181
for cluster in cluster-a cluster-b cluster-c; do
  "$MUSTER_PYTHON" examples/fake_kube_api.py "$cluster" "$WORK/$cluster.kubeconfig" &
  pids+=("$!")
  # The fake writes its kubeconfig once it listens.
  for _ in $(seq 100); do [[ -e "$WORK/$cluster.kubeconfig" ]] && break; sleep 0.1; done
  [[ -e "$WORK/$cluster.kubeconfig" ]] || { echo "the fake Kubernetes API of $cluster did not start" >&2; exit 1; }
  "$MUSTER_K8S_MCP" --port "$port" --bind-address 127.0.0.1 --read-only \
    --kubeconfig "$WORK/$cluster.kubeconfig" >/dev/null 2>&1 &
  pids+=("$!")
  wait_port "$port" "$!" || { echo "kubernetes-mcp-server did not listen on 127.0.0.1:$port" >&2; exit 1; }
  port=$((port + 1))
done

"$MUSTER" serve --config-path "$FLEET" &
pids+=("$!")
if ! wait_ok http://127.0.0.1:8090/readyz "${pids[-1]}"; then
  echo "muster did not become ready on http://127.0.0.1:8090 (is the port taken?)" >&2
  exit 1
fi

# Keep these commands identical to the README's "Try it" block (tests/integration/readme.rs
# checks that they are).
cat >&2 <<COMMANDS

muster is ready on http://127.0.0.1:8090/mcp (fleet config copied to $FLEET).
From another terminal, in this folder:

alias muster="$MUSTER"
muster list tools
muster call x_kubernetes_pods_list --management_cluster=cluster-b
muster call x_kubernetes_pods_list --management_cluster=cluster-a
muster call x_kubernetes_pods_list_in_namespace --management_cluster=cluster-c --namespace=kube-system

Or with a raw MCP client, the Python SDK's:

source "$PEERS_DIR/env.sh"
\$MUSTER_PYTHON tests/peers/py_client.py http://127.0.0.1:8090/mcp call x_kubernetes_pods_list '{"management_cluster": "cluster-b"}'

Ctrl-C here stops muster, the kubernetes-mcp-servers and the fake Kubernetes APIs.
COMMANDS
wait "${pids[-1]}"
