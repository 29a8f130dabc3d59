#!/bin/sh
# `make validate`: `envoy --mode validate` on every Envoy config in the repo,
# rendered as each user of it renders it (make run, docker compose, benches).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
envoy=$("$here/find-envoy.sh")
work=$(mktemp -d "${TMPDIR:-/tmp}/jwt-proxy-validate.XXXXXX")
trap 'rm -rf "$work"' EXIT
wasm=$root/target/wasm32-wasip1/release/jwt_filter.wasm
[ -f "$wasm" ] || { echo "validate.sh: $wasm is missing: run 'make wasm' first" >&2; exit 1; }
fail=0
n=0
check() { # name, then env assignments for render.sh; template last via TEMPLATE
  name=$1; shift
  n=$((n + 1))
  env "$@" "$here/render.sh" ${TEMPLATE:-} > "$work/$n.yaml"
  if "$envoy" --mode validate -c "$work/$n.yaml" --use-dynamic-base-id -l error > "$work/$n.log" 2>&1; then
    echo "ok       $name"
  else
    echo "INVALID  $name"; cat "$work/$n.log"; fail=1
  fi
}
check "envoy/envoy.yaml (filter inline: the tests, compose, Kubernetes)"
# make run: the filter from a watched file (extension config discovery).
check "envoy/envoy.yaml (make run: filter from a watched file)" FILTER_CONFIG_DIR="$work/filter"
# docker compose renders the same template with these values (see docker-compose.yml).
check "envoy/envoy.yaml (docker compose)" HTTP_PORT=8080 ADMIN_PORT=9901 LISTEN_ADDRESS=0.0.0.0 UPSTREAM=echo:8081 WASM_PATH="$wasm"
# Remote module (make run WASM_URL=... WASM_SHA256=...): the same template
# with vm_config.code.remote and the cluster for the URL's host.
check "envoy/envoy.yaml (make run WASM_URL=...)" WASM_URL=http://127.0.0.1:8000/plugin.wasm \
  WASM_SHA256="$(sha256sum "$wasm" | cut -d' ' -f1)"
# make run CLUSTERS=...: named clusters for callouts (HTTP/1.1) and gRPC (h2c).
check "envoy/envoy.yaml (make run CLUSTERS=...)" CLUSTERS="auth=127.0.0.1:9000 grpc=h2c://localhost:9001"
# deploy/kubernetes/configmap.yaml carries the template rendered with
# deploy/kubernetes/envoy.env (by make oci); here with the local module.
set --
while IFS= read -r setting; do set -- "$@" "$setting"; done < "$root/deploy/kubernetes/envoy.env"
# Its key comes from JWT_SECRET (a Secret in the pod): a random one here.
JWT_SECRET=$(head -c 48 /dev/urandom | base64 | tr -d '\n')
export JWT_SECRET
check "deploy/kubernetes/configmap.yaml (make oci)" "$@" WASM_PATH="$wasm"
unset JWT_SECRET
# envoy/examples/identity.yaml: Envoy's jwt_authn in front of the filter
# (docs/identity.md), with its example filter configuration and caller JWKS.
TEMPLATE=$root/envoy/examples/identity.yaml check "envoy/examples/identity.yaml" \
  PLUGIN_CONFIG_FILE="$root/envoy/examples/identity.json" CALLER_ISSUER=https://idp.example \
  CALLER_JWKS="$(cat "$root/envoy/examples/caller-jwks.json")" WASM_PATH="$wasm"
for t in "$root"/tests/bench/*.yaml; do
  [ -f "$t" ] || continue
  TEMPLATE=$t check "${t#"$root"/}" WASM_PATH="$wasm"
done
exit "$fail"
