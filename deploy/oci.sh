#!/bin/sh
# `make oci`: the OCI image of the filter module, built without a Docker
# engine, and the deploy/ manifests rendered with its digest.
#
# The image is the "compat" variant of the Wasm image spec
# (https://github.com/solo-io/wasm/blob/master/spec/spec-compat.md), which
# Istio's WasmPlugin and Envoy Gateway's EnvoyExtensionPolicy both accept: one
# application/vnd.oci.image.layer.v1.tar+gzip layer holding plugin.wasm, and
# the manifest annotation module.wasm.image/variant=compat.
#
# umoci (Debian package `umoci`) writes the image layout; everything that
# goes into it is fixed (file mode, owner, mtime, created date, platform), so
# the same module gives the same image digest on any machine.
#
# Output, in $OCI_DIR (default target/oci):
#   layout/              OCI image layout (index.json, oci-layout, blobs/)
#   jwt-filter.oci.tar   the layout as a tarball (an oci-archive)
#   plugin.wasm          the module, for HTTP sources (WASM_URL)
#   plugin.wasm.sha256   its sha256 (`sha256sum -c` format)
#   image.digest         the image (manifest) digest, sha256:<hex>
#   layout-oci/          the spec's two-layer "oci" variant (Wasm media types)
#   image-oci.digest     its digest
#   deploy/              deploy/ manifests with the placeholders filled in
#
# Settings (environment): OCI_IMAGE (default localhost:5000/jwt-proxy-wasm),
# OCI_TAG (default the filter's version), WASM_URL (where the module is
# served for HTTP sources), K8S_UPSTREAM (the Kubernetes Deployment's
# upstream, default upstream:8081 from deploy/kubernetes/envoy.env),
# SOURCE_DATE_EPOCH (image dates, default 0).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
wasm=${WASM:-$root/target/wasm32-wasip1/release/jwt_filter.wasm}
out=${OCI_DIR:-$root/target/oci}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/filter/Cargo.toml" | head -n 1)
: "${OCI_IMAGE:=localhost:5000/jwt-proxy-wasm}"
: "${OCI_TAG:=$version}"
: "${WASM_URL:=http://jwt-proxy-wasm.default.svc.cluster.local/plugin.wasm}"
: "${SOURCE_DATE_EPOCH:=0}"

command -v umoci >/dev/null 2>&1 || {
  echo "oci.sh: umoci is missing: apt-get install umoci (skopeo to inspect and push)" >&2
  exit 1
}
[ -f "$wasm" ] || { echo "oci.sh: $wasm is missing: run 'make wasm' first" >&2; exit 1; }
case "$SOURCE_DATE_EPOCH" in
  ''|*[!0-9]*) echo "oci.sh: SOURCE_DATE_EPOCH must be seconds, got '$SOURCE_DATE_EPOCH'" >&2; exit 2 ;;
esac
created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)

layout=$out/layout
work=$out/work
rm -rf "$layout" "$work" "$out/deploy"
mkdir -p "$out" "$work"
image=$layout:$OCI_TAG

umoci init --layout "$layout"
umoci new --image "$image"
# Platform set, not taken from the build machine, so the digest is the same
# on any machine: linux/amd64 is what `docker build` of the spec's
# Dockerfile gives on the common platform; the engines ignore it.
umoci config --image "$image" --no-history --created "$created" \
  --os linux --architecture amd64 \
  --manifest.annotation module.wasm.image/variant=compat \
  --manifest.annotation org.opencontainers.image.title=jwt-proxy-wasm \
  --manifest.annotation "org.opencontainers.image.version=$version" \
  --manifest.annotation org.opencontainers.image.created="$created"
umoci unpack --rootless --image "$image" "$work/bundle"
cp "$wasm" "$work/bundle/rootfs/plugin.wasm"
chmod 0644 "$work/bundle/rootfs/plugin.wasm"
touch -d "@$SOURCE_DATE_EPOCH" "$work/bundle/rootfs/plugin.wasm" "$work/bundle/rootfs"
# One layer: exactly plugin.wasm (umoci `insert` writes an unterminated tar).
umoci repack --image "$image" --history.created "$created" \
  --history.created_by "make oci (deploy/oci.sh)" --history.comment "plugin.wasm" "$work/bundle"
umoci gc --layout "$layout"
rm -rf "$work"

manifest=$(sed -n 's/.*"digest":"\(sha256:[0-9a-f]*\)".*/\1/p' "$layout/index.json")
[ -n "$manifest" ] || { echo "oci.sh: no manifest digest in $layout/index.json" >&2; exit 1; }
# Blobs world-readable (umoci writes 0600), so a registry or server can read them.
chmod -R u+rwX,go+rX "$layout"
( cd "$layout" && tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 \
    --numeric-owner --mode=u+rwX,go+rX,go-w -cf "$out/jwt-filter.oci.tar" . )
