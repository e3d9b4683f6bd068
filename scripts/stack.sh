#!/usr/bin/env bash
# scripts/stack.sh - local server stack for the ingest project (no Docker needed).
#
#   bash scripts/stack.sh up       start (building/fetching on first use) and wait until ready
#   bash scripts/stack.sh down     stop what we started (data is kept)
#   bash scripts/stack.sh status   what runs where and whose it is, and the backlog SQS holds
#                                  (always exits 0)
#   bash scripts/stack.sh env      export lines; use as: eval "$(bash scripts/stack.sh env)"
#
# Services (all on 127.0.0.1 only):
#   SQS      ElasticMQ 1.7.1 (Maven Central), in-memory, no queues pre-created (`ingest init
#            --queue-name ingest-records` creates the queue, its dead-letter queue and the
#            redrive policy, as on AWS), port STACK_SQS_PORT (default 9324). Region us-east-1,
#            account 000000000000. Every message lives on ElasticMQ's Java heap: the heap is a
#            quarter of the machine's memory (at least 512 MiB, at most 8 GiB), or
#            STACK_SQS_HEAP (MiB, or with a unit: 1536m, 4g); .stack/run/elasticmq.heap says which.
#   S3       moto's server (moto[server], in the project's virtual environment: `make venv`),
#            in-memory, on port STACK_S3_PORT (default 9325), for the payloads of records too
#            large for one SQS message; no bucket pre-created (`ingest init --payload-bucket`).
#   MongoDB  FerretDB v1.24.2 (built from the Go module) on port STACK_MONGO_PORT (default 27017),
#            backed by PostgreSQL 15 on port STACK_PG_PORT (default 54329), database "ferretdb".
#            An event trigger adds a GIN index on (_jsonb->'_id') to every collection table so
#            that FerretDB's _id lookups (upserts) do not scan the whole table.
#
# If AWS_ENDPOINT_URL_SQS is already set (to something other than our own URL) no SQS is started;
# likewise AWS_ENDPOINT_URL_S3 and S3; if INGEST_MONGO_URI is already set (likewise) no
# PostgreSQL/FerretDB is started; `env` prints such external values unchanged.
#
# Everything (data, logs, pids, built binaries) lives in .stack/ at the repo root (git-ignored).
# Exception: if the postgres system user cannot write inside the checkout, PostgreSQL's data goes
# to /tmp/ingest-stack-pg-<sha1(repo path)[:12]> (status says so).
# Cross-clone cache: ${XDG_CACHE_HOME:-$HOME/.cache}/ingest-stack (FerretDB binary, ElasticMQ jars).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK=$ROOT/.stack
RUN=$STACK/run
LOGS=$STACK/logs
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/ingest-stack

SQS_PORT=${STACK_SQS_PORT:-9324}
S3_PORT=${STACK_S3_PORT:-9325}
MONGO_PORT=${STACK_MONGO_PORT:-27017}
PG_PORT=${STACK_PG_PORT:-54329}
START_TIMEOUT=${STACK_START_TIMEOUT:-90}

PG_BIN=/usr/lib/postgresql/15/bin
ELASTICMQ_VERSION=1.7.1
FERRETDB_VERSION=v1.24.2
QUEUE_NAME=ingest-records
ACCOUNT_ID=000000000000
REGION=us-east-1

export PATH="$PATH:/usr/local/go/bin"
MOTO_SERVER=${STACK_MOTO_SERVER:-$ROOT/.venv/bin/moto_server}

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- helpers

pid_alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }

# read_pid NAME -> pid (empty when no pid file)
read_pid() { [[ -f "$RUN/$1.pid" ]] && head -n1 "$RUN/$1.pid" || true; }

# our_pid NAME MARKER -> prints pid if the recorded process is alive and its cmdline has MARKER
our_pid() {
  local pid
  pid=$(read_pid "$1")
  if pid_alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$2"; then
    echo "$pid"
  fi
}

# recorded port of a service we started (falls back to the configured one)
run_port() { if [[ -f "$RUN/$1.port" ]]; then cat "$RUN/$1.port"; else echo "$2"; fi; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_until DESCRIPTION LOGFILE PID CHECK-COMMAND...
wait_until() {
  local what=$1 logf=$2 pid=$3; shift 3
  local deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if [[ -n "$pid" ]] && ! pid_alive "$pid"; then
      fail_with_log "$what exited during startup" "$logf"
    fi
    sleep 0.3
  done
  fail_with_log "$what did not become ready within ${START_TIMEOUT}s" "$logf"
}

fail_with_log() {
  printf '[stack] ERROR: %s. Last lines of %s:\n' "$1" "$2" >&2
  tail -n 40 "$2" 2>/dev/null | sed 's/^/    | /' >&2 || true
  exit 1
}

# stop_pid NAME PID: TERM, wait up to 15 s, then KILL
stop_pid() {
  local name=$1 pid=$2 i
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 75; i++)); do pid_alive "$pid" || break; sleep 0.2; done
  if pid_alive "$pid"; then log "$name ($pid) did not stop, killing"; kill -KILL "$pid" 2>/dev/null || true; fi
}

