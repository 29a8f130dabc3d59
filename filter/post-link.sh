#!/bin/sh
# make wasm's step after cargo links the filter module:
#   filter/post-link.sh MODULE WASM-OPT [FLAGS...]   (TRIM, UNUSED_CALLBACKS from make)
# drops the exports of the callbacks it does not implement (filter/trim),
# then optimizes it with wasm-opt. Cargo puts its linked module back at
# MODULE on every build, even with nothing to rebuild, and wasm-opt on its
# own output would change the bytes: so the result is kept beside it, under
# the linked module's SHA-256, and put back while that module is the same.
set -eu
module=$1
shift
cache=${module%.wasm}.post-link
sum() { sha256sum <"$1" | cut -c1-64; }
linked=$(sum "$module")
if [ -f "$cache/result-$linked" ]; then
  exit 0 # MODULE is already the result
fi
if [ ! -f "$cache/$linked.wasm" ]; then
  rm -rf "$cache"
  mkdir -p "$cache"
  cp "$module" "$cache/linked.wasm"
  # shellcheck disable=SC2086 # both are lists of words
  $TRIM "$cache/linked.wasm" $UNUSED_CALLBACKS
  "$@" "$cache/linked.wasm" -o "$cache/$linked.wasm"
  rm "$cache/linked.wasm"
  touch "$cache/result-$(sum "$cache/$linked.wasm")"
fi
# Beside it, then renamed: MODULE is a hard link to cargo's own copy.
cp "$cache/$linked.wasm" "$module.tmp"
mv "$module.tmp" "$module"
echo "$module: $(wc -c <"$module") bytes (trimmed, then wasm-opt)"
