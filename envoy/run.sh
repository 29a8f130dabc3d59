#!/bin/sh
# `make run`: the echo upstream (unless UPSTREAM is given) and Envoy with the
# filter, in the foreground. Ctrl-C stops both. This shell stays alive as
# their parent (an Envoy whose launching shell exits can be sent SIGTERM).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
: "${HTTP_PORT:=8080}"
: "${ECHO_PORT:=8081}"
# Admin (127.0.0.1 only): ADMIN_PORT, else 9901 when free, else any free port.
if [ -z "${ADMIN_PORT:-}" ]; then
  ADMIN_PORT=9901
  if ! python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 9901))' 2>/dev/null; then
    ADMIN_PORT=0
  fi
fi
envoy=$("$here/find-envoy.sh")
work=$(mktemp -d "${TMPDIR:-/tmp}/jwt-proxy.XXXXXX")
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
export HTTP_PORT ADMIN_PORT UPSTREAM
"$here/render.sh" > "$work/envoy.yaml"
"$envoy" -c "$work/envoy.yaml" --use-dynamic-base-id --log-level "${LOG_LEVEL:-info}" \
  --admin-address-path "$work/admin" &
envoy_pid=$!
pids="$pids $envoy_pid"
( i=0
  while [ ! -s "$work/admin" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
  echo "jwt-proxy: http://127.0.0.1:$HTTP_PORT -> $UPSTREAM (admin $(cat "$work/admin" 2>/dev/null || echo '?'); /status answered locally)" >&2
) &
# Exit when Envoy exits (with its status), or on Ctrl-C via the trap.
status=0
wait "$envoy_pid" || status=$?
exit "$status"