# external SQS / Mongo: set in env and not pointing at our own default address
sqs_own_url() { echo "http://127.0.0.1:$SQS_PORT"; }
mongo_own_uri() { echo "mongodb://127.0.0.1:$MONGO_PORT/"; }
sqs_external() {
  [[ -n "${AWS_ENDPOINT_URL_SQS:-}" && "${AWS_ENDPOINT_URL_SQS%/}" != "$(sqs_own_url)" ]]
}
s3_own_url() { echo "http://127.0.0.1:$S3_PORT"; }
s3_external() {
  [[ -n "${AWS_ENDPOINT_URL_S3:-}" && "${AWS_ENDPOINT_URL_S3%/}" != "$(s3_own_url)" ]]
}
mongo_external() {
  [[ -n "${INGEST_MONGO_URI:-}" && "${INGEST_MONGO_URI%/}/" != "$(mongo_own_uri)" ]]
}

as_postgres() { (cd / && runuser -u postgres -- "$@"); }

# ---------------------------------------------------------------- SQS (ElasticMQ)

# ElasticMQ holds every message on its heap. Measured with 1.7.1: a 64 KiB message of ASCII
# text takes ~65 KiB live (twice that for text outside Latin-1), and the heap needs ~1.4x the
# live set, so 512 MiB died of OutOfMemoryError at ~5,800 queued (~400,000 records), while
# `python -m scripts.demo --records 1000000` can queue ~14,500 (~1 GiB live, measured with
# 15,200 held in a 6 GiB heap). On an OutOfMemoryError the JVM exits (the log says so)
# rather than answering some requests and not others.
SQS_HEAP_MIN_MB=512
SQS_HEAP_MAX_MB=8192

