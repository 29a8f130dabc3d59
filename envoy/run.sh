#!/bin/sh
# `make run` and `make run-host`: the echo upstream (unless UPSTREAM is given)
# and a proxy running the filter, in the foreground. Ctrl-C stops both.
#
#   envoy/run.sh [envoy|test-host]      (or HOST=envoy|test-host; default envoy)
#
# Both hosts get the same settings: HTTP_PORT (8080), ECHO_PORT (8081),
# UPSTREAM, CLUSTERS (named clusters for callouts and gRPC, "name=host:port
# other=h2c://host:port": render.sh's clusters, the test host's --cluster),
# PLUGIN_CONFIG or PLUGIN_CONFIG_FILE (envoy/filter-config.json),
# WASM_PATH, LOG_LEVEL (info), WORKERS and TEST_HOST_BIN (test host: 2,
# target/release/test-host); ADMIN_PORT (Envoy's
# admin, 127.0.0.1 only: 9901 when free, else any free port). JWT_SECRET in
# the environment wins over the configured key; it reaches either proxy
# through its environment (Envoy's host_env_keys, the test host's
# --host-env), never through a command line, where `ps` would show it.
# A starting filter configuration the filter refuses stops the run: the
# proxy is stopped and this script exits 1 with the filter's one-line error;
# the banner shows only once the filter is configured and the proxy serves
# (at most START_TIMEOUT seconds, default 60).
# This shell stays alive as the proxy's parent (an Envoy whose launching
# shell exits can be sent SIGTERM).
#
# Each run keeps a state directory per port, $JWT_PROXY_STATE/$HTTP_PORT
# (default $TMPDIR/jwt-proxy-state), where `make reload` (envoy/reload.sh)
# finds it: for Envoy the file it watches for its filter (extension config
# discovery) and its admin address, for the test host its pid and --config
# file (it reloads on SIGHUP); and the proxy's log, also shown here.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
host=${1:-${HOST:-envoy}}
case "$host" in
  envoy|test-host) ;;
  *) echo "run.sh: the host is envoy or test-host, got '$host'" >&2; exit 2 ;;
esac
: "${HTTP_PORT:=8080}"
: "${ECHO_PORT:=8081}"
: "${LOG_LEVEL:=info}"
: "${WORKERS:=2}"
: "${CLUSTERS:=}"
work=$(mktemp -d "${TMPDIR:-/tmp}/jwt-proxy.XXXXXX")
state=
pids=""
cleanup() {
  trap - INT TERM EXIT
  [ -n "$pids" ] && kill $pids 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
  [ -z "$state" ] || rm -rf "$state"
}
trap cleanup INT TERM EXIT

# Waits (at most START_TIMEOUT seconds, default 60) until the proxy serves
# with the filter configured; else says why and exits non-zero (the trap
# stops everything this script started). A configuration the filter refuses
# does not stop Envoy by itself (the filter comes from a watched file, and
# Envoy answers 500 to every request without it), so Envoy's readiness is
# the filter's own: its counters (SPEC section 2.3) exist only once a VM has
# accepted the configuration (on_configure defines them), whether the module
# is a local file or fetched (WASM_URL). The test host: its "listening" line,
# written once the filter is configured, or its exit.
started() {
  set +e
  why=$(python3 - "$1" "$proxy_pid" "$state" "${START_TIMEOUT:-60}" <<'PY'
import re, sys, time, urllib.parse, urllib.request
host, pid, state, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
REFUSED = re.compile(r"jwt-proxy refuses to start: .*")
# Envoy's counters that say the filter was configured, and the ECDS one
# that says Envoy refused the filter's configuration (local module).
READY_STAT = "wasmcustom.jwt_proxy.requests_processed"
REJECTED_STAT = "extension_config_discovery.http_filter.jwt_proxy.update_rejected"

def exited():
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True

def log():
    try:
        with open(f"{state}/proxy.log", errors="replace") as f:
            return f.read()
    except OSError:
        return ""

def refused(text):
    lines = REFUSED.findall(text)
    return lines[-1] if lines else None

def get(admin, path):
    with urllib.request.urlopen(f"http://{admin}{path}", timeout=2) as r:
        return r.status, r.read().decode()

def envoy_ready():
    try:
        with open(f"{state}/admin") as f:
            admin = f.read().strip()
        if not admin:
            return False
        wanted = f"^({re.escape(READY_STAT)}|{re.escape(REJECTED_STAT)})$"
        stats = get(admin, "/stats?filter=" + urllib.parse.quote(wanted))[1]
        live = get(admin, "/ready")[0] == 200
    except OSError:
        return False
    values = dict(l.split(": ", 1) for l in stats.splitlines() if ": " in l)
    if int(values.get(REJECTED_STAT, "0")) > 0:
        # The filter's line follows in the log (Envoy flushes its log file
        # at least every 10 s), unless LOG_LEVEL hides it.
        until = time.monotonic() + 12
        while not refused(log()) and time.monotonic() < until:
            time.sleep(0.1)
        print(refused(log()) or "Envoy refused the filter's configuration (see proxy.log)")
        sys.exit(1)
    return live and READY_STAT in values

deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    text = log()
    line = refused(text)
    if line:
        print(line)
        sys.exit(1)
    if exited():
        print(refused(log()) or f"the {host} exited before serving (see proxy.log)")
        sys.exit(1)
    if host == "test-host" and "host: listening on http://" in text:
        sys.exit(0)
    if host == "envoy" and envoy_ready():
        sys.exit(0)
    time.sleep(0.1)
print(f"the {host} did not start serving with the filter configured within {timeout:g} s (START_TIMEOUT; see proxy.log)")
sys.exit(1)
PY
  )
  code=$?
  set -e
  if [ "$code" -ne 0 ]; then
    echo "run.sh: stopped, the $1 did not start: ${why:-no reason given}" >&2
    exit 1
  fi
}

