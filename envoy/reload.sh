#!/bin/sh
# `make reload`: applies the filter configuration (PLUGIN_CONFIG, or the file
# PLUGIN_CONFIG_FILE, default envoy/filter-config.json) to the `make run` or
# `make run-host` serving HTTP_PORT (default 8080), without a restart, closing
# a client connection or failing a request in flight (SPEC section 2.6). Envoy:
# it replaces the file Envoy watches in that run's state directory (see
# envoy/run.sh) and waits for Envoy's counters to say it was taken or refused;
# the test host: it replaces its --config file and sends SIGHUP, then waits for
# its log line. At most RELOAD_TIMEOUT seconds (default 30). A configuration
# the filter refuses: exit 1 with the filter's one-line error, and the running
# configuration keeps serving.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
: "${HTTP_PORT:=8080}"
: "${RELOAD_TIMEOUT:=30}"
state=${JWT_PROXY_STATE:-${TMPDIR:-/tmp}/jwt-proxy-state}/$HTTP_PORT
host=$(cat "$state/host" 2>/dev/null || true)
log_size=$(wc -c < "$state/proxy.log" 2>/dev/null || echo 0)
refused() { # the filter's line among the log's new lines, else $1
  why=$(tail -c +$((log_size + 1)) "$state/proxy.log" | grep -o 'jwt-proxy refuses to start: .*' | tail -n 1)
  echo "reload.sh: refused, the running configuration keeps serving: ${why:-$1}" >&2
  exit 1
}
if [ "$host" = test-host ] && [ -s "$state/pid" ]; then
  if [ -n "${PLUGIN_CONFIG:-}" ]; then
    (umask 077; printf '%s' "$PLUGIN_CONFIG" > "$state/.config.tmp")
  else
    (umask 077; cp "${PLUGIN_CONFIG_FILE:-$here/filter-config.json}" "$state/.config.tmp")
  fi
  mv "$state/.config.tmp" "$state/config.json"
  kill -HUP "$(cat "$state/pid")"
  i=0
  while [ "$i" -lt $((RELOAD_TIMEOUT * 10)) ]; do
    new=$(tail -c +$((log_size + 1)) "$state/proxy.log")
    case "$new" in
      *"SIGHUP: applied"*) echo "reload.sh: applied on port $HTTP_PORT (test host)" >&2; exit 0 ;;
      *"SIGHUP: "*"refused"*|*"SIGHUP: cannot read"*) refused "the test host refused it, see $state/proxy.log" ;;
    esac
    sleep 0.1
    i=$((i + 1))
  done
  echo "reload.sh: the test host said nothing within ${RELOAD_TIMEOUT} s (see $state/proxy.log)" >&2
  exit 1
fi
if [ ! -s "$state/admin" ] || [ ! -d "$state/filter" ]; then
  echo "reload.sh: no \`make run\` serves port $HTTP_PORT (no state in $state)" >&2
  exit 1
fi
admin=$(cat "$state/admin")
# shellcheck disable=SC1091
. "$state/env"
stat() { # the ECDS counter $1 of the jwt_proxy filter, from Envoy's admin
  python3 - "$admin" "$1" <<'PY'
import sys, urllib.request
admin, name = sys.argv[1], "extension_config_discovery.http_filter.jwt_proxy." + sys.argv[2]
with urllib.request.urlopen(f"http://{admin}/stats?filter=^{name}$", timeout=5) as r:
    for line in r.read().decode().splitlines():
        if line.startswith(name + ":"):
            print(line.split(":", 1)[1].strip()); break
    else:
        print(0)
PY
}
ok_before=$(stat update_success)
refused_before=$(stat update_rejected)
(umask 077; WASM_PATH=${WASM_PATH:-} "$here/render.sh" --filter-resource > "$state/filter/.next.tmp")
# Moved over the watched file: Envoy never reads half of it.
mv "$state/filter/.next.tmp" "$state/filter/jwt_proxy.yaml"
i=0
while [ "$i" -lt $((RELOAD_TIMEOUT * 10)) ]; do
  if [ "$(stat update_success)" != "$ok_before" ]; then
    echo "reload.sh: applied on port $HTTP_PORT after $((i / 10)).$((i % 10)) s" >&2
    exit 0
  fi
  if [ "$(stat update_rejected)" != "$refused_before" ]; then
    refused "Envoy refused it, see $state/proxy.log"
  fi
  sleep 0.1
  i=$((i + 1))
done
echo "reload.sh: Envoy neither took nor refused the configuration within ${RELOAD_TIMEOUT} s (see $state/proxy.log)" >&2
exit 1
