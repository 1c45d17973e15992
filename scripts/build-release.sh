#!/usr/bin/env bash
# The release build that ships: one static, stripped `muster` for x86_64 Linux, for the container
# image (scripts/build-image.sh) and for copying onto any Linux x86_64 host as it is.
#
#   scripts/build-release.sh        # prints the binary's path as its last line on stdout
#
# Static (`+crt-static`, glibc, a static-pie) so it runs in a `FROM scratch` image with no libc.
# `muster --version` names the git commit of this checkout (`-dirty` when tracked files differ
# from it; `unknown` outside a git checkout, e.g. from a source tarball). The build goes to
# $CARGO_TARGET_DIR (default ~/.cache/muster-target) under x86_64-unknown-linux-gnu/release.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/muster-target}"
export CARGO_INCREMENTAL=0
TARGET=x86_64-unknown-linux-gnu

log() { printf '[build-release] %s\n' "$*" >&2; }

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *) log "only linux x86_64 is supported (target $TARGET)"; exit 1 ;;
esac

# The commit of this checkout only: a tarball unpacked inside some other git repository must not
# take that repository's commit.
commit=unknown
if command -v git >/dev/null && top="$(git rev-parse --show-toplevel 2>/dev/null)" \
   && [[ "$(cd "$top" && pwd -P)" == "$(pwd -P)" ]]; then
  commit="$(git rev-parse --short=12 HEAD)"
  [[ -z "$(git status --porcelain --untracked-files=no)" ]] || commit="$commit-dirty"
fi
export MUSTER_GIT_COMMIT="$commit"

# RUSTFLAGS reach only the target's crates because --target is given: build scripts and proc
# macros stay dynamic, as they must. Both settings are fixed so repeated builds reuse the cache.
log "cargo build --release --target $TARGET (static, stripped; commit $commit)"
RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_STRIP=symbols \
  cargo build --release --locked --target "$TARGET" --bin muster

BIN="$CARGO_TARGET_DIR/$TARGET/release/muster"
# No program interpreter = no dynamic loader needed at run time.
if LC_ALL=C readelf -l "$BIN" 2>/dev/null | grep -q 'INTERP'; then
  log "$BIN is dynamically linked; the image needs a static binary"; exit 1
fi
version="$("$BIN" --version)"
[[ "$version" == *"(commit $commit)" ]] || { log "unexpected version line: $version"; exit 1; }
log "$version, $(du -h "$BIN" | cut -f1)"
echo "$BIN"
