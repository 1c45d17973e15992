#!/usr/bin/env bash
# CI's proof that the container image starts and serves (scripts/test.sh runs it before the tests).
#
#   scripts/test-image.sh                       # builds the image first (scripts/build-image.sh)
#   IMAGE=localhost/muster:0.1.0 scripts/test-image.sh   # tests an image already in buildah's store
#
# Runs the image with `buildah run --isolation chroot` (no daemon, no pulls; the container shares
# the host's network, so its loopback is the host's) and checks, failing on the first miss:
#   1. the image: user 65532:65532, entrypoint /usr/local/bin/muster, a CA bundle, no shell;
#   2. `muster --version` inside names the version and commit of the binary it was built from;
#   3. the process is not root: a root-only file is unreadable to it;
#   4. `muster check-config` passes on a copy of the example fleet (examples/fleet) mounted in;
#   5. `muster serve` inside, on that fleet (as scripts/run-example.sh: a fake Kubernetes API and a
#      kubernetes-mcp-server per cluster on the host), answers /health and /readyz, and one MCP
#      session (initialize + tools/list, the Python SDK's client) lists the fleet's tools; one
#      tools/call reaches cluster-b's upstream (named `localhost`, so names resolve in the image)
#      from inside the container; cluster-c is reached over https through a TLS proxy whose test
#      CA is added to the image's bundle (mounted over /etc/ssl/certs/ca-certificates.crt), and
#      refused when the image's bundle alone is there; SIGTERM stops muster with exit 0.
# Ports are free ones picked at start; the copy says `toolExposure: direct` so tools/list shows the
# fleet's tools themselves (the example's `meta` lists only the meta-tools).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PEERS_DIR="${MUSTER_PEERS_DIR:-$HOME/.cache/muster-peers}"
BUILDAH=(buildah --storage-driver "${STORAGE_DRIVER:-vfs}")
MUSTER=/usr/local/bin/muster

log() { printf '[test-image] %s\n' "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# Root: the mounted fleet is handed to user 65532, and `buildah mount` reads the image's files.
[[ "$(id -u)" == 0 ]] || die "run as root (CI does); rootless buildah is not set up by this script"
command -v buildah >/dev/null || die "buildah is not installed (scripts/install-peers.sh installs it)"
[[ -f "$PEERS_DIR/env.sh" ]] || die "$PEERS_DIR/env.sh is missing: run scripts/install-peers.sh"
# shellcheck disable=SC1091
source "$PEERS_DIR/env.sh"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/muster-target}"
HOST_BIN=""   # the binary the image was just built from, when this script built it
if [[ -z "${IMAGE:-}" ]]; then
  IMAGE="$(scripts/build-image.sh | tail -n1)"
  HOST_BIN="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/muster"
fi

