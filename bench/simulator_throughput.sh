#!/usr/bin/env bash
# Throughput of the Novita simulator's GET /gpu/instance, measured with wrk on loopback.
#
# Starts `python -m service simulate` pinned to CPU 0 (when taskset exists), creates one
# instance, then runs wrk (pinned to another CPU when there is one) RUNS times and prints
# the median requests/s. Only 127.0.0.1 is ever targeted.
#
#   bench/simulator_throughput.sh            # defaults: 3 runs of -t1 -c32 -d5s
#   RUNS=5 DURATION=10s CONNECTIONS=64 bench/simulator_throughput.sh
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
RUNS=${RUNS:-3}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-32}
KEY=bench-key

command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install -y wrk)" >&2; exit 2; }

PORT=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE="http://127.0.0.1:${PORT}/gpu-instance/openapi/v1"

SIM_PIN=() WRK_PIN=()
if command -v taskset >/dev/null; then
    SIM_PIN=(taskset -c 0)
    if [ "$(nproc)" -gt 1 ]; then WRK_PIN=(taskset -c 1); fi
fi

"${SIM_PIN[@]}" "$PYTHON" -m service simulate --host 127.0.0.1 --port "$PORT" \
    --api-key "$KEY" --dwell-scale 0 --app-startup-delay 0 >/tmp/simulator-bench.log 2>&1 &
SIM_PID=$!
trap 'kill "$SIM_PID" 2>/dev/null; wait "$SIM_PID" 2>/dev/null || true' EXIT

for _ in $(seq 1 100); do
    curl -fsS -o /dev/null -H "Authorization: Bearer $KEY" "$BASE/clusters" 2>/dev/null && break
    sleep 0.1
done

ID=$(curl -fsS -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
    -d '{"name":"bench","productId":"4090.16c62g","gpuNum":1,"rootfsSize":50,
         "imageUrl":"pytorch/pytorch:2.4.0","kind":"gpu","ports":"8888/http, 22/tcp"}' \
    "$BASE/gpu/instance/create" | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["id"])')
URL="$BASE/gpu/instance?instanceId=$ID"
curl -fsS -o /dev/null -H "Authorization: Bearer $KEY" "$URL"

results=()
for run in $(seq 1 "$RUNS"); do
    rps=$("${WRK_PIN[@]}" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" \
        -H "Authorization: Bearer $KEY" "$URL" | awk '/^Requests\/sec:/ {print $2}')
    echo "run $run: $rps req/s"
    results+=("$rps")
done

median=$(printf '%s\n' "${results[@]}" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}')
echo "GET /gpu/instance median over $RUNS runs: $median req/s (instance $ID)"
