#!/usr/bin/env bash
# Make a local PostgreSQL server available to the test suite and print the line that
# exports TEST_POSTGRES_URL (use: eval "$(scripts/test-postgres.sh)").
#
# - TEST_POSTGRES_URL already set: use it as it is.
# - Running as root with Debian's packages: start the system cluster and create the
#   `novita_test` role (allowed to create the per-test databases).
# - Running as another user with PostgreSQL's binaries installed: start a private cluster
#   in ./.pg on port 54329 (initdb refuses to run as root, hence the two branches).
# - PostgreSQL not installed: say so on stderr; the PostgreSQL tests are then skipped,
#   except under CI=true, where they fail.
set -euo pipefail

ROLE=novita_test
PASSWORD=novita_test
DATABASE=novita_test

if [ -n "${TEST_POSTGRES_URL:-}" ]; then
  echo "export TEST_POSTGRES_URL='${TEST_POSTGRES_URL}'"
  exit 0
fi

pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$pg_bin" ]; then
  echo "scripts/test-postgres.sh: PostgreSQL is not installed (apt-get install postgresql);" \
       "the PostgreSQL tests will be skipped" >&2
  exit 0
fi

wait_ready() {
  for _ in $(seq 1 60); do
    if "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$1"; then return 0; fi
    sleep 0.5
  done
  echo "scripts/test-postgres.sh: PostgreSQL on port $1 did not become ready" >&2
  exit 1
}

if [ "$(id -u)" = 0 ]; then
  version=$(basename "$(dirname "$pg_bin")")
  if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -q "^$version main$"; then
    pg_createcluster "$version" main >/dev/null
  fi
  pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
  port=$(pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $3}')
  wait_ready "$port"
  as_postgres() { su postgres -s /bin/sh -c "cd / && psql -p $port -v ON_ERROR_STOP=1 -qtAc \"$1\""; }
  if [ "$(as_postgres "SELECT 1 FROM pg_roles WHERE rolname='$ROLE'")" != "1" ]; then
    as_postgres "CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$PASSWORD'" >/dev/null
  fi
  if [ "$(as_postgres "SELECT 1 FROM pg_database WHERE datname='$DATABASE'")" != "1" ]; then
    as_postgres "CREATE DATABASE $DATABASE OWNER $ROLE" >/dev/null
  fi
else
  port=54329
  root_dir=$(cd "$(dirname "$0")/.." && pwd)
  data="$root_dir/.pg/data"
  if [ ! -d "$data" ]; then
    mkdir -p "$root_dir/.pg"
    "$pg_bin/initdb" -D "$data" -U "$ROLE" --auth=trust >/dev/null
  fi
  if ! "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then
    "$pg_bin/pg_ctl" -D "$data" -l "$root_dir/.pg/server.log" -w \
      -o "-p $port -k $root_dir/.pg -c listen_addresses=127.0.0.1" start >/dev/null
  fi
  wait_ready "$port"
  "$pg_bin/createdb" -h 127.0.0.1 -p "$port" -U "$ROLE" "$DATABASE" 2>/dev/null || true
fi

echo "export TEST_POSTGRES_URL='postgresql+asyncpg://$ROLE:$PASSWORD@127.0.0.1:$port/$DATABASE'"
