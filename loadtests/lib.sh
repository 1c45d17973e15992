# Shared by the load scripts that start their own muster processes (sourced, not run):
# a work folder and the processes started, both cleaned up on exit; the release echo upstream;
# and `start_muster`, one muster in front of it.
#
#   source loadtests/lib.sh; start_echo PORT; start_muster NAME BIN PORT [EXTRA_AGGREGATOR_YAML]
#
# `start_echo` leaves the process id in $ECHO_PID; `start_muster` leaves it in $WORK/NAME.pid and
# returns once /readyz answers.

WORK="$(mktemp -d)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM

start_echo() { # port
  ECHO_PORT="$1"
  "$CARGO_TARGET_DIR/release/examples/echo_upstream" "$ECHO_PORT" >/dev/null 2>&1 & pids+=("$!"); ECHO_PID=$!
}

start_muster() { # name binary port [extra aggregator keys]
  mkdir -p "$WORK/$1/mcpservers"
  printf 'aggregator:\n  port: %s\n  toolExposure: direct\n%s\n' "$3" "${4:-}" >"$WORK/$1/config.yaml"
  cat >"$WORK/$1/mcpservers/echo.yaml" <<YAML
apiVersion: muster.giantswarm.io/v1alpha1
kind: MCPServer
metadata: {name: echo}
spec: {type: streamable-http, url: "http://127.0.0.1:$ECHO_PORT/mcp", autoStart: true}
YAML
  "$2" serve --config-path "$WORK/$1" >"$WORK/$1.log" 2>&1 & pids+=("$!"); echo "$!" >"$WORK/$1.pid"
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$3/readyz" >/dev/null && return; sleep 0.1; done
  echo "$1 did not become ready" >&2; exit 1
}
