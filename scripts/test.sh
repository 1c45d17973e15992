#!/usr/bin/env bash
# The README's test command: install what the tests need, then run every test.
#
#   scripts/test.sh
#
# Installs the pinned third-party peers (Node 22, the MCP conformance suite, kubernetes-mcp-server,
# Python `mcp`, buildah, kubectl; Debian's chromium) into ~/.cache/muster-peers, then checks
# formatting and lints, builds the static release binary and the container image once and proves
# the image starts and serves (scripts/test-image.sh), and runs the whole suite with cargo-nextest
# (unit tests, the integration binary with real peers, the conformance suite). The builds go to
# $CARGO_TARGET_DIR (default ~/.cache/muster-target), outside the clone.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/muster-target}"
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# Every peer must be there: a test whose peer is missing fails instead of skipping.
export MUSTER_REQUIRE_PEERS="${MUSTER_REQUIRE_PEERS:-1}"

scripts/install-peers.sh

command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
scripts/test-image.sh
cargo nextest run --locked --no-fail-fast
