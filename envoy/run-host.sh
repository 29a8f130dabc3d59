#!/bin/sh
# `make run-host`: the echo upstream (unless UPSTREAM is given) and the test
# host (wasmtime) running the same filter with the same configuration as
# `make run`, in the foreground. Ctrl-C stops both.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
: "${HTTP_PORT:=8080}"
: "${ECHO_PORT:=8081}"
: "${WORKERS:=2}"
work=$(mktemp -d "${TMPDIR:-/tmp}/jwt-proxy-host.XXXXXX")
pids=""
cleanup() {
  trap - INT TERM EXIT
  [ -n "$pids" ] && kill $pids 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup INT TERM EXIT

if [ -z "${UPSTREAM:-}" ]; then
  UPSTREAM=127.0.0.1:$ECHO_PORT
  "$root/target/release/echo-upstream" --listen "$UPSTREAM" &
  pids="$pids $!"
fi
if [ -n "${PLUGIN_CONFIG:-}" ]; then
  printf '%s' "$PLUGIN_CONFIG" > "$work/config.json"
else
  cp "${PLUGIN_CONFIG_FILE:-$here/filter-config.json}" "$work/config.json"
fi
set -- --wasm "${WASM_PATH:-$root/target/wasm32-wasip1/release/jwt_filter.wasm}" \
  --config "$work/config.json" --listen "127.0.0.1:$HTTP_PORT" --upstream "$UPSTREAM" --workers "$WORKERS"
if [ -n "${JWT_SECRET:-}" ]; then set -- "$@" --env "JWT_SECRET=$JWT_SECRET"; fi
echo "jwt-proxy (test host): http://127.0.0.1:$HTTP_PORT -> $UPSTREAM" >&2
"$root/target/release/test-host" "$@" &
host_pid=$!
pids="$pids $host_pid"
status=0
wait "$host_pid" || status=$?
exit "$status"
