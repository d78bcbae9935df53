#!/usr/bin/env bash
# postgres-local.sh — a throwaway PostgreSQL server on this (Debian/Ubuntu) machine, for tests and demos of an
# Optuna study shared by several launchers (hydra.sweeper.storage=postgresql://...).
#
#   scripts/postgres-local.sh start   install (if missing) Debian's postgresql, initdb a cluster in $PG_LOCAL_DIR,
#                                     start it on 127.0.0.1:$PG_LOCAL_PORT (trust auth) and create database
#                                     $PG_LOCAL_DB; prints the SQLAlchemy URL. Idempotent.
#   scripts/postgres-local.sh stop    stop that server (pg_ctl, its own data dir).
#   scripts/postgres-local.sh url     print the URL.
#
# Settings: PG_LOCAL_DIR (default /var/lib/neuromf-postgres), PG_LOCAL_PORT (default 5433), PG_LOCAL_DB (optuna).
# Needs root or passwordless sudo (the server runs as the `postgres` user). No systemd needed.
set -euo pipefail

DIR=${PG_LOCAL_DIR:-/var/lib/neuromf-postgres}
PORT=${PG_LOCAL_PORT:-5433}
DB=${PG_LOCAL_DB:-optuna}
URL="postgresql+psycopg2://postgres@127.0.0.1:$PORT/$DB"

log() { echo "[postgres-local] $*" >&2; }
die() { echo "[postgres-local] ERROR: $*" >&2; exit 1; }

[[ ${1:-} == url ]] && { echo "$URL"; exit 0; }
if [[ ${EUID:-$(id -u)} -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    exec sudo -n --preserve-env=PG_LOCAL_DIR,PG_LOCAL_PORT,PG_LOCAL_DB "$0" "$@"
  fi
  die "needs root or passwordless sudo"
fi

bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

install_packages() {
  [[ -n "$(bindir)" ]] && return 0
  command -v apt-get >/dev/null || die "no PostgreSQL and no apt-get to install it"
  log "installing postgresql"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends postgresql >/dev/null || {
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  }
}

as_pg() { runuser -u postgres -- "$@"; }

start() {
  install_packages
  local bin; bin=$(bindir)
  id postgres >/dev/null 2>&1 || die "no postgres user (the postgresql package creates it)"
  mkdir -p "$DIR"
  chown postgres:postgres "$DIR"
  chmod 0700 "$DIR"
  if [[ ! -s $DIR/data/PG_VERSION ]]; then
    log "initdb $DIR/data"
    as_pg "$bin/initdb" -D "$DIR/data" -A trust -U postgres >/dev/null
  fi
  if ! as_pg "$bin/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
    log "starting on 127.0.0.1:$PORT"
    as_pg "$bin/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
      -o "-p $PORT -c listen_addresses=127.0.0.1 -k $DIR" start >/dev/null || die "did not start (see $DIR/server.log)"
  fi
  if ! as_pg "$bin/psql" -h 127.0.0.1 -p "$PORT" -tAc "SELECT 1 FROM pg_database WHERE datname='$DB'" | grep -q 1; then
    as_pg "$bin/createdb" -h 127.0.0.1 -p "$PORT" "$DB"
  fi
  echo "$URL"
}

stop() {
  local bin; bin=$(bindir)
  [[ -n $bin && -s $DIR/data/PG_VERSION ]] || return 0
  as_pg "$bin/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1 || return 0
  as_pg "$bin/pg_ctl" -D "$DIR/data" -w stop -m fast >/dev/null
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop|url" >&2; exit 2 ;;
esac