WORK="$(mktemp -d)"
ctr=""
pids=()
# `buildah run` does not pass SIGTERM on to the container's process: signal the whole tree, the
# innermost first (buildah run -> buildah-chroot-exec -> muster).
kill_tree() {
  local child
  for child in $(pgrep -P "$1" || true); do kill_tree "$child"; done
  kill -TERM "$1" 2>/dev/null || true
}
cleanup() {
  for pid in "${pids[@]}"; do kill_tree "$pid"; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  [[ -z "$ctr" ]] || "${BUILDAH[@]}" rm "$ctr" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_image() { "${BUILDAH[@]}" run --isolation chroot "$@"; }

# ---- 1. the image config ----------------------------------------------------------------------
config="$("${BUILDAH[@]}" inspect --type image --format '{{.OCIv1.Config.User}} {{.OCIv1.Config.Entrypoint}}' "$IMAGE")" \
  || die "no image $IMAGE in buildah's store"
[[ "$config" == '65532:65532 [/usr/local/bin/muster]' ]] || die "image config: $config"
size="$("${BUILDAH[@]}" images --format '{{.Size}}' "$IMAGE" | head -n1)"
log "ok  image $IMAGE: user 65532:65532, entrypoint $MUSTER, $size"

ctr="$("${BUILDAH[@]}" from --pull=never --quiet "$IMAGE")"
# The files: a CA bundle with many certificates, user 65532 without a shell, and no shell at all.
rootfs="$("${BUILDAH[@]}" mount "$ctr")"
ca_certs="$(grep -c 'BEGIN CERTIFICATE' "$rootfs/etc/ssl/certs/ca-certificates.crt" || true)"
cp "$rootfs/etc/ssl/certs/ca-certificates.crt" "$WORK/image-ca.crt"
passwd="$(cat "$rootfs/etc/passwd")"
shells="$(find "$rootfs" -name sh -o -name bash | wc -l)"
"${BUILDAH[@]}" umount "$ctr" >/dev/null
[[ "${ca_certs:-0}" -ge 50 ]] || die "the image's /etc/ssl/certs/ca-certificates.crt holds ${ca_certs:-no} certificates"
[[ "$passwd" == "muster:x:65532:65532:muster:/nonexistent:/sbin/nologin" ]] || die "/etc/passwd: $passwd"
[[ "$shells" == 0 ]] || die "the image holds a shell"
log "ok  CA bundle ($ca_certs certificates), user muster 65532 with no login shell, no shell in the image"

# ---- 2. --version -------------------------------------------------------------------------------
version="$(in_image "$ctr" -- "$MUSTER" --version)"
[[ "$version" =~ ^muster\ [0-9]+\.[0-9]+\.[0-9]+\ \(commit\ [0-9a-z-]+\)$ ]] || die "--version: $version"
if [[ -n "$HOST_BIN" ]]; then
  [[ "$version" == "$("$HOST_BIN" --version)" ]] || die "--version inside ($version) differs from $HOST_BIN"
fi
log "ok  $version"

# ---- 3. not root --------------------------------------------------------------------------------
printf 'aggregator: {port: 1}\n' >"$WORK/root-only.yaml"
chmod 0600 "$WORK/root-only.yaml"
if out="$(in_image -v "$WORK/root-only.yaml:/probe/config.yaml:ro" "$ctr" -- "$MUSTER" check-config /probe/config.yaml 2>&1)"; then
  die "a root-only (0600) file was readable inside: the process runs as root? $out"
fi
[[ "$out" == *"ermission denied"* ]] || die "reading a root-only file: $out"
log "ok  runs as a non-root user (a 0600 root file: permission denied)"

# ---- the example fleet, on free ports -----------------------------------------------------------
free_port() { "$MUSTER_PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() {   # wait_for PYTHON-SNIPPET ARG PID: polls for 30 s while PID lives
  for _ in $(seq 300); do
    kill -0 "$3" 2>/dev/null || return 1
    "$MUSTER_PYTHON" -c "$1" "$2" 2>/dev/null && return
    sleep 0.1
  done
  return 1
}
wait_port() { wait_for "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)" "$@"; }
wait_ok() { wait_for "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)" "$@"; }

FLEET="$WORK/fleet"
mkdir "$FLEET"
cp -r examples/fleet/. "$FLEET/"
MUSTER_PORT="$(free_port)"
sed -i -e "s/^  port: 8090$/  port: $MUSTER_PORT/" -e 's/^  toolExposure: meta$/  toolExposure: direct/' "$FLEET/config.yaml"
grep -q "port: $MUSTER_PORT" "$FLEET/config.yaml" && grep -q 'toolExposure: direct' "$FLEET/config.yaml" \
  || die "examples/fleet/config.yaml no longer has the lines this script rewrites"
default_port=18181
for cluster in cluster-a cluster-b cluster-c; do
  port="$(free_port)"
  file="$FLEET/mcpservers/$cluster-mcp-kubernetes.yaml"
  grep -q "127.0.0.1:$default_port/mcp" "$file" || die "$file does not point at 127.0.0.1:$default_port"
  # cluster-b by name: the static glibc resolves `localhost` (/etc/hosts) inside the image.
  # cluster-c over https, through a TLS proxy whose certificate a test CA signed.
  url="http://127.0.0.1:$port/mcp"
  [[ "$cluster" != cluster-b ]] || url="http://localhost:$port/mcp"
  [[ "$cluster" != cluster-c ]] || { TLS_UPSTREAM="$port"; TLS_PORT="$(free_port)"; url="https://localhost:$TLS_PORT/mcp"; }
  sed -i "s#http://127.0.0.1:$default_port/mcp#$url#" "$file"
  "$MUSTER_PYTHON" examples/fake_kube_api.py "$cluster" "$WORK/$cluster.kubeconfig" &
  pids+=("$!")
  for _ in $(seq 100); do [[ -e "$WORK/$cluster.kubeconfig" ]] && break; sleep 0.1; done
  [[ -e "$WORK/$cluster.kubeconfig" ]] || die "the fake Kubernetes API of $cluster did not start"
  "$MUSTER_K8S_MCP" --port "$port" --bind-address 127.0.0.1 --read-only \
    --kubeconfig "$WORK/$cluster.kubeconfig" >"$WORK/$cluster-mcp.log" 2>&1 &
  pids+=("$!")
  wait_port "$port" "$!" || die "kubernetes-mcp-server did not listen on 127.0.0.1:$port"
  default_port=$((default_port + 1))
done
# The TLS proxy in front of cluster-c: a throwaway CA, a certificate for localhost, and the image's
# own CA bundle plus that CA, mounted over the bundle's path in the image.
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=muster-test-ca \
  -keyout "$WORK/ca.key" -out "$WORK/ca.crt" 2>/dev/null || die "openssl: no test CA"
openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout "$WORK/tls.key" -out "$WORK/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost\n' >"$WORK/tls.ext"
openssl x509 -req -days 1 -in "$WORK/tls.csr" -CA "$WORK/ca.crt" -CAkey "$WORK/ca.key" -CAcreateserial \
  -extfile "$WORK/tls.ext" -out "$WORK/tls.crt" 2>/dev/null || die "openssl: no test certificate"
cat "$WORK/image-ca.crt" "$WORK/ca.crt" >"$WORK/ca-bundle.crt"
chmod 0644 "$WORK/ca-bundle.crt"
cat >"$WORK/tls_proxy.py" <<'PY'
import asyncio, ssl, sys
listen, upstream, cert, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
tls.load_cert_chain(cert, key)
async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError):
        pass
    finally:
        writer.close()
