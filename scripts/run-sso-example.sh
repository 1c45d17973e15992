#!/usr/bin/env bash
# The README's "try one login" command: the seed's multi-cluster SSO on 127.0.0.1.
#
#   scripts/run-sso-example.sh
#
# Starts a central identity provider (oidc-provider, `tests/peers/idp.mjs central`), and for each of
# three "management clusters" a Dex-compatible token-exchange IdP that trusts the central one
# (`idp.mjs cluster`) plus a kubernetes-mcp-server that accepts only tokens issued by its own
# cluster's IdP for its own client (`require_oauth`, on a fake kubeconfig). Then runs
# `muster serve` on a filled-in copy of examples/sso-fleet/ (tokenExchange per cluster, the
# client credentials as Secret files) and prints the commands to sign in and call a tool.
# Ctrl-C stops everything it started.
#
# Ports: muster on $MUSTER_SSO_PORT (default 8091); the peers on seven consecutive ports from
# $MUSTER_SSO_PEER_PORT (default 18290): central IdP, then IdP and kubernetes-mcp-server per cluster.
# $MUSTER_BIN: use this muster binary instead of building one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$PWD"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/muster-target}"
PORT="${MUSTER_SSO_PORT:-8091}"
PEER_PORT="${MUSTER_SSO_PEER_PORT:-18290}"
CLUSTERS=(a b c)

scripts/install-peers.sh
# shellcheck disable=SC1091
source "${MUSTER_PEERS_DIR:-$HOME/.cache/muster-peers}/env.sh"
if [[ -z "${MUSTER_BIN:-}" ]]; then
  cargo build --locked
  MUSTER_BIN="$CARGO_TARGET_DIR/debug/muster"
fi
NODE="$MUSTER_NODE22/node"

# Status is written back into the resource files; run on a copy so the repo stays clean.
FLEET="$(mktemp -d)"
pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$FLEET"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Waits until a peer's log file has its `ready <issuer>` line, or the peer has died.
wait_ready() {
  local pid="$1" out="$2"
  for _ in $(seq 300); do
    if grep -q '^ready ' "$out" 2>/dev/null; then sed -n 's/^ready //p' "$out"; return; fi
    kill -0 "$pid" 2>/dev/null || { echo "run-sso-example: a peer exited; see ${out%.out}.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "run-sso-example: no ready line in $out" >&2
  exit 1
}

# Waits until something listens on 127.0.0.1:$2 (process $1 still alive).
wait_port() {
  for _ in $(seq 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return; fi
    kill -0 "$1" 2>/dev/null || { echo "run-sso-example: $3 exited; see its log in $FLEET" >&2; exit 1; }
    sleep 0.1
  done
  echo "run-sso-example: nothing listens on port $2 ($3)" >&2
  exit 1
}

export MUSTER_NODE_MODULES
"$NODE" tests/peers/idp.mjs central "$PEER_PORT" >"$FLEET/central.out" 2>"$FLEET/central.log" &
pids+=("$!")
CENTRAL="$(wait_ready "$!" "$FLEET/central.out")"

cp -r examples/sso-fleet/. "$FLEET/"
sed -i -e "s|@PORT@|$PORT|g" -e "s|@CENTRAL_ISSUER@|$CENTRAL|g" "$FLEET/config.yaml"
summary=()
for i in "${!CLUSTERS[@]}"; do
  c="${CLUSTERS[$i]}"
  idp_port=$((PEER_PORT + 1 + 2 * i))
  mcp_port=$((PEER_PORT + 2 + 2 * i))
  client="muster-cluster-$c"
  secret="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  "$NODE" tests/peers/idp.mjs cluster "$idp_port" --trust "$CENTRAL" --connector central-dex \
    --client "$client:$secret" >"$FLEET/cluster-$c-idp.out" 2>"$FLEET/cluster-$c-idp.log" &
  pids+=("$!")
  issuer="$(wait_ready "$!" "$FLEET/cluster-$c-idp.out")"
  # The exchanged token's `aud` is the requesting client id: only cluster $c's token fits here.
  sed -e "s|@ISSUER@|$issuer|" -e "s|@AUDIENCE@|$client|" tests/peers/k8s-mcp-oauth.toml.tmpl \
    >"$FLEET/cluster-$c-k8s.toml"
  "$MUSTER_K8S_MCP" --config "$FLEET/cluster-$c-k8s.toml" --port "$mcp_port" --bind-address 127.0.0.1 \
    --read-only --kubeconfig "$REPO/tests/peers/fake-kubeconfig.yaml" >"$FLEET/cluster-$c-k8s.log" 2>&1 &
  pids+=("$!")
  wait_port "$!" "$mcp_port" "kubernetes-mcp-server of cluster $c"
  sed -i -e "s|@MCP_URL@|http://127.0.0.1:$mcp_port/mcp|" -e "s|@DEX_ISSUER@|$issuer|" \
    "$FLEET/mcpservers/cluster-$c-mcp-kubernetes.yaml"
  sed -i -e "s|@CLIENT_SECRET@|$secret|" "$FLEET/secrets/cluster-$c-token-exchange-credentials.yaml"
  summary+=("  cluster-$c-mcp-kubernetes  IdP $issuer, kubernetes-mcp-server http://127.0.0.1:$mcp_port/mcp")
done

"$MUSTER_BIN" serve --config-path "$FLEET" 2>"$FLEET/muster.log" &
pids+=("$!")
MUSTER_PID="$!"
wait_port "$MUSTER_PID" "$PORT" muster

ENDPOINT="http://127.0.0.1:$PORT/mcp"
LOGIN="$NODE $REPO/tests/peers/idp_login.mjs $CENTRAL alice --follow-url"
cat <<EOF
muster: MCP endpoint $ENDPOINT, sign-in at the central IdP $CENTRAL
$(printf '%s\n' "${summary[@]}")
Config, Secrets and logs: $FLEET

In another terminal:
  export MUSTER_ENDPOINT=$ENDPOINT PATH="$(dirname "$MUSTER_BIN"):\$PATH"
  muster auth login    # the browser opens the central IdP: any user name and password, "Sign-in", then "Continue"
  muster auth status   # each cluster: Connected [SSO: Exchanged]
  muster call x_kubernetes_configuration_view --management_cluster=cluster-b-mcp-kubernetes --minified=false
Without a browser, sign in as alice with:
  muster auth login --no-browser 2>&1 | while IFS= read -r l; do echo "\$l"; case "\$l" in *"visit: "*) $LOGIN "\${l#*visit: }" >/dev/null;; esac; done
Ctrl-C stops everything.
EOF
wait "$MUSTER_PID"