if [ -z "${UPSTREAM:-}" ]; then
  UPSTREAM=127.0.0.1:$ECHO_PORT
  "$root/target/release/echo-upstream" --listen "$UPSTREAM" &
  pids="$pids $!"
fi

state=${JWT_PROXY_STATE:-${TMPDIR:-/tmp}/jwt-proxy-state}/$HTTP_PORT
rm -rf "$state"
mkdir -p "$state"
chmod 700 "$state"
echo "$host" > "$state/host"
touch "$state/proxy.log"
# The log goes to a file (buffered, cheaper than stderr under load) that
# this terminal follows and `make reload` reads.
tail -n +1 -F "$state/proxy.log" >&2 2>/dev/null &
pids="$pids $!"

if [ "$host" = envoy ]; then
  if [ -z "${ADMIN_PORT:-}" ]; then
    ADMIN_PORT=9901
    if ! python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 9901))' 2>/dev/null; then
      ADMIN_PORT=0
    fi
  fi
  envoy=$("$here/find-envoy.sh")
  # What `make reload` renders the filter with, besides its configuration.
  for v in WASM_PATH WASM_URL WASM_SHA256; do
    eval "val=\${$v:-}"
    [ -z "$val" ] || printf "%s='%s'\n" "$v" "$val" >> "$state/env"
  done
  touch "$state/env"
  export HTTP_PORT ADMIN_PORT UPSTREAM CLUSTERS
  FILTER_CONFIG_DIR=$state/filter "$here/render.sh" > "$work/envoy.yaml"
  "$envoy" -c "$work/envoy.yaml" --use-dynamic-base-id --log-level "$LOG_LEVEL" \
    --log-path "$state/proxy.log" --admin-address-path "$state/admin" &
  proxy_pid=$!
  pids="$pids $proxy_pid"
  started envoy
  echo "jwt-proxy: http://127.0.0.1:$HTTP_PORT -> $UPSTREAM (admin $(cat "$state/admin"); /status answered locally; make reload applies a new filter configuration)" >&2
else
  if [ -n "${PLUGIN_CONFIG:-}" ]; then
    printf '%s' "$PLUGIN_CONFIG" > "$state/config.json"
  else
    cp "${PLUGIN_CONFIG_FILE:-$here/filter-config.json}" "$state/config.json"
  fi
  set -- --wasm "${WASM_PATH:-$root/target/wasm32-wasip1/release/jwt_filter.wasm}" \
    --config "$state/config.json" --listen "127.0.0.1:$HTTP_PORT" --upstream "$UPSTREAM" \
    --workers "$WORKERS" --log-level "$LOG_LEVEL"
  for c in $CLUSTERS; do set -- "$@" --cluster "$c"; done
  # The name only: the test host reads the value from its own environment.
  if [ -n "${JWT_SECRET:-}" ]; then set -- "$@" --host-env JWT_SECRET; fi
  "${TEST_HOST_BIN:-$root/target/release/test-host}" "$@" 2>> "$state/proxy.log" &
  proxy_pid=$!
  pids="$pids $proxy_pid"
  echo "$proxy_pid" > "$state/pid"
  started test-host
  echo "jwt-proxy (test host): http://127.0.0.1:$HTTP_PORT -> $UPSTREAM" >&2
fi
# Exit when the proxy exits (with its status), or on Ctrl-C via the trap.
status=0
wait "$proxy_pid" || status=$?
exit "$status"