async def handle(reader, writer):
    up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream)
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", listen, ssl=tls)
    async with server:
        await server.serve_forever()
asyncio.run(main())
PY
"$MUSTER_PYTHON" "$WORK/tls_proxy.py" "$TLS_PORT" "$TLS_UPSTREAM" "$WORK/tls.crt" "$WORK/tls.key" 2>"$WORK/tls.log" &
pids+=("$!")
wait_port "$TLS_PORT" "$!" || die "the TLS proxy did not listen on 127.0.0.1:$TLS_PORT"
CA_MOUNT=(-v "$WORK/ca-bundle.crt:/etc/ssl/certs/ca-certificates.crt:ro")
# muster writes status back into the resource files: the fleet belongs to the image's user.
chown -R 65532:65532 "$FLEET"
MOUNT=(-v "$FLEET:/etc/muster")

# ---- 4. check-config ----------------------------------------------------------------------------
out="$(in_image "${MOUNT[@]}" "$ctr" -- "$MUSTER" check-config /etc/muster 2>&1)" || die "check-config: $out"
oks="$(grep -c '^ok  ' <<<"$out" || true)"
[[ "$oks" -ge 3 ]] || die "check-config printed $oks ok lines: $out"
log "ok  check-config on the example fleet ($oks ok lines)"