# sqs_heap_mb [MEMINFO]: ElasticMQ's heap in MiB: STACK_SQS_HEAP when set, otherwise a quarter
# of MemTotal from MEMINFO (default /proc/meminfo), between SQS_HEAP_MIN_MB and SQS_HEAP_MAX_MB.
sqs_heap_mb() {
  local meminfo=${1:-/proc/meminfo} kb mb
  if [[ -n "${STACK_SQS_HEAP:-}" ]]; then
    if [[ "$STACK_SQS_HEAP" =~ ^([0-9]+)([mMgG]?)$ ]]; then
      mb=$((10#${BASH_REMATCH[1]}))
      [[ "${BASH_REMATCH[2]}" == [gG] ]] && mb=$((mb * 1024))
      ((mb >= 64)) || die "STACK_SQS_HEAP=$STACK_SQS_HEAP is below 64 MiB; give e.g. 2048, 1536m or 4g"
      echo "$mb"
      return 0
    fi
    die "STACK_SQS_HEAP=$STACK_SQS_HEAP is not a size; give MiB (2048) or a unit (1536m, 4g)"
  fi
  kb=$(awk '$1 == "MemTotal:" { print $2; exit }' "$meminfo" 2>/dev/null || true)
  if [[ ! "$kb" =~ ^[0-9]+$ ]]; then
    log "SQS: no MemTotal in $meminfo; ElasticMQ gets ${SQS_HEAP_MIN_MB} MiB (set STACK_SQS_HEAP)"
    echo "$SQS_HEAP_MIN_MB"
    return 0
  fi
  mb=$((kb / 1024 / 4))
  ((mb >= SQS_HEAP_MIN_MB)) || mb=$SQS_HEAP_MIN_MB
  ((mb <= SQS_HEAP_MAX_MB)) || mb=$SQS_HEAP_MAX_MB
  echo "$mb"
}

# java_heap PID: the -Xmx a java process was started with (empty when none)
java_heap() {
  tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | sed -n 's/^-Xmx//p' | tail -n1 || true
}

# rss_mb PID: resident memory in MiB (empty when unknown)
rss_mb() { awk '$1 == "VmRSS:" { print int($2 / 1024); exit }' "/proc/$1/status" 2>/dev/null || true; }

# listening_pid PORT: the process listening on 127.0.0.1:PORT (empty when unknown)
listening_pid() {
  command -v ss >/dev/null || return 0
  ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2 || true
}

EMQ_DIR=$STACK/elasticmq
EMQ_LIB=$EMQ_DIR/lib
EMQ_CACHE=$CACHE/elasticmq-$ELASTICMQ_VERSION

sqs_sqs_check() { curl -sf -m 2 "http://127.0.0.1:$1/?Action=ListQueues" >/dev/null; }

elasticmq_fetch() {
  [[ -f "$EMQ_LIB/.complete" ]] && return 0
  mkdir -p "$EMQ_DIR"
  rm -rf "$EMQ_LIB"
  if [[ -f "$EMQ_CACHE/lib/.complete" ]]; then
    log "ElasticMQ: copying jars from cache $EMQ_CACHE"
    cp -r "$EMQ_CACHE/lib" "$EMQ_LIB"
    return 0
  fi
  command -v mvn >/dev/null || die "mvn (Maven) not found; install it (apt-get install -y maven)"
  log "ElasticMQ: resolving org.elasticmq:elasticmq-server_2.13:$ELASTICMQ_VERSION with Maven"
  cat >"$EMQ_DIR/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.stack</groupId>
  <artifactId>elasticmq-runner</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.elasticmq</groupId>
      <artifactId>elasticmq-server_2.13</artifactId>
      <version>$ELASTICMQ_VERSION</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>3.6.1</version>
      </plugin>
    </plugins>
  </build>
</project>
EOF
  mkdir -p "$LOGS"
  if ! (cd "$EMQ_DIR" && mvn -q -B dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory=lib.tmp) >"$LOGS/elasticmq-fetch.log" 2>&1; then
    fail_with_log "Maven could not fetch ElasticMQ" "$LOGS/elasticmq-fetch.log"
  fi
  mv "$EMQ_DIR/lib.tmp" "$EMQ_LIB"
  touch "$EMQ_LIB/.complete"
  mkdir -p "$EMQ_CACHE"
  rm -rf "$EMQ_CACHE/lib.tmp" && cp -r "$EMQ_LIB" "$EMQ_CACHE/lib.tmp" \
    && rm -rf "$EMQ_CACHE/lib" && mv "$EMQ_CACHE/lib.tmp" "$EMQ_CACHE/lib" || true
}

# elasticmq_conf [FILE]: ElasticMQ's configuration (default $EMQ_DIR/elasticmq.conf). The
# heredoc expands $SQS_PORT and the like, so it must hold no backticks and no $(...).
elasticmq_conf() {
  cat >"${1:-$EMQ_DIR/elasticmq.conf}" <<EOF
include classpath("application.conf")

node-address {
  protocol = http
  host = "127.0.0.1"
  port = $SQS_PORT
  context-path = ""
}
generate-node-address = false

rest-sqs {
  enabled = true
  bind-port = $SQS_PORT
  bind-hostname = "127.0.0.1"
  sqs-limits = strict
}

rest-stats {
  enabled = false
  bind-port = 0
  bind-hostname = "127.0.0.1"
}

aws {
  region = $REGION
  accountId = "$ACCOUNT_ID"
}

# No queues here: "ingest init" creates the queue and its dead-letter queue
# with the redrive policy, as it would on AWS.
queues {}
EOF
}

sqs_up() {
  if sqs_external; then
    log "SQS: external ($AWS_ENDPOINT_URL_SQS from env), not starting ElasticMQ"
    return 0
  fi
  local pid
  pid=$(our_pid elasticmq org.elasticmq.server.Main)
  if [[ -n "$pid" ]]; then
    local p; p=$(run_port elasticmq "$SQS_PORT")
    [[ "$p" == "$SQS_PORT" ]] || die "ElasticMQ already runs on port $p (pid $pid), not $SQS_PORT; run down first"
    wait_until "ElasticMQ" "$LOGS/elasticmq.log" "$pid" sqs_sqs_check "$SQS_PORT"
    log "SQS: ElasticMQ already running (pid $pid) at http://127.0.0.1:$SQS_PORT"
    return 0
  fi
  port_open "$SQS_PORT" && die "port $SQS_PORT is in use by something else; set STACK_SQS_PORT or AWS_ENDPOINT_URL_SQS"
  command -v java >/dev/null || die "java not found; install a JRE (apt-get install -y default-jre-headless)"
  local heap
  heap=$(sqs_heap_mb)
  elasticmq_fetch
  elasticmq_conf
  mkdir -p "$LOGS" "$RUN"
  log "SQS: starting ElasticMQ on 127.0.0.1:$SQS_PORT (heap ${heap} MiB)"
  echo "=== stack.sh up $(date -u +%FT%TZ): ElasticMQ on 127.0.0.1:$SQS_PORT, heap ${heap} MiB ===" >>"$LOGS/elasticmq.log"
  (
    cd "$EMQ_DIR"
    exec setsid nohup java -Xms64m -Xmx"${heap}m" -XX:+ExitOnOutOfMemoryError \
      -Dconfig.file="$EMQ_DIR/elasticmq.conf" \
      -cp "$EMQ_LIB/*" org.elasticmq.server.Main >>"$LOGS/elasticmq.log" 2>&1 </dev/null
  ) &
  pid=$!
  echo "$pid" >"$RUN/elasticmq.pid"
  echo "$SQS_PORT" >"$RUN/elasticmq.port"
  echo "$heap" >"$RUN/elasticmq.heap"
  wait_until "ElasticMQ" "$LOGS/elasticmq.log" "$pid" sqs_sqs_check "$SQS_PORT"
  log "SQS: ElasticMQ ready (pid $pid) at http://127.0.0.1:$SQS_PORT"
}

sqs_down() {
  local pid; pid=$(our_pid elasticmq org.elasticmq.server.Main)
  if [[ -n "$pid" ]]; then
    log "SQS: stopping ElasticMQ (pid $pid)"
    stop_pid ElasticMQ "$pid"
  fi
  rm -f "$RUN/elasticmq.pid" "$RUN/elasticmq.port" "$RUN/elasticmq.heap"
}

# sqs_queue_urls BASE_URL: every queue's URL, one a line, from the query API's ListQueues
# (ElasticMQ lists them all in one answer); fails when the server does not answer.
sqs_queue_urls() {
  local page
  page=$(curl -sf -m 10 "${1%/}/?Action=ListQueues") || return 1
  printf '%s' "$page" | grep -o '<QueueUrl>[^<]*</QueueUrl>' | sed 's/<[^>]*>//g' || true
}

# sqs_backlog BASE_URL: one line, the messages held over all queues (visible + in flight) from
# ListQueues and GetQueueAttributes; fails when the server does not answer.
sqs_backlog() {
  local urls queues attrs totals
  urls=$(sqs_queue_urls "$1") || return 1
  queues=$(printf '%s' "$urls" | awk 'NF { n++ } END { print n + 0 }')
  attrs=""
  if ((queues > 0)); then
    # One curl for all queues (a queue deleted meanwhile answers an error: skipped).
    attrs=$(printf '%s\n' "$urls" \
      | sed 's|.*|url = "&?Action=GetQueueAttributes\&AttributeName.1=ApproximateNumberOfMessages\&AttributeName.2=ApproximateNumberOfMessagesNotVisible"|' \
      | curl -s -m 60 -K - 2>/dev/null || true)
  fi
  totals=$(printf '%s' "$attrs" | tr -d '\n' \
    | { grep -o '<Name>ApproximateNumberOfMessages[A-Za-z]*</Name>[[:space:]]*<Value>[0-9]*</Value>' || true; } \
    | sed 's/<Name>\([A-Za-z]*\)<\/Name>[[:space:]]*<Value>\([0-9]*\)<\/Value>/\1 \2/' \
    | awk '$1 == "ApproximateNumberOfMessages" { v += $2 } $1 == "ApproximateNumberOfMessagesNotVisible" { f += $2 }
           END { printf "%d %d", v, f }')
  local visible=${totals% *} in_flight=${totals#* }
  echo "$((visible + in_flight)) messages ($visible visible, $in_flight in flight) in $queues queues"
}

# sqs_backlog_line BASE_URL PID: the status line for an ElasticMQ's backlog and heap
sqs_backlog_line() {
  local backlog heap="" rss=""
  backlog=$(sqs_backlog "$1") || { echo "sqs:      backlog unknown: $1 does not answer ListQueues"; return 0; }
  if [[ -n "$2" ]]; then heap=$(java_heap "$2"); rss=$(rss_mb "$2"); fi
  if [[ -n "$heap" ]]; then
    echo "sqs:      backlog $backlog; heap -Xmx$heap${rss:+ (resident ${rss} MiB)}"
  else
    echo "sqs:      backlog $backlog; heap unknown"
  fi
}

sqs_status() {
  if sqs_external; then
    echo "sqs:      external (from env) at $AWS_ENDPOINT_URL_SQS"
    # A local ElasticMQ answers the unsigned query API; real SQS does not (then no line).
    local b
    b=$(sqs_backlog "$AWS_ENDPOINT_URL_SQS" 2>/dev/null) && echo "sqs:      backlog $b"
    return 0
  fi
  local pid; pid=$(our_pid elasticmq org.elasticmq.server.Main)
  if [[ -n "$pid" ]]; then
    local p; p=$(run_port elasticmq "$SQS_PORT")
    local ok=answering; sqs_sqs_check "$p" || ok="NOT answering"
    echo "sqs:      ours, ElasticMQ $ELASTICMQ_VERSION at http://127.0.0.1:$p (pid $pid, $ok), log $LOGS/elasticmq.log"
    [[ "$ok" == answering ]] && sqs_backlog_line "http://127.0.0.1:$p" "$pid"
  elif sqs_sqs_check "$SQS_PORT"; then
    # Started from another checkout (or by hand): not ours to stop, but it is what `env` points at.
    pid=$(listening_pid "$SQS_PORT")
    local who="pid ${pid:-unknown}"
    [[ -n "$pid" ]] && ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF org.elasticmq.server.Main \
      && pid="" && who="not ElasticMQ"
    echo "sqs:      not ours: an SQS server answers at http://127.0.0.1:$SQS_PORT ($who; started elsewhere, down leaves it running)"
    sqs_backlog_line "http://127.0.0.1:$SQS_PORT" "$pid"
  elif [[ -n "$(read_pid elasticmq)" ]]; then
    # Started by up, gone without down: say why when the log knows.
    local why="see $LOGS/elasticmq.log"
    if tail -n 20 "$LOGS/elasticmq.log" 2>/dev/null | grep -q OutOfMemoryError; then
      why="it ran out of heap (${RUN}/elasticmq.heap: $(cat "$RUN/elasticmq.heap" 2>/dev/null || echo '?') MiB); raise STACK_SQS_HEAP and run up again"
    fi
    echo "sqs:      not running: ElasticMQ (pid $(read_pid elasticmq)) died; $why"
  else
    echo "sqs:      not running"
  fi
}

# ---------------------------------------------------------------- S3 (moto's server)

# s3_check PORT: an S3 server answers ListBuckets there
s3_check() { curl -sf -m 2 "http://127.0.0.1:$1/" >/dev/null; }

s3_up() {
  if s3_external; then
    log "S3: external ($AWS_ENDPOINT_URL_S3 from env), not starting moto's server"
    return 0
  fi
  local pid
  pid=$(our_pid moto moto_server)
  if [[ -n "$pid" ]]; then
    local p; p=$(run_port moto "$S3_PORT")
    [[ "$p" == "$S3_PORT" ]] || die "moto's server already runs on port $p (pid $pid), not $S3_PORT; run down first"
    wait_until "moto's server" "$LOGS/moto.log" "$pid" s3_check "$S3_PORT"
    log "S3: moto's server already running (pid $pid) at http://127.0.0.1:$S3_PORT"
    return 0
  fi
  port_open "$S3_PORT" && die "port $S3_PORT is in use by something else; set STACK_S3_PORT or AWS_ENDPOINT_URL_S3"
  [[ -x "$MOTO_SERVER" ]] || die "$MOTO_SERVER not found; run make venv (moto[server] is in the dev extra)"
  mkdir -p "$LOGS" "$RUN"
  log "S3: starting moto's server on 127.0.0.1:$S3_PORT"
  echo "=== stack.sh up $(date -u +%FT%TZ): moto's server on 127.0.0.1:$S3_PORT ===" >>"$LOGS/moto.log"
  (
    cd "$STACK"
    exec setsid nohup "$MOTO_SERVER" -H 127.0.0.1 -p "$S3_PORT" >>"$LOGS/moto.log" 2>&1 </dev/null
  ) &
  pid=$!
  echo "$pid" >"$RUN/moto.pid"
  echo "$S3_PORT" >"$RUN/moto.port"
  wait_until "moto's server" "$LOGS/moto.log" "$pid" s3_check "$S3_PORT"
  log "S3: moto's server ready (pid $pid) at http://127.0.0.1:$S3_PORT"
}

s3_down() {
  local pid; pid=$(our_pid moto moto_server)
  if [[ -n "$pid" ]]; then
    log "S3: stopping moto's server (pid $pid)"
    stop_pid "moto's server" "$pid"
  fi
  rm -f "$RUN/moto.pid" "$RUN/moto.port"
}

s3_status() {
  if s3_external; then
    echo "s3:       external (from env) at $AWS_ENDPOINT_URL_S3"
    return 0
  fi
  local pid; pid=$(our_pid moto moto_server)
  if [[ -n "$pid" ]]; then
    local p; p=$(run_port moto "$S3_PORT")
    local ok=answering; s3_check "$p" || ok="NOT answering"
    echo "s3:       ours, moto's server at http://127.0.0.1:$p (pid $pid, $ok), log $LOGS/moto.log"
  elif s3_check "$S3_PORT"; then
    echo "s3:       not ours: an S3 server answers at http://127.0.0.1:$S3_PORT (started elsewhere, down leaves it running)"
  elif [[ -n "$(read_pid moto)" ]]; then
    echo "s3:       not running: moto's server (pid $(read_pid moto)) died; see $LOGS/moto.log"
  else
    echo "s3:       not running"
  fi
}

# ---------------------------------------------------------------- PostgreSQL

PG_BASE_CACHED=""
# pg_base: folder owned by postgres holding data/, the socket and the log
pg_base() {
  if [[ -n "$PG_BASE_CACHED" ]]; then echo "$PG_BASE_CACHED"; return; fi
  local d=$STACK/pg
  mkdir -p "$d"
  chown postgres:postgres "$d" && chmod 700 "$d"
  if ! as_postgres test -w "$d" -a -x "$d"; then
    d=/tmp/ingest-stack-pg-$(printf '%s' "$ROOT" | sha1sum | cut -c1-12)
    mkdir -p "$d"
    chown postgres:postgres "$d" && chmod 700 "$d"
  fi
  PG_BASE_CACHED=$d
  echo "$d"
}

# read-only variant for status/down: never creates folders
pg_base_existing() {
  local d=$STACK/pg t
  t=/tmp/ingest-stack-pg-$(printf '%s' "$ROOT" | sha1sum | cut -c1-12)
  if [[ -f "$d/data/PG_VERSION" ]]; then echo "$d"
  elif [[ -f "$t/data/PG_VERSION" ]]; then echo "$t"
  fi
}

pg_ensure_installed() {
  [[ -x "$PG_BIN/postgres" ]] && return 0
  log "PostgreSQL 15 not found; installing with apt-get"
  apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql >&2
  [[ -x "$PG_BIN/postgres" ]] || die "PostgreSQL 15 binaries still missing at $PG_BIN"
}

pg_running_pid() {
  local base=$1 pid
  [[ -f "$base/data/postmaster.pid" ]] || return 0
  pid=$(head -n1 "$base/data/postmaster.pid")
  if pid_alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q postgres; then echo "$pid"; fi
}

pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$1" -U postgres; }

psql_pg() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"; }

pg_setup_sql() {
  if [[ "$(psql_pg -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'ferretdb'")" != 1 ]]; then
    psql_pg -d postgres -c "CREATE DATABASE ferretdb"
  fi
  psql_pg -d ferretdb >/dev/null <<'SQL'
ALTER DATABASE ferretdb SET plan_cache_mode = force_custom_plan;

-- FerretDB looks documents up by _id as `_jsonb->$1 @> $2`; its own btree _id index cannot serve
-- that, so every collection table gets a GIN index on (_jsonb->'_id').
CREATE OR REPLACE FUNCTION public.ingest_stack_add_id_gin() RETURNS event_trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  obj record;
  rel name;
BEGIN
  FOR obj IN
    SELECT * FROM pg_event_trigger_ddl_commands()
    WHERE command_tag = 'CREATE TABLE' AND object_type = 'table'
  LOOP
    SELECT relname INTO rel FROM pg_class WHERE oid = obj.objid;
    -- only collection tables (they have a _jsonb column); skip FerretDB's own metadata table
    IF rel NOT LIKE '\_ferretdb\_%' AND EXISTS (SELECT 1 FROM pg_attribute
               WHERE attrelid = obj.objid AND attname = '_jsonb' AND NOT attisdropped) THEN
      EXECUTE format(
        'CREATE INDEX IF NOT EXISTS %I ON %s USING gin ((_jsonb->''_id'') jsonb_path_ops) WITH (fastupdate = off)',
        left(rel, 40) || '_idgin_' || left(md5(rel), 8), obj.object_identity);
    END IF;
  END LOOP;
END
$fn$;

DROP EVENT TRIGGER IF EXISTS ingest_stack_add_id_gin;
CREATE EVENT TRIGGER ingest_stack_add_id_gin ON ddl_command_end
  WHEN TAG IN ('CREATE TABLE')
  EXECUTE FUNCTION public.ingest_stack_add_id_gin();

-- tables created before the trigger existed
DO $do$
DECLARE t record;
BEGIN
  FOR t IN
    SELECT c.oid, c.relname, format('%I.%I', n.nspname, c.relname) AS ident
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = '_jsonb' AND NOT a.attisdropped
    WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND c.relname NOT LIKE '\_ferretdb\_%'
  LOOP
    EXECUTE format(
      'CREATE INDEX IF NOT EXISTS %I ON %s USING gin ((_jsonb->''_id'') jsonb_path_ops) WITH (fastupdate = off)',
      left(t.relname, 40) || '_idgin_' || left(md5(t.relname), 8), t.ident);
  END LOOP;
END
$do$;
SQL
}

pg_up() {
  pg_ensure_installed
  local base data pid sockdir
  base=$(pg_base)
  data=$base/data
  [[ "$base" == "$STACK/pg" ]] || log "PostgreSQL: postgres user cannot write in $ROOT; data kept in $base"
  mkdir -p "$LOGS" "$RUN"
  ln -sfn "$base/postgres.log" "$LOGS/postgres.log"

  pid=$(pg_running_pid "$base")
  if [[ -n "$pid" ]]; then
    local p; p=$(sed -n 4p "$data/postmaster.pid")
    [[ "$p" == "$PG_PORT" ]] || die "our PostgreSQL already runs on port $p (pid $pid), not $PG_PORT; run down first"
    wait_until "PostgreSQL" "$base/postgres.log" "$pid" pg_ready "$PG_PORT"
    echo "$pid" >"$RUN/postgres.pid"
    pg_setup_sql
    log "PostgreSQL: already running (pid $pid) at 127.0.0.1:$PG_PORT"
    return 0
  fi
  port_open "$PG_PORT" && die "port $PG_PORT is in use by something else; set STACK_PG_PORT"

  if [[ ! -f "$data/PG_VERSION" ]]; then
    log "PostgreSQL: initdb in $data"
    rm -rf "$data"
    as_postgres "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C \
      >"$base/initdb.log" 2>&1 || fail_with_log "initdb failed" "$base/initdb.log"
    echo "include_if_exists = 'stack.conf'" >>"$data/postgresql.conf"
  fi
  sockdir=$base
  ((${#sockdir} <= 80)) || sockdir=/tmp
  cat >"$data/stack.conf" <<EOF
# written by scripts/stack.sh on every up. FerretDB 1.24 deadlocks when its pool (50 by
# default) runs dry under many clients: it gets 300, PostgreSQL room for them.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$sockdir'
synchronous_commit = off
shared_buffers = 256MB
max_connections = 400
EOF
  chown postgres:postgres "$data/stack.conf"
  log "PostgreSQL: starting on 127.0.0.1:$PG_PORT"
  as_postgres setsid "$PG_BIN/pg_ctl" -D "$data" -l "$base/postgres.log" -w -t "$START_TIMEOUT" start \
    >>"$base/pg_ctl.log" 2>&1 || fail_with_log "PostgreSQL did not start" "$base/postgres.log"
  pid=$(pg_running_pid "$base")
  echo "$pid" >"$RUN/postgres.pid"
  wait_until "PostgreSQL" "$base/postgres.log" "$pid" pg_ready "$PG_PORT"
  pg_setup_sql
  log "PostgreSQL: ready (pid $pid) at 127.0.0.1:$PG_PORT, data $data"
}

pg_down() {
  local base; base=$(pg_base_existing)
  if [[ -n "$base" && -n "$(pg_running_pid "$base")" ]]; then
    log "PostgreSQL: stopping (pg_ctl stop -m fast)"
    as_postgres "$PG_BIN/pg_ctl" -D "$base/data" -m fast -w -t 60 stop >&2 || true
  fi
  rm -f "$RUN/postgres.pid"
}

pg_status() {
  local base pid p
  base=$(pg_base_existing)
  if [[ -n "$base" ]]; then pid=$(pg_running_pid "$base"); fi
  if [[ -n "${pid:-}" ]]; then
    p=$(sed -n 4p "$base/data/postmaster.pid")
    local where="data $base/data"
    [[ "$base" == "$STACK/pg" ]] || where="data $base/data (temporary folder: postgres user cannot write in the checkout)"
    echo "postgres: ours, PostgreSQL 15 at postgres://postgres@127.0.0.1:$p/ferretdb (pid $pid), $where"
  elif mongo_external; then
    echo "postgres: not needed (Mongo is external)"
  else
    echo "postgres: not running${base:+ (data in $base/data)}"
  fi
}

# ---------------------------------------------------------------- MongoDB (FerretDB)

FDB_BIN=$STACK/bin/ferretdb
FDB_CACHE=$CACHE/ferretdb-$FERRETDB_VERSION

ferretdb_build() {
  [[ -x "$FDB_BIN" ]] && return 0
  mkdir -p "$STACK/bin" "$LOGS"
  if [[ -x "$FDB_CACHE" ]]; then
    log "FerretDB: copying binary from cache $FDB_CACHE"
    cp "$FDB_CACHE" "$FDB_BIN.tmp" && mv "$FDB_BIN.tmp" "$FDB_BIN"
    return 0
  fi
  command -v go >/dev/null || die "go not found (expected /usr/local/go/bin/go)"
  local blog=$LOGS/ferretdb-build.log src=$STACK/build/ferretdb-src dir
  log "FerretDB: building $FERRETDB_VERSION from the Go module (first time ~1-2 min), log $blog"
  : >"$blog"
  dir=$(GOFLAGS=-mod=mod go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" 2>>"$blog" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p') || true
  [[ -n "$dir" && -d "$dir" ]] || fail_with_log "go mod download of FerretDB failed" "$blog"
  rm -rf "$src"
  mkdir -p "$(dirname "$src")"
  cp -r "$dir" "$src"
  chmod -R u+w "$src"
  printf '%s\n' "$FERRETDB_VERSION" >"$src/build/version/version.txt"
  (cd "$src" && GOTOOLCHAIN=local go build -o "$FDB_BIN.tmp" ./cmd/ferretdb) >>"$blog" 2>&1 \
    || fail_with_log "go build of FerretDB failed" "$blog"
  mv "$FDB_BIN.tmp" "$FDB_BIN"
  mkdir -p "$(dirname "$FDB_CACHE")"
  cp "$FDB_BIN" "$FDB_CACHE.tmp.$$" && mv "$FDB_CACHE.tmp.$$" "$FDB_CACHE" || true
  log "FerretDB: built $FDB_BIN"
}

# mongo_ping PORT: MongoDB OP_MSG {ping: 1} with the python stdlib (falls back to a TCP connect)
mongo_ping() {
  if ! command -v python3 >/dev/null; then port_open "$1"; return; fi
  python3 - "$1" <<'PY'
import socket, struct, sys
port = int(sys.argv[1])
def cstr(s): return s.encode() + b"\0"
body = b"\x10" + cstr("ping") + struct.pack("<i", 1) + b"\x02" + cstr("$db") + struct.pack("<i", 6) + cstr("admin") + b"\0"
doc = struct.pack("<i", len(body) + 4) + body
msg = struct.pack("<I", 0) + b"\0" + doc
hdr = struct.pack("<iiii", 16 + len(msg), 1, 0, 2013)
s = socket.create_connection(("127.0.0.1", port), timeout=3)
s.sendall(hdr + msg)
buf = b""
while len(buf) < 4 or len(buf) < struct.unpack("<i", buf[:4])[0]:
    chunk = s.recv(65536)
    if not chunk: sys.exit(1)
    buf += chunk
# reply document must contain ok: 1.0 (double)
sys.exit(0 if b"\x01ok\x00" + struct.pack("<d", 1.0) in buf else 1)
PY
}

mongo_answers() {
  local tries
  for tries in 1 2 3 4 5; do
    mongo_ping "$1" 2>/dev/null && return 0
    sleep 1
  done
  return 1
}

mongo_up() {
  if mongo_external; then
    log "Mongo: external ($INGEST_MONGO_URI from env), not starting PostgreSQL/FerretDB"
    return 0
  fi
  pg_up
  local pid
  pid=$(our_pid ferretdb "$FDB_BIN")
  if [[ -n "$pid" ]]; then
    local p; p=$(run_port ferretdb "$MONGO_PORT")
    [[ "$p" == "$MONGO_PORT" ]] || die "FerretDB already runs on port $p (pid $pid), not $MONGO_PORT; run down first"
    if mongo_answers "$MONGO_PORT"; then
      log "Mongo: FerretDB already running (pid $pid) at mongodb://127.0.0.1:$MONGO_PORT/"
      return 0
    fi
    # Seen here once under heavy concurrent load: FerretDB 1.24 kept its port open but
    # stopped answering. A restart recovers it; the data lives in PostgreSQL.
    log "Mongo: FerretDB (pid $pid) does not answer ping; restarting it"
    stop_pid ferretdb "$pid"
    rm -f "$RUN/ferretdb.pid"
    local waited
    for waited in 1 2 3 4 5 6 7 8 9 10; do port_open "$MONGO_PORT" || break; sleep 0.5; done
  fi
  port_open "$MONGO_PORT" && die "port $MONGO_PORT is in use by something else; set STACK_MONGO_PORT or INGEST_MONGO_URI"
  ferretdb_build
  mkdir -p "$STACK/ferretdb-state" "$LOGS" "$RUN"
  log "Mongo: starting FerretDB on 127.0.0.1:$MONGO_PORT"
  echo "=== stack.sh up $(date -u +%FT%TZ): FerretDB on 127.0.0.1:$MONGO_PORT ===" >>"$LOGS/ferretdb.log"
  (
    cd "$STACK"
    exec setsid nohup "$FDB_BIN" \
      --handler=postgresql \
      --postgresql-url="postgres://postgres@127.0.0.1:$PG_PORT/ferretdb?pool_max_conns=300" \
      --listen-addr="127.0.0.1:$MONGO_PORT" \
      --debug-addr=- \
      --state-dir="$STACK/ferretdb-state" \
      --telemetry=disable \
      --log-level=warn \
      >>"$LOGS/ferretdb.log" 2>&1 </dev/null
  ) &
  pid=$!
  echo "$pid" >"$RUN/ferretdb.pid"
  echo "$MONGO_PORT" >"$RUN/ferretdb.port"
  wait_until "FerretDB" "$LOGS/ferretdb.log" "$pid" mongo_ping "$MONGO_PORT"
  log "Mongo: FerretDB ready (pid $pid) at mongodb://127.0.0.1:$MONGO_PORT/"
}

mongo_down() {
  local pid; pid=$(our_pid ferretdb "$FDB_BIN")
  if [[ -n "$pid" ]]; then
    log "Mongo: stopping FerretDB (pid $pid)"
    stop_pid FerretDB "$pid"
  fi
  rm -f "$RUN/ferretdb.pid" "$RUN/ferretdb.port"
  pg_down
}

mongo_status() {
  if mongo_external; then
    echo "mongo:    external (from env) at $INGEST_MONGO_URI"
  else
    local pid; pid=$(our_pid ferretdb "$FDB_BIN")
    if [[ -n "$pid" ]]; then
      local p; p=$(run_port ferretdb "$MONGO_PORT")
      local ok=answering; mongo_ping "$p" >/dev/null 2>&1 || ok="NOT answering"
      echo "mongo:    ours, FerretDB $FERRETDB_VERSION at mongodb://127.0.0.1:$p/ (pid $pid, $ok), log $LOGS/ferretdb.log"
    else
      echo "mongo:    not running"
    fi
  fi
  pg_status
}

# ---------------------------------------------------------------- commands

cmd_up() {
  local t0=$SECONDS
  mkdir -p "$STACK" "$RUN" "$LOGS"
  sqs_up
  s3_up
  mongo_up
  log "stack is up ($((SECONDS - t0)) s); use: eval \"\$(bash scripts/stack.sh env)\""
}

cmd_down() {
  sqs_down
  s3_down
  mongo_down
  log "stack is down (data kept)"
}

cmd_status() {
  sqs_status || true
  s3_status || true
  mongo_status || true
  return 0
}

emit() { printf 'export %s=%q\n' "$1" "$2"; }

cmd_env() {
  local sqs_url queue_url mongo_uri s3_url
  if sqs_external; then
    sqs_url=$AWS_ENDPOINT_URL_SQS
    queue_url=${INGEST_QUEUE_URL:-${AWS_ENDPOINT_URL_SQS%/}/$ACCOUNT_ID/$QUEUE_NAME}
  else
    local p; p=$SQS_PORT
    [[ -n "$(our_pid elasticmq org.elasticmq.server.Main)" ]] && p=$(run_port elasticmq "$SQS_PORT")
    sqs_url=http://127.0.0.1:$p
    queue_url=${INGEST_QUEUE_URL:-$sqs_url/$ACCOUNT_ID/$QUEUE_NAME}
  fi
  if s3_external; then
    s3_url=$AWS_ENDPOINT_URL_S3
  else
    local s; s=$S3_PORT
    [[ -n "$(our_pid moto moto_server)" ]] && s=$(run_port moto "$S3_PORT")
    s3_url=http://127.0.0.1:$s
  fi
  if mongo_external; then
    mongo_uri=$INGEST_MONGO_URI
  else
    local m; m=$MONGO_PORT
    [[ -n "$(our_pid ferretdb "$FDB_BIN")" ]] && m=$(run_port ferretdb "$MONGO_PORT")
    mongo_uri=mongodb://127.0.0.1:$m/
  fi
  emit AWS_ENDPOINT_URL_SQS "$sqs_url"
  emit AWS_ENDPOINT_URL_S3 "$s3_url"
  emit AWS_DEFAULT_REGION "${AWS_DEFAULT_REGION:-$REGION}"
  emit AWS_ACCESS_KEY_ID "${AWS_ACCESS_KEY_ID:-x}"
  emit AWS_SECRET_ACCESS_KEY "${AWS_SECRET_ACCESS_KEY:-x}"
  emit INGEST_MONGO_URI "$mongo_uri"
  emit INGEST_DATABASE "${INGEST_DATABASE:-ingest}"
  emit INGEST_QUEUE_URL "$queue_url"
}

usage() {
  echo "usage: bash scripts/stack.sh up|down|status|env" >&2
  echo "  ports: STACK_SQS_PORT (9324) STACK_S3_PORT (9325) STACK_MONGO_PORT (27017) STACK_PG_PORT (54329)" >&2
}

# Sourced (the tests call its functions), it only defines them.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    -h | --help | help) usage ;;
    *) usage; exit 2 ;;
  esac
fi
