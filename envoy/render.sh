#!/bin/sh
# Renders an Envoy config template (default: envoy/envoy.yaml beside this
# script) to stdout, filling each ${NAME} from the environment, with the
# defaults below. POSIX sh + awk only, so it also runs in the envoyproxy/envoy
# image. Usage: [VAR=value ...] render.sh [template] > envoy.rendered.yaml
#
# The jwt_proxy filter comes from jwt-filter.yaml beside this script: inline
# in the template's ${JWT_FILTER} line, or, when FILTER_CONFIG_DIR is set,
# written to $FILTER_CONFIG_DIR/jwt_proxy.yaml, which Envoy watches (extension
# config discovery): replacing that file (`make reload`) reconfigures the
# filter without a restart. `render.sh --filter-resource` prints only that
# file's content.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
mode=config
if [ "${1:-}" = "--filter-resource" ]; then mode=resource; shift; fi
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
# The module (SPEC section 8): the file WASM_PATH, or, with WASM_URL, fetched
# by Envoy over HTTP from a cluster for the URL's host and checked against
# WASM_SHA256 (a module whose sha256 differs is refused).
WASM_SOURCE_CLUSTER=
if [ -z "${WASM_URL:-}" ]; then
  WASM_CODE="{ local: { filename: $WASM_PATH } }"
else
  case "${WASM_SHA256:-}" in
    *[!0-9a-f]*|'') bad_sha=1 ;;
    *) bad_sha=$([ ${#WASM_SHA256} -eq 64 ] && echo 0 || echo 1) ;;
  esac
  if [ "$bad_sha" = 1 ]; then
    echo "render.sh: WASM_URL needs WASM_SHA256, the module's sha256 (64 lowercase hex digits)" >&2; exit 2
  fi
  case "$WASM_URL" in
    http://*) rest=${WASM_URL#http://} ;;
    *) echo "render.sh: WASM_URL must be an http:// URL, got '$WASM_URL'" >&2; exit 2 ;;
  esac
  authority=${rest%%/*}
  case "$authority" in
    ''|*[!A-Za-z0-9.:_-]*) echo "render.sh: WASM_URL has no valid host: '$WASM_URL'" >&2; exit 2 ;;
    *:*) WASM_HOST=${authority%:*}; WASM_PORT=${authority##*:} ;;
    *) WASM_HOST=$authority; WASM_PORT=80 ;;
  esac
  case "$WASM_PORT" in
    ''|*[!0-9]*) echo "render.sh: WASM_URL port '$WASM_PORT' is not a number" >&2; exit 2 ;;
  esac
  WASM_CODE="{ remote: { http_uri: { uri: \"$WASM_URL\", cluster: wasm_source, timeout: 10s }, sha256: \"$WASM_SHA256\", retry_policy: { num_retries: 3, retry_back_off: { base_interval: 0.5s, max_interval: 2s } } } }"
  WASM_SOURCE_CLUSTER="- { name: wasm_source, type: STRICT_DNS, dns_lookup_family: V4_PREFERRED, connect_timeout: 1s, load_assignment: { cluster_name: wasm_source, endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: $WASM_HOST, port_value: $WASM_PORT } } } } ] } ] } }"
fi
export WASM_CODE WASM_SOURCE_CLUSTER
# Named clusters for the filter's HTTP callouts and gRPC calls (SPEC section
# 5): CLUSTERS="name=host:port other=h2c://host:port", space separated;
# host:port speaks HTTP/1.1, h2c://host:port HTTP/2 with prior knowledge
# (what Envoy's gRPC client needs). The test host's --cluster takes the same
# NAME=SPEC; the route's upstream is the cluster named upstream on both.
EXTRA_CLUSTERS=
for c in ${CLUSTERS:-}; do
  name=${c%%=*}; spec=${c#*=}
  case "$c" in *=*) ;; *) echo "render.sh: CLUSTERS entry '$c' is not name=host:port or name=h2c://host:port" >&2; exit 2 ;; esac
  case "$name" in
    ''|*[!A-Za-z0-9_.-]*) echo "render.sh: CLUSTERS name '$name' must be letters, digits, '_', '-' or '.'" >&2; exit 2 ;;
    upstream|wasm_source) echo "render.sh: CLUSTERS name '$name' is taken by envoy.yaml" >&2; exit 2 ;;
  esac
  protocol=
  case "$spec" in
    h2c://*) spec=${spec#h2c://}; protocol="typed_extension_protocol_options: { envoy.extensions.upstreams.http.v3.HttpProtocolOptions: { \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: { http2_protocol_options: {} } } }, " ;;
    http://*) spec=${spec#http://} ;;
    *://*) echo "render.sh: CLUSTERS '$c': the scheme is h2c:// or none" >&2; exit 2 ;;
  esac
  chost=${spec%:*}; cport=${spec##*:}
  case "$spec" in *:*) ;; *) cport= ;; esac
  case "$chost" in ''|*[!A-Za-z0-9.:_-]*) echo "render.sh: CLUSTERS '$c' has no valid host" >&2; exit 2 ;; esac
  case "$cport" in ''|*[!0-9]*) echo "render.sh: CLUSTERS '$c' has no port number" >&2; exit 2 ;; esac
  entry="- { name: $name, type: STRICT_DNS, dns_lookup_family: V4_PREFERRED, connect_timeout: 1s, ${protocol}load_assignment: { cluster_name: $name, endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: $chost, port_value: $cport } } } } ] } ] } }"
  if [ -z "$EXTRA_CLUSTERS" ]; then EXTRA_CLUSTERS=$entry; else EXTRA_CLUSTERS="$EXTRA_CLUSTERS
  $entry"; fi
done
export EXTRA_CLUSTERS
# PLUGIN_CONFIG goes inside a single-quoted YAML scalar: double its quotes.
PLUGIN_CONFIG=$(printf '%s' "$PLUGIN_CONFIG" | sed "s/'/''/g")
export HTTP_PORT ADMIN_PORT LISTEN_ADDRESS UPSTREAM_HOST UPSTREAM_PORT UPSTREAM_TIMEOUT WASM_PATH PLUGIN_CONFIG \
  REQUEST_HEADERS_TIMEOUT IDLE_TIMEOUT MAX_CONNECTIONS

fill() {
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
END { exit bad }' "$1"
}

filter=$(fill "$here/jwt-filter.yaml")
# The ECDS resource: a TypedExtensionConfig in a DiscoveryResponse.
resource() {
  printf '%s\n' 'resources:' '- "@type": type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig'
  printf '%s\n' "$filter" | grep -v '^#' | sed 's/^/  /'
}
if [ "$mode" = resource ]; then resource; exit 0; fi
if [ -n "${FILTER_CONFIG_DIR:-}" ]; then
  mkdir -p "$FILTER_CONFIG_DIR"
  dir=$(cd "$FILTER_CONFIG_DIR" && pwd)
  # Written beside it and moved over: Envoy never reads half a file.
  (umask 077; resource > "$dir/.jwt_proxy.yaml.tmp")
  mv "$dir/.jwt_proxy.yaml.tmp" "$dir/jwt_proxy.yaml"
  JWT_FILTER="- name: jwt_proxy
            config_discovery:
              config_source:
                path_config_source:
                  path: $dir/jwt_proxy.yaml
                  watched_directory: { path: $dir }
              type_urls: [\"type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm\"]"
else
  # A list item of http_filters: `- ` on the template's line, the rest under it.
  JWT_FILTER=$(printf '%s\n' "$filter" | grep -v '^#' | sed '1s/^/- /; 2,$s/^/            /')
fi
export JWT_FILTER
fill "$template"
