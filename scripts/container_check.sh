#!/usr/bin/env bash
# scripts/container_check.sh - the consumer image and the compose stack, built and run for real
# (make container-check). Run as root on a Debian bookworm machine without image registries:
#
#   1. a Docker engine: the one that runs, or Debian's docker.io installed and started as
#      dockerd --iptables=false --bridge=none --storage-driver=overlay2 (stopped at the end);
#   2. a local base image: debootstrap --variant=minbase bookworm from Debian's mirror with
#      python3, python3-venv and python3-pip, `docker import`ed (kept in the engine: made once);
#      the host's CA bundle is copied into it, for pip behind this machine's certificate authority;
#   3. docker/Dockerfile built on it through its PYTHON_IMAGE build argument (cold and cached);
#      the stand-ins for the images that cannot be pulled (docker/local/); compose v2 built
#      from its Go module (cached in ~/.cache/ingest-stack);
#   4. the checks: promtool on the alert rules, the image against the local stack, the compose
#      stack with docker-compose.local.yml (scripts/container_check.py), then the figures.
#
# Host networking only: every container shares the host's network and binds 127.0.0.1.
# CONTAINER_CHECK_KEEP=1 leaves the engine running at the end (for a quick second run).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/ingest-stack
WORK=$ROOT/.stack/container-check
LOGS=$WORK/logs
RESULTS=$WORK/results.jsonl
PY=${PY:-$ROOT/.venv/bin/python}

DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
HOST_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
BASE_IMAGE=ingest-local/debian-python:bookworm
APP_IMAGE=sqs-mongo-ingest:0.1.0  # the tag docker-compose.yml gives the image it builds
FERRETDB_IMAGE=ingest-local/ferretdb:v1.24.2
ELASTICMQ_IMAGE=ingest-local/elasticmq:1.7.1
PROMETHEUS_IMAGE=ingest-local/prometheus:2.42
COMPOSE_VERSION=v5.6.0
COMPOSE_BIN=$CACHE/docker-compose-$COMPOSE_VERSION

export DOCKER_BUILDKIT=0  # Debian's engine with the classic builder: no buildx plugin needed
export PATH="$PATH:/usr/local/go/bin"

log() { printf '[container-check] %s\n' "$*" >&2; }
die() { printf '[container-check] ERROR: %s\n' "$*" >&2; exit 1; }

# figure NAME VALUE UNIT: one measured figure, printed now and in the summary at the end
figure() {
  log "figure: $1 = $2${3:+ $3}"
  printf '{"name": "%s", "value": "%s", "unit": "%s"}\n' "$1" "$2" "${3:-}" >>"$RESULTS"
}

# run_logged NAME COMMAND...: the command's output in $LOGS/NAME.log, its last lines on failure
run_logged() {
  local name=$1; shift
  if ! "$@" >"$LOGS/$name.log" 2>&1; then
    log "$name failed; last lines of $LOGS/$name.log:"
    tail -n 30 "$LOGS/$name.log" | sed 's/^/    | /' >&2
    exit 1
  fi
}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------- the Docker engine

ENGINE_PID=""

install_engine() {
  log "engine: installing Debian's docker.io (services are not started by the install)"
  local policy=/usr/sbin/policy-rc.d made_policy=""
  if [[ ! -e "$policy" ]]; then  # without it the package would start dockerd with its defaults
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
  fi
  run_logged apt-update apt-get update
  DEBIAN_FRONTEND=noninteractive run_logged apt-install \
    apt-get install -y --no-install-recommends docker.io
  [[ -z "$made_policy" ]] || rm -f "$policy"
}

start_engine() {
  if docker info >/dev/null 2>&1; then
    log "engine: using the Docker engine that runs ($(docker version -f '{{.Server.Version}}'))"
    return 0
  fi
  [[ $EUID -eq 0 ]] || die "no Docker engine runs, and installing one needs root: run as root"
  local t0 installed=""
  t0=$(now)
  command -v dockerd >/dev/null || { install_engine; installed="installed and "; }
  log "engine: starting dockerd (no iptables, no bridge: containers use the host's network)"
  setsid dockerd --iptables=false --bridge=none --storage-driver=overlay2 \
    >"$LOGS/dockerd.log" 2>&1 </dev/null &
  ENGINE_PID=$!
  local deadline=$((SECONDS + 60))
  until docker info >/dev/null 2>&1; do
    kill -0 "$ENGINE_PID" 2>/dev/null || { tail -n 20 "$LOGS/dockerd.log" >&2; die "dockerd exited"; }
    ((SECONDS < deadline)) || die "dockerd did not answer within 60 s (log: $LOGS/dockerd.log)"
    sleep 0.5
  done
  log "engine: dockerd $(docker version -f '{{.Server.Version}}') started (pid $ENGINE_PID)"
  figure "Docker engine ${installed}started" "$(since "$t0")" s
}