cp "$wasm" "$out/plugin.wasm"
module=$(sha256sum "$out/plugin.wasm" | cut -d' ' -f1)
echo "$module  plugin.wasm" > "$out/plugin.wasm.sha256"
echo "$manifest" > "$out/image.digest"

# The spec's two-layer "oci" variant (custom Wasm media types: a runtime
# config layer and the module itself, uncompressed), in layout-oci/. No
# tar or gzip is involved, and umoci only writes container media types, so
# these few JSON documents are written here; skopeo reads them back (tests).
oci=$out/layout-oci
rm -rf "$oci"
mkdir -p "$oci/blobs/sha256"
put() { # file -> its digest (hex); the file becomes a blob
  d=$(sha256sum "$1" | cut -d' ' -f1); mv "$1" "$oci/blobs/sha256/$d"; echo "$d"
}
size() { wc -c < "$oci/blobs/sha256/$1" | tr -d ' '; }
printf '{"type":"envoy_proxy","abi_version":"v0.2.1","config":{"root_ids":["jwt_proxy"]}}' > "$oci/rc"
rc=$(put "$oci/rc")
cp "$wasm" "$oci/w"
w=$(put "$oci/w")
cfg_mt=application/vnd.module.wasm.config.v1+json
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"%s","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"%s","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.title":"runtime-config.json"}},{"mediaType":"application/vnd.module.wasm.content.layer.v1+wasm","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.title":"plugin.wasm"}}],"annotations":{"org.opencontainers.image.created":"%s","org.opencontainers.image.title":"jwt-proxy-wasm","org.opencontainers.image.version":"%s"}}' \
  "$cfg_mt" "$rc" "$(size "$rc")" "$cfg_mt" "$rc" "$(size "$rc")" "$w" "$(size "$w")" "$created" "$version" > "$oci/m"
m=$(put "$oci/m")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' \
  "$m" "$(size "$m")" "$OCI_TAG" > "$oci/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' > "$oci/oci-layout"
chmod -R u+rwX,go+rX "$oci"
echo "sha256:$m" > "$out/image-oci.digest"

# The Kubernetes ConfigMap carries envoy/envoy.yaml as render.sh renders it
# for a pod: all interfaces, the module from the image volume, the key from
# the environment (JWT_SECRET, from a Secret), never in the config.
# The settings are in deploy/kubernetes/envoy.env (one NAME=value a line),
# which `make validate` renders the same way.
envoy_yaml=$out/envoy.rendered.yaml
set --
while IFS= read -r setting; do set -- "$@" "$setting"; done < "$here/kubernetes/envoy.env"
env "$@" ${K8S_UPSTREAM:+UPSTREAM=$K8S_UPSTREAM} WASM_URL= "$root/envoy/render.sh" > "$envoy_yaml"

# ${NAME} placeholders in deploy/; a line that is only ${ENVOY_YAML} becomes
# the rendered Envoy config at that indentation.
export OCI_IMAGE OCI_TAG WASM_URL
export OCI_REF="$OCI_IMAGE:$OCI_TAG" IMAGE_DIGEST="${manifest#sha256:}" MODULE_SHA256="$module" \
  ENVOY_YAML_FILE="$envoy_yaml"
for src in "$here"/*/*.yaml; do
  rel=${src#"$here"/}
  mkdir -p "$out/deploy/$(dirname "$rel")"
  awk '
  /^[ \t]*#/ { print; next }
  /^[ \t]*\$\{ENVOY_YAML\}[ \t]*$/ {
    indent = $0; sub(/\$\{ENVOY_YAML\}.*/, "", indent)
    while ((getline l < ENVIRON["ENVOY_YAML_FILE"]) > 0) print (l == "" ? "" : indent l)
    next
  }
  {
    out = ""; line = $0
    while ((i = index(line, "${")) > 0) {
      rest = substr(line, i + 2); j = index(rest, "}")
      if (j == 0) break
      name = substr(rest, 1, j - 1)
      if (!(name in ENVIRON)) { printf "oci.sh: %s: %s is not set\n", FILENAME, name > "/dev/stderr"; bad = 1 }
      out = out substr(line, 1, i - 1) ENVIRON[name]; line = substr(rest, j + 1)
    }
    print out line
  }
  END { exit bad }' "$src" > "$out/deploy/$rel"
done
rm -f "$envoy_yaml"

shown=${out#"$root"/}
echo "oci: image   $shown/layout ($OCI_IMAGE:$OCI_TAG), tarball $shown/jwt-filter.oci.tar"
echo "oci: image digest   $manifest"
echo "oci: module sha256  $module"
echo "oci: oci variant    $shown/layout-oci (two layers, Wasm media types): sha256:$m"
echo "oci: manifests      $shown/deploy/"
