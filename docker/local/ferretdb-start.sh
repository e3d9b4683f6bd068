#!/bin/bash
# PostgreSQL (Unix socket only), then FerretDB on FERRETDB_LISTEN (default 127.0.0.1:27017).
# SIGTERM stops both: FerretDB first, then PostgreSQL with a fast (clean) shutdown.
set -euo pipefail
LISTEN=${FERRETDB_LISTEN:-127.0.0.1:27017}
PG=/usr/lib/postgresql/15/bin
DATA=/data/db/pg
SOCKETS=/run/postgresql

log() { printf '[ferretdb-start] %s\n' "$*" >&2; }
as_postgres() { runuser -u postgres -- "$@"; }

mkdir -p "$DATA" "$SOCKETS"
chown postgres:postgres "$DATA" "$SOCKETS"
chmod 700 "$DATA"
if [[ ! -f "$DATA/PG_VERSION" ]]; then
  log "initdb in $DATA"
  as_postgres "$PG/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
fi
# setpriv execs (no process in between): $! is PostgreSQL's postmaster, for the signal below.
setpriv --reuid=postgres --regid=postgres --clear-groups "$PG/postgres" -D "$DATA" \
  -c listen_addresses='' -c unix_socket_directories="$SOCKETS" -c synchronous_commit=off &
postgres=$!
until as_postgres "$PG/pg_isready" -q -h "$SOCKETS"; do
  kill -0 "$postgres" 2>/dev/null || { log "PostgreSQL exited"; exit 1; }
  sleep 0.2
done
if [[ -z "$(as_postgres psql -h "$SOCKETS" -tAc "SELECT 1 FROM pg_database WHERE datname = 'ferretdb'")" ]]; then
  as_postgres psql -q -h "$SOCKETS" -c "CREATE DATABASE ferretdb"
fi

/usr/local/bin/ferretdb --handler=postgresql \
  --postgresql-url="postgres://postgres@/ferretdb?host=$SOCKETS&pool_max_conns=100" \
  --listen-addr="$LISTEN" --state-dir=/data/db --telemetry=disable --debug-addr=- \
  --log-level=warn &
ferretdb=$!

stop() {
  log "stopping FerretDB, then PostgreSQL"
  kill -TERM "$ferretdb" 2>/dev/null || true
  wait "$ferretdb" || true
  kill -INT "$postgres" 2>/dev/null || true  # fast shutdown
  wait "$postgres" || true
  exit 0
}
trap stop TERM INT
log "FerretDB listens on $LISTEN"
wait "$ferretdb"
