#!/bin/sh
# Renders an Envoy config template (default: envoy/envoy.yaml beside this
# script) to stdout, filling each ${NAME} from the environment, with the
# defaults below. POSIX sh + awk only, so it also runs in the envoyproxy/envoy
# image. Usage: [VAR=value ...] render.sh [template] > envoy.rendered.yaml
set -eu
here=$(cd "$(dirname "$0")" && pwd)
template=${1:-$here/envoy.yaml}

: "${HTTP_PORT:=8080}"
: "${ADMIN_PORT:=9901}"
: "${LISTEN_ADDRESS:=127.0.0.1}"
: "${UPSTREAM:=127.0.0.1:8081}"
: "${UPSTREAM_TIMEOUT:=15s}"
# Gateway limits (SPEC section 7); the tests shorten the timers.
: "${REQUEST_HEADERS_TIMEOUT:=10s}"
: "${IDLE_TIMEOUT:=60s}"
: "${MAX_CONNECTIONS:=10000}"
: "${WASM_PATH:=$here/../target/wasm32-wasip1/release/jwt_filter.wasm}"
# The filter's configuration (JSON): $PLUGIN_CONFIG, else the file
# $PLUGIN_CONFIG_FILE (default filter-config.json beside this script, which
# holds the task's key; JWT_SECRET in the environment wins over it).
if [ -z "${PLUGIN_CONFIG:-}" ]; then
  PLUGIN_CONFIG=$(cat "${PLUGIN_CONFIG_FILE:-$here/filter-config.json}")
fi

case "$UPSTREAM" in
  *:*) UPSTREAM_HOST=${UPSTREAM%:*}; UPSTREAM_PORT=${UPSTREAM##*:} ;;
  *) echo "render.sh: UPSTREAM must be host:port, got '$UPSTREAM'" >&2; exit 2 ;;
esac
for n in "$HTTP_PORT" "$ADMIN_PORT" "$UPSTREAM_PORT"; do
  case "$n" in
    ''|*[!0-9]*) echo "render.sh: '$n' is not a port number (HTTP_PORT, ADMIN_PORT, UPSTREAM)" >&2; exit 2 ;;
  esac
done
# PLUGIN_CONFIG goes inside a single-quoted YAML scalar: double its quotes.
PLUGIN_CONFIG=$(printf '%s' "$PLUGIN_CONFIG" | sed "s/'/''/g")
export HTTP_PORT ADMIN_PORT LISTEN_ADDRESS UPSTREAM_HOST UPSTREAM_PORT UPSTREAM_TIMEOUT WASM_PATH PLUGIN_CONFIG \
  REQUEST_HEADERS_TIMEOUT IDLE_TIMEOUT MAX_CONNECTIONS

awk '
/^[ \t]*#/ { print; next }
{
  out = ""; line = $0
  while ((i = index(line, "${")) > 0) {
    rest = substr(line, i + 2); j = index(rest, "}")
    if (j == 0) break
    name = substr(rest, 1, j - 1)
    if (!(name in ENVIRON)) { printf "render.sh: %s is not set\n", name > "/dev/stderr"; bad = 1 }
    out = out substr(line, 1, i - 1) ENVIRON[name]; line = substr(rest, j + 1)
  }
  print out line
}
END { exit bad }' "$template"