stop_engine() {
  [[ -n "$ENGINE_PID" ]] || return 0
  if [[ -n "${CONTAINER_CHECK_KEEP:-}" ]]; then
    log "engine: left running (pid $ENGINE_PID, CONTAINER_CHECK_KEEP is set)"
    return 0
  fi
  log "engine: stopping the dockerd this run started (pid $ENGINE_PID)"
  kill -TERM "$ENGINE_PID" 2>/dev/null || true
  local i
  for ((i = 0; i < 120; i++)); do kill -0 "$ENGINE_PID" 2>/dev/null || return 0; sleep 0.25; done
  log "engine: dockerd did not stop within 30 s; killing it"
  kill -KILL "$ENGINE_PID" 2>/dev/null || true
}

# ---------------------------------------------------------------- images

make_base_image() {
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "base image: $BASE_IMAGE (cached)"
    return 0
  fi
  [[ $EUID -eq 0 ]] || die "making the base image needs root (debootstrap): run as root"
  command -v debootstrap >/dev/null || {
    log "base image: installing debootstrap"
    DEBIAN_FRONTEND=noninteractive run_logged apt-install-debootstrap \
      apt-get install -y --no-install-recommends debootstrap
  }
  local t0 rootfs
  t0=$(now)
  rootfs=$(mktemp -d /var/tmp/ingest-base.XXXXXX)
  log "base image: debootstrap --variant=minbase bookworm from $DEBIAN_MIRROR (about a minute)"
  run_logged debootstrap debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,python-is-python3 bookworm "$rootfs" "$DEBIAN_MIRROR"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  # As Debian's official images do: packages installed in a build start no services.
  printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
  chmod +x "$rootfs/usr/sbin/policy-rc.d"
  # The host's trust store (its own certificate authority included), in this local image only.
  local bundle=/usr/local/share/host-ca/ca-certificates.crt
  mkdir -p "$rootfs$(dirname "$bundle")"
  cp "$HOST_CA_BUNDLE" "$rootfs$bundle"
  tar -C "$rootfs" -c . | docker import \
    -c "ENV PIP_CERT=$bundle SSL_CERT_FILE=$bundle REQUESTS_CA_BUNDLE=$bundle" \
    -c 'CMD ["bash"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  figure "base image made (debootstrap + import)" "$(since "$t0")" s
}

build_app_image() {
  local build=(docker build --network host --build-arg "PYTHON_IMAGE=$BASE_IMAGE"
               -f docker/Dockerfile -t "$APP_IMAGE" .)
  local t0
  t0=$(now)
  log "image: building docker/Dockerfile on $BASE_IMAGE, no cache"
  (cd "$ROOT" && run_logged build-cold "${build[@]}" --no-cache)
  figure "image build, cold" "$(since "$t0")" s
  t0=$(now)
  (cd "$ROOT" && run_logged build-cached "${build[@]}")
  figure "image build, cached" "$(since "$t0")" s
  local bytes
  bytes=$(docker image inspect -f '{{.Size}}' "$APP_IMAGE")
  figure "image size" "$((bytes / 1000000))" MB
}

