#!/bin/sh
# `make up` and `make down`: envoy/docker-compose.yml under Docker Compose v2
# (`docker compose`, when a Docker engine answers `docker info`), else under
# podman-compose (pinned, installed from PyPI into .venv-compose).
#
#   envoy/compose.sh up     start detached; return once /status answers
#                           through the published port (UP_TIMEOUT, 60 s);
#                           if Envoy does not come up, print why (the
#                           filter's one-line error when it refused its
#                           configuration), remove everything, exit 1
#   envoy/compose.sh down   remove the project's containers, networks, volumes
#   envoy/compose.sh tool   print the compose command (installs podman-compose)
#
# Settings: HTTP_PORT (8080), HTTP_ADDRESS (127.0.0.1), the address the port
# is published on; ENVOY_IMAGE, BASE_IMAGE (the images, see the compose file);
# PLUGIN_CONFIG_FILE (the filter configuration, envoy/filter-config.json);
# JWT_SECRET; COMPOSE_PROJECT (jwt-proxy); COMPOSE_ENGINE (docker or podman:
# which one to use instead of the one picked here).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
file=$here/docker-compose.yml
project=${COMPOSE_PROJECT:-jwt-proxy}
# Debian's podman-compose 1.0.3 leaves `${JWT_SECRET:-}` uninterpolated in
# `environment:` and its network behind on `down`; 1.6.0 does neither.
podman_compose_version=1.6.0
venv=${COMPOSE_VENV:-$root/.venv-compose}
: "${HTTP_PORT:=8080}"
: "${HTTP_ADDRESS:=127.0.0.1}"
: "${UP_TIMEOUT:=60}"

die() { echo "compose.sh: $*" >&2; exit 1; }

# The compose command; sets $engine, the container CLI it drives.
pick() {
  engine=${COMPOSE_ENGINE:-}
  if [ -z "$engine" ]; then
    engine=podman
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then engine=docker; fi
  fi
  case "$engine" in
    docker) compose="docker compose"; return ;;
    podman) ;;
    *) die "COMPOSE_ENGINE is docker or podman, got '$engine'" ;;
  esac
  command -v podman >/dev/null 2>&1 ||
    die "no Docker engine answers (docker info) and podman is missing: install Docker, or podman (apt-get install podman runc; docs/compose.md)"
  compose=$venv/bin/podman-compose
  have=$("$compose" --version 2>/dev/null | awk '$1 == "podman-compose" { print $3 }' || true)
  if [ "$have" != "$podman_compose_version" ]; then
    echo "compose.sh: installing podman-compose $podman_compose_version (PyPI) into $venv" >&2
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "podman-compose==$podman_compose_version" >&2
  fi
}

run_compose() {
  # $compose is a command line ("docker compose"): split on purpose.
  # shellcheck disable=SC2086
  $compose -p "$project" -f "$file" "$@"
}

# The id of the project's container of service $1, or nothing.
container() {
  "$engine" ps -a -q --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.service=$1" | head -n 1
}

# The state (running, exited, ...) of container $1, or nothing.
state() {
  [ -z "$1" ] || "$engine" inspect -f '{{.State.Status}}' "$1" 2>/dev/null || true
}

up() {
  case "$HTTP_PORT" in ''|*[!0-9]*) die "HTTP_PORT '$HTTP_PORT' is not a port number" ;; esac
  for f in "$root/target/wasm32-wasip1/release/jwt_filter.wasm" \
    "$root/target/x86_64-unknown-linux-musl/release/echo-upstream"; do
    [ -f "$f" ] || die "$f is missing: run make up (it builds it)"
  done
  if [ -n "${PLUGIN_CONFIG_FILE:-}" ]; then
    # Compose would read a relative path from envoy/, and make a directory
    # where a file is missing.
    case "$PLUGIN_CONFIG_FILE" in /*) ;; *) PLUGIN_CONFIG_FILE=$(pwd)/$PLUGIN_CONFIG_FILE ;; esac
    [ -f "$PLUGIN_CONFIG_FILE" ] && [ -r "$PLUGIN_CONFIG_FILE" ] ||
      die "PLUGIN_CONFIG_FILE=$PLUGIN_CONFIG_FILE is not a readable file"
    export PLUGIN_CONFIG_FILE
  fi
  command -v curl >/dev/null 2>&1 || die "curl is missing (it asks /status whether Envoy is up)"
  export HTTP_PORT HTTP_ADDRESS
  pick
  started=$(date +%s)
  # podman-compose waits for a dependency that will never run (an echo that
  # exited): bounded too.
  bound=
  if command -v timeout >/dev/null 2>&1; then bound="timeout $UP_TIMEOUT"; fi
  # shellcheck disable=SC2086
  $bound $compose -p "$project" -f "$file" up -d || fail "$compose up -d failed" "$(container echo)" "$(container envoy)"
  addr=$HTTP_ADDRESS
  [ "$addr" != 0.0.0.0 ] || addr=127.0.0.1
  url=http://$addr:$HTTP_PORT/status
  while :; do
    # /status is answered by the filter: the echo needs a look of its own.
    echo_id=$(container echo)
    echo_state=$(state "$echo_id")
    case "$echo_state" in
      running|created|configured) ;;
      *) fail "the echo upstream is not running (${echo_state:-no container})" "$echo_id" ;;
    esac
    # The container first: whatever else listens on the port is not it.
    id=$(container envoy)
    state=$(state "$id")
    case "$state" in
      running)
        if [ "$echo_state" = running ] && curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; then
          echo "jwt-proxy ($project, $engine): http://$addr:$HTTP_PORT -> echo upstream, up in $(($(date +%s) - started)) s; make down removes it" >&2
          return 0
        fi
        ;;
      created|configured|restarting) ;;
      *) fail "Envoy exited (${state:-no container})" "$id" ;;
    esac
    [ $(($(date +%s) - started)) -lt "$UP_TIMEOUT" ] || fail "$url did not answer within $UP_TIMEOUT s" "$id"
    sleep 0.5
  done
}

# Prints reason $1 and, from the logs of containers $2..., why: the filter's
# one-line error when it refused its configuration, else the last lines.
# Removes the project; exits 1.
fail() {
  reason=$1
  shift
  refused=
  for id in "$@"; do
    [ -n "$id" ] || continue
    log=$("$engine" logs "$id" 2>&1 || true)
    refused=$(printf '%s\n' "$log" | sed -n 's/.*\(jwt-proxy refuses to start: .*\)/\1/p' | head -n 1)
    [ -z "$refused" ] || break
  done
  if [ -n "$refused" ]; then
    echo "compose.sh: $refused" >&2
  else
    for id in "$@"; do
      [ -n "$id" ] || continue
      echo "compose.sh: the last lines of $("$engine" inspect -f '{{.Name}}' "$id" 2>/dev/null || echo "$id")'s log:" >&2
      "$engine" logs "$id" 2>&1 | tail -n 15 >&2 || true
    done
  fi
  echo "compose.sh: $reason; removing $project" >&2
  run_compose down -v >/dev/null 2>&1 || true
  exit 1
}

case "${1:-}" in
  up) up ;;
  down) pick; run_compose down -v ;;
  tool) pick; echo "$compose" ;;
  *) die "usage: compose.sh up|down|tool" ;;
esac