# ---- 5. serve -----------------------------------------------------------------------------------
started="$(date +%s%N)"
in_image "${MOUNT[@]}" "${CA_MOUNT[@]}" "$ctr" -- "$MUSTER" serve --config-path /etc/muster >"$WORK/serve.log" 2>&1 &
serve_pid="$!"
pids+=("$serve_pid")
show_log() { log "muster's log:"; sed 's/^/  /' "$WORK/serve.log" >&2; }
wait_ok "http://127.0.0.1:$MUSTER_PORT/health" "$serve_pid" || { show_log; die "no /health on 127.0.0.1:$MUSTER_PORT"; }
health_ms=$((($(date +%s%N) - started) / 1000000))
wait_ok "http://127.0.0.1:$MUSTER_PORT/readyz" "$serve_pid" || { show_log; die "not ready on 127.0.0.1:$MUSTER_PORT"; }
ready_ms=$((($(date +%s%N) - started) / 1000000))
log "ok  serve inside the image: /health after ${health_ms} ms, /readyz after ${ready_ms} ms (buildah run included)"

URL="http://127.0.0.1:$MUSTER_PORT/mcp"
tools="$("$MUSTER_PYTHON" tests/peers/py_client.py "$URL" list)" || { show_log; die "tools/list: $tools"; }
for tool in x_kubernetes_pods_list x_kubernetes_pods_list_in_namespace; do
  "$MUSTER_PYTHON" -c 'import json, sys; sys.exit(sys.argv[2] not in json.loads(sys.argv[1]))' "$tools" "$tool" \
    || die "tools/list has no $tool: $tools"
done
log "ok  tools/list: $("$MUSTER_PYTHON" -c 'import json, sys; print(len(json.loads(sys.argv[1])))' "$tools") tools, the fleet's x_kubernetes_* among them"
called="$("$MUSTER_PYTHON" tests/peers/py_client.py "$URL" call x_kubernetes_pods_list '{"management_cluster": "cluster-b"}')" \
  || { show_log; die "tools/call: $called"; }
[[ "$called" == *'"isError": false'* && "$called" == *"-cluster-b-"* ]] || die "tools/call did not list cluster-b's pods: $called"
log "ok  tools/call x_kubernetes_pods_list reached cluster-b's upstream (by name) from inside the container"

called="$("$MUSTER_PYTHON" tests/peers/py_client.py "$URL" call x_kubernetes_pods_list '{"management_cluster": "cluster-c"}')" \
  || { show_log; die "tools/call: $called"; }
[[ "$called" == *'"isError": false'* && "$called" == *"-cluster-c-"* ]] \
  || { show_log; die "tools/call over https did not list cluster-c's pods: $called"; }
log "ok  tools/call reached cluster-c over https, trusted through /etc/ssl/certs/ca-certificates.crt"

stop_serve() {   # SIGTERM to muster itself (buildah run -> buildah-chroot-exec -> muster)
  local innermost="$1" child
  while child="$(pgrep -P "$innermost" | head -n1)" && [[ -n "$child" ]]; do innermost="$child"; done
  kill -TERM "$innermost"
  wait "$1"
}
stop_serve "$serve_pid" || { show_log; die "muster did not stop cleanly on SIGTERM"; }
log "ok  SIGTERM stops muster inside the container (exit 0)"

# ---- 6. the image's own bundle does not trust the test CA: https verification is on ----------
in_image "${MOUNT[@]}" "$ctr" -- "$MUSTER" serve --config-path /etc/muster >"$WORK/serve.log" 2>&1 &
serve_pid="$!"
pids+=("$serve_pid")
wait_ok "http://127.0.0.1:$MUSTER_PORT/readyz" "$serve_pid" || { show_log; die "not ready on the second start"; }
called="$("$MUSTER_PYTHON" tests/peers/py_client.py "$URL" call x_kubernetes_pods_list '{"management_cluster": "cluster-c"}' || true)"
[[ "$called" == *'"isError": true'* && "$called" != *"-cluster-c-"* ]] \
  || die "cluster-c answered over https without its CA in the bundle: $called"
grep -q 'UnknownIssuer' "$WORK/serve.log" || { show_log; die "cluster-c failed, but not on its certificate: $called"; }
stop_serve "$serve_pid" || { show_log; die "muster did not stop cleanly on SIGTERM"; }
log "ok  without the test CA in the bundle, cluster-c's certificate is refused (UnknownIssuer)"
log "passed: $IMAGE starts and serves"