# stand_in NAME IMAGE FILES...: docker/local/NAME.Dockerfile built with FILES as its context
stand_in() {
  local name=$1 image=$2; shift 2
  local context=$WORK/context-$name
  rm -rf "$context" && mkdir -p "$context"
  (($# == 0)) || cp -r "$@" "$context/"
  log "stand-in: building $image"
  run_logged "build-$name" docker build --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    -f "$ROOT/docker/local/$name.Dockerfile" -t "$image" "$context"
}

build_stand_ins() {
  # FerretDB's binary and ElasticMQ's jars, as scripts/stack.sh builds and caches them (in a
  # subshell: sourcing it defines its own log, die and paths).
  (
    # shellcheck source=/dev/null
    source "$ROOT/scripts/stack.sh"
    ferretdb_build
    elasticmq_fetch
  )
  stand_in ferretdb "$FERRETDB_IMAGE" "$ROOT/.stack/bin/ferretdb" "$ROOT/docker/local/ferretdb-start.sh"
  stand_in elasticmq "$ELASTICMQ_IMAGE" "$ROOT/.stack/elasticmq/lib"
  stand_in prometheus "$PROMETHEUS_IMAGE"
}

# ---------------------------------------------------------------- compose v2

# compose v2 is not in Debian: built from its Go module. Its go.mod has exclude directives,
# which `go install pkg@version` refuses, so a wrapper module repeats them.
build_compose() {
  [[ -x "$COMPOSE_BIN" ]] && return 0
  command -v go >/dev/null || die "go not found (expected /usr/local/go/bin/go)"
  local module=github.com/docker/compose/v5 src mod t0
  t0=$(now)
  src=$(mktemp -d /var/tmp/compose-build.XXXXXX)
  log "compose: building $module $COMPOSE_VERSION from its Go module (~3 min, once)"
  mod=$(cd "$src" && GOFLAGS=-mod=mod go mod download -json "$module@$COMPOSE_VERSION" \
    | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  [[ -f "$mod" ]] || die "go mod download of $module@$COMPOSE_VERSION failed"
  {
    echo "module local/compose-build"
    sed -n 's/^go /go /p' "$mod"
    echo "require $module $COMPOSE_VERSION"
    awk '/^exclude \(/, /^\)/' "$mod"
  } >"$src/go.mod"
  (
    cd "$src"
    GOTOOLCHAIN=local GOFLAGS=-mod=mod go get "$module/cmd@$COMPOSE_VERSION"
    GOTOOLCHAIN=local GOFLAGS=-mod=mod go build -trimpath \
      -ldflags "-w -X $module/internal.Version=$COMPOSE_VERSION" -o docker-compose "$module/cmd"
  ) >"$LOGS/compose-build.log" 2>&1 || {
    tail -n 30 "$LOGS/compose-build.log" >&2
    die "building compose failed (log: $LOGS/compose-build.log)"
  }
  mkdir -p "$CACHE"
  mv "$src/docker-compose" "$COMPOSE_BIN.tmp.$$" && mv "$COMPOSE_BIN.tmp.$$" "$COMPOSE_BIN"
  rm -rf "$src"
  figure "compose $COMPOSE_VERSION built" "$(since "$t0")" s
}

# `docker compose` for this run only: a CLI plugin folder of its own, nothing in ~/.docker.
use_compose() {
  export DOCKER_CONFIG=$WORK/docker-config
  mkdir -p "$DOCKER_CONFIG/cli-plugins"
  ln -sfn "$COMPOSE_BIN" "$DOCKER_CONFIG/cli-plugins/docker-compose"
  docker compose version >/dev/null || die "docker compose does not run ($COMPOSE_BIN)"
  log "compose: $(docker compose version)"
  # The user's file, as users run it, stays valid under compose v2.
  (cd "$ROOT" && run_logged compose-config docker compose -f docker-compose.yml config -q)
  figure "docker compose config (docker-compose.yml, compose $COMPOSE_VERSION)" valid
}

# ---------------------------------------------------------------- checks

check_rules() {
  local mount=(--rm --network none -v "$ROOT/docker:/rules:ro" --entrypoint promtool "$PROMETHEUS_IMAGE")
  run_logged promtool-check docker run "${mount[@]}" check rules /rules/prometheus-rules.yml
  run_logged promtool-test docker run "${mount[@]}" test rules /rules/prometheus-rules.test.yml
  local cases
  cases=$("$PY" -m scripts.container_check rule-cases)
  figure "promtool check rules + test rules" "passed ($cases)"
}

# The servers scripts/stack.sh runs: the ones that answer, or started here (and stopped after).
STACK_STARTED=""
use_stack() {
  eval "$(bash "$ROOT/scripts/stack.sh" env)"
  if ! "$PY" -m scripts.container_check stack-answers; then
    log "stack: starting the local servers (scripts/stack.sh up)"
    bash "$ROOT/scripts/stack.sh" up
    STACK_STARTED=1
    eval "$(bash "$ROOT/scripts/stack.sh" env)"
  fi
}

cleanup() {
  local status=$?
  set +e
  if [[ -n "${COMPOSE_UP:-}" ]]; then
    "$PY" -m scripts.container_check compose-down >&2
  fi
  docker ps -aq --filter label=ingest-container-check | xargs -r docker rm -f >/dev/null 2>&1
  [[ -z "$STACK_STARTED" ]] || bash "$ROOT/scripts/stack.sh" down
  stop_engine
  exit "$status"
}

main() {
  cd "$ROOT"  # python -m scripts.container_check
  [[ -x "$PY" ]] || die "no virtualenv at $ROOT/.venv: run make venv (make container-check does)"
  rm -rf "$LOGS" "$RESULTS"
  mkdir -p "$LOGS" "$CACHE"
  local t0
  t0=$(now)
  trap cleanup EXIT
  start_engine
  make_base_image
  build_app_image
  build_stand_ins
  build_compose
  use_compose
  check_rules
  use_stack
  "$PY" -m scripts.container_check image --results "$RESULTS"
  COMPOSE_UP=1
  "$PY" -m scripts.container_check compose --results "$RESULTS"
  COMPOSE_UP=""
  figure "make container-check, all stages" "$(since "$t0")" s
  "$PY" -m scripts.container_check summary --results "$RESULTS"
}

main "$@"
