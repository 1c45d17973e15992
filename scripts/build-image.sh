#!/usr/bin/env bash
# Builds muster's container image (Containerfile, FROM scratch) in one command.
#
#   scripts/build-image.sh                      # -> localhost/muster:<version>, printed last on stdout
#   IMAGE=registry.example/muster:0.1.0 scripts/build-image.sh
#   BUILDER=podman scripts/build-image.sh       # or BUILDER=docker; the default is buildah
#   CONTEXT_ONLY=1 scripts/build-image.sh       # only stage the build context; prints its folder
#
# Runs scripts/build-release.sh (the static binary), stages a build context with that binary, the
# host's CA bundle (CA_BUNDLE, default /etc/ssl/certs/ca-certificates.crt) and passwd/group files
# for user 65532, then builds. Nothing is pulled: the image starts FROM scratch. buildah uses the
# vfs storage driver (STORAGE_DRIVER overrides it), which works without kernel overlay support.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/muster-target}"
BUILDER="${BUILDER:-buildah}"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)"
IMAGE="${IMAGE:-localhost/muster:$VERSION}"
CONTEXT="$CARGO_TARGET_DIR/image-context"

log() { printf '[build-image] %s\n' "$*" >&2; }

if [[ "${CONTEXT_ONLY:-0}" != "1" ]] && ! command -v "$BUILDER" >/dev/null; then
  log "$BUILDER is not installed (buildah: apt-get install buildah, or scripts/install-peers.sh)"
  exit 1
fi
# Checked before the long build: an image without roots cannot reach any https upstream.
if ! grep -q 'BEGIN CERTIFICATE' "$CA_BUNDLE" 2>/dev/null; then
  log "no CA bundle at $CA_BUNDLE (Debian: apt-get install ca-certificates; or set CA_BUNDLE)"
  exit 1
fi

BIN="$(scripts/build-release.sh | tail -n1)"
version_line="$("$BIN" --version)"                       # muster 0.1.0 (commit abcdef123456)
REVISION="$(sed -n 's/.*(commit \(.*\))$/\1/p' <<<"$version_line")"

rm -rf "$CONTEXT"
mkdir -p "$CONTEXT"
cp "$BIN" "$CONTEXT/muster"
cp -L "$CA_BUNDLE" "$CONTEXT/ca-certificates.crt"
printf 'muster:x:65532:65532:muster:/nonexistent:/sbin/nologin\n' >"$CONTEXT/passwd"
printf 'muster:x:65532:\n' >"$CONTEXT/group"
chmod 0755 "$CONTEXT/muster"
chmod 0644 "$CONTEXT/ca-certificates.crt" "$CONTEXT/passwd" "$CONTEXT/group"
if [[ "${CONTEXT_ONLY:-0}" == "1" ]]; then
  log "build context staged; build it with e.g. docker build -f Containerfile -t $IMAGE $CONTEXT"
  echo "$CONTEXT"
  exit 0
fi

args=(-f Containerfile -t "$IMAGE" --build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION")
log "$BUILDER: $IMAGE from $CONTEXT ($version_line)"
case "$BUILDER" in
  buildah)
    BUILDAH=(buildah --storage-driver "${STORAGE_DRIVER:-vfs}")
    previous="$("${BUILDAH[@]}" images --noheading --quiet "$IMAGE" 2>/dev/null | head -n1 || true)"
    "${BUILDAH[@]}" bud --pull=never --quiet "${args[@]}" "$CONTEXT" >&2
    # vfs keeps whole copies: drop the image this tag named before (kept if a container uses it).
    current="$("${BUILDAH[@]}" images --noheading --quiet "$IMAGE" | head -n1)"
    if [[ -n "$previous" && "$previous" != "$current" ]]; then
      "${BUILDAH[@]}" rmi "$previous" >/dev/null 2>&1 || true
    fi
    ;;
  podman) podman build --pull=never "${args[@]}" "$CONTEXT" >&2 ;;
  *) "$BUILDER" build "${args[@]}" "$CONTEXT" >&2 ;;
esac
log "built $IMAGE"
echo "$IMAGE"
