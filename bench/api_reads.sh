#!/usr/bin/env bash
# Read-path benchmarks of the REST API, one uvicorn worker (API only: the seeded rows are
# not at the simulator, so workers would spend the run repairing them), wrk on 127.0.0.1:
#   1. GET /api/instances/{id}                     requests/s (target >= 5,000), twice:
#      polled: 32 connections cycling over 1,000 instances (clients polling their
#              instances: each row is read again and again, mostly unchanged);
#      cold:   cycling over all N instances in order, so no row is read twice within
#              the 4,096 rows whose rendered body the service keeps: every read renders.
#   2. GET /api/instances?limit=50 over N instances p99 latency (target <= 20 ms)
# and, in the same runs for scale, a bare Starlette endpoint answering a fixed instance-sized
# JSON body on the same path (its share says how much of the server's cost is ours).
# on SQLite and (when TEST_POSTGRES_URL or a local server is available) PostgreSQL.
# The polled reads also run with a key issued by `keys create` (looked up in the database,
# cached for API_KEY_CACHE_SECONDS) beside the key from API_KEYS.
#
#   bench/api_reads.sh                 # defaults: 100,000 instances, 3 runs of 10 s each
#   INSTANCES=20000 RUNS=1 DURATION=5s bench/api_reads.sh
#   ENGINES=postgresql bench/api_reads.sh   # one engine only (sqlite, postgresql)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
INSTANCES=${INSTANCES:-100000}
RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
KEY=bench-api-key
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
command -v wrk >/dev/null || { echo "needs wrk (apt-get install -y wrk)" >&2; exit 2; }

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# wrk over the instance ids listed in a file, in order, round and round; prints requests/s.
get_one() {
  local port=$1 ids=$2 key=${3:-$KEY}
  cat >"$WORK/get.lua" <<LUA
local paths = {}
for line in io.lines("$ids") do paths[#paths + 1] = "/api/instances/" .. line end
local i = 0
wrk.headers["Authorization"] = "Bearer $key"
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
LUA
  taskset -c 1 wrk -t1 -c32 -d"$DURATION" -s "$WORK/get.lua" "http://127.0.0.1:$port" \
    | awk '/Non-2xx/ {print "non-2xx answers" > "/dev/stderr"; exit 1} /Requests\/sec/ {print $2}'
}

bare_rates=()
run_bare() {
  cat >"$WORK/bare_app.py" <<PYAPP
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

BODY = {"id": "inst_0123456789abcdef", "name": "bench", "status": "running", "gpuCount": 1,
        "region": "us-01", "product": "product-a", "createdAt": "2026-01-01T00:00:00Z"}

async def one(request):
    return JSONResponse({**BODY, "id": request.path_params["key"]})

app = Starlette(routes=[Route("/api/instances/{key}", one)])
PYAPP
  local port; port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  taskset -c 0 "$PY" -m uvicorn --app-dir "$WORK" bare_app:app --host 127.0.0.1 --port "$port" \
    --log-level warning >"$WORK/bare.log" 2>&1 &
  local server=$!
  for _ in $(seq 1 600); do curl -fs "http://127.0.0.1:$port/api/instances/x" >/dev/null && break; sleep 0.1; done
  bare_rates+=("$(get_one "$port" "$1")")
  kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true
}

run_engine() {
  local name=$1 url=$2
  echo "== $name: seeding $INSTANCES instances"
  "$PY" bench/seed_instances.py "$url" "$INSTANCES" "$WORK/ids" >/dev/null
  head -n 1000 "$WORK/ids" >"$WORK/polled"
  # A key issued in the database (a version without `keys` skips this measurement).
  local issued=""
  issued=$(DATABASE_URL=$url "$PY" -m service keys create --team default --role viewer \
    --name bench 2>/dev/null | tail -n 1) || issued=""
  local port; port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  DATABASE_URL=$url API_KEYS=$KEY LOG_LEVEL=WARNING taskset -c 0 "$PY" -m service serve \
    --simulator --no-workers --host 127.0.0.1 --port "$port" >"$WORK/$name.log" 2>&1 &
  local server=$!
  for _ in $(seq 1 600); do curl -fs "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
  local polled_rates=() cold_rates=() list_p99=() issued_rates=()
  for _ in $(seq 1 "$RUNS"); do
    run_bare "$WORK/polled"
    polled_rates+=("$(get_one "$port" "$WORK/polled")")
    if [ -n "$issued" ]; then issued_rates+=("$(get_one "$port" "$WORK/polled" "$issued")"); fi
    cold_rates+=("$(get_one "$port" "$WORK/ids")")
    list_p99+=("$(taskset -c 1 wrk -t1 -c1 -d"$DURATION" --latency -H "Authorization: Bearer $KEY" \
      "http://127.0.0.1:$port/api/instances?limit=50" | awk '$1=="99%" {v=$2; if (v ~ /ms$/) {sub(/ms/,"",v); print v} else if (v ~ /us$/) {sub(/us/,"",v); print v/1000} else {sub(/s/,"",v); print v*1000}}')")
  done
  echo "$name GET /api/instances/{id} polled: runs ${polled_rates[*]} req/s; median $(printf '%s\n' "${polled_rates[@]}" | median) req/s"
  echo "$name GET /api/instances/{id} cold:   runs ${cold_rates[*]} req/s; median $(printf '%s\n' "${cold_rates[@]}" | median) req/s"
  local bare; bare=$(printf '%s\n' "${bare_rates[@]}" | median)
  echo "$name bare Starlette endpoint (same runs): runs ${bare_rates[*]} req/s; median $bare req/s"
  echo "$name share of the bare endpoint: polled $(awk -v a="$(printf '%s\n' "${polled_rates[@]}" | median)" -v b="$bare" 'BEGIN {printf "%.0f%%", 100*a/b}'), cold $(awk -v a="$(printf '%s\n' "${cold_rates[@]}" | median)" -v b="$bare" 'BEGIN {printf "%.0f%%", 100*a/b}')"
  if [ -n "$issued" ]; then
    local mine; mine=$(printf '%s\n' "${issued_rates[@]}" | median)
    echo "$name GET /api/instances/{id} polled, issued key: runs ${issued_rates[*]} req/s; median $mine req/s, $(awk -v a="$mine" -v b="$bare" 'BEGIN {printf "%.0f%%", 100*a/b}') of the bare endpoint"
  fi
  bare_rates=()
  echo "$name GET /api/instances?limit=50 ($INSTANCES rows): p99 runs ${list_p99[*]} ms; median $(printf '%s\n' "${list_p99[@]}" | median) ms"
  kill "$server"; wait "$server" 2>/dev/null || true
}

ENGINES=" ${ENGINES:-sqlite postgresql} "
if [[ $ENGINES == *" sqlite "* ]]; then
  run_engine sqlite "sqlite+aiosqlite:///$WORK/bench.db"
fi
[[ $ENGINES == *" postgresql "* ]] || exit 0

pg_url=${TEST_POSTGRES_URL:-}
if [ -z "$pg_url" ] && [ -x scripts/test-postgres.sh ]; then
  eval "$(scripts/test-postgres.sh)"; pg_url=${TEST_POSTGRES_URL:-}
fi
if [ -n "$pg_url" ]; then
  db="bench_$$"
  admin=$(echo "$pg_url" | sed 's/+asyncpg//')
  psql "$admin" -qc "CREATE DATABASE $db" >/dev/null
  run_engine postgresql "${pg_url%/*}/$db"
  psql "$admin" -qc "DROP DATABASE $db WITH (FORCE)" >/dev/null
else
  echo "(no PostgreSQL: skipped)"
fi
