#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Server benchmarks on loopback (bench/run.sh calls this; it also runs alone
# after `make`): `moed serve` with the medium Q4_K_M model that bench/run.sh
# writes ($BUILD/bench-models/medium-q4_k_m.gguf), or the demo model when
# BENCH_QUICK=1, and the client bench/server/load.py:
#   1. load: SERVER_CLIENTS concurrent streaming clients (8), SERVER_REQUESTS
#      requests each (4), SERVER_MAX_TOKENS generated tokens each (64, with
#      ignore_eos): aggregate tokens/s, TTFT and inter-token latency
#      p50/p99, failed requests (must be 0);
#   2. soak: SOAK_CLIENTS clients (16) for SOAK_SECONDS (180, at most 600) or
#      SOAK_REQUESTS requests (1000), a quarter disconnecting early: failed
#      requests among those that stayed (must be 0), RSS at start and end
#      (growth must stay within the KV pool of the memory plan plus 64 MiB),
#      and /metrics back to idle (no running sequence, no KV block in use).
# Results: $BUILD/bench/server-load.json and server-soak.json. Exit 1 when a
# check fails. The server is always stopped (SIGTERM, then SIGKILL).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PY=/usr/bin/python3
MOED=$BUILD/moed
THREADS=${BENCH_THREADS:-2}
if [ "${BENCH_QUICK:-0}" = 1 ]; then
    MODEL=${SERVER_MODEL:-$BUILD/models/demo.gguf}
    : "${SERVER_CLIENTS:=4}" "${SERVER_REQUESTS:=2}" "${SERVER_MAX_TOKENS:=32}"
    : "${SOAK_SECONDS:=30}" "${SOAK_REQUESTS:=80}" "${SOAK_CLIENTS:=8}"
else
    MODEL=${SERVER_MODEL:-$BUILD/bench-models/medium-q4_k_m.gguf}
fi
SERVER_CLIENTS=${SERVER_CLIENTS:-8}
SERVER_REQUESTS=${SERVER_REQUESTS:-4}
SERVER_MAX_TOKENS=${SERVER_MAX_TOKENS:-64}
SOAK_SECONDS=${SOAK_SECONDS:-180}
SOAK_REQUESTS=${SOAK_REQUESTS:-1000}
SOAK_CLIENTS=${SOAK_CLIENTS:-16}
[ "${SOAK_SECONDS%.*}" -le 600 ] || { echo "bench_server: SOAK_SECONDS is at most 600" >&2; exit 2; }
PARALLEL=${SERVER_PARALLEL:-8}
CTX=${SERVER_CTX:-1024}
for f in "$MOED" "$MODEL"; do
    [ -e "$f" ] || { echo "bench_server: $f is missing (make; bench/run.sh writes the medium model)" >&2; exit 1; }
done
mkdir -p "$BUILD/bench"
LOG=$BUILD/bench/server.log
SPID=
stop_server() {
    [ -n "$SPID" ] || return 0
    kill -TERM "$SPID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SPID" 2>/dev/null || true
    wait "$SPID" 2>/dev/null || true
    SPID=
}
trap stop_server EXIT

start_server() {
    "$MOED" serve -m "$MODEL" --host 127.0.0.1 --port 0 -np "$PARALLEL" -c "$CTX" \
        -t "$THREADS" --log-level info >"$LOG" 2>&1 &
    SPID=$!
    PORT=
    for _ in $(seq 600); do
        PORT=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$LOG" | head -n1 | sed 's/.*://' || true)
        if [ -n "$PORT" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health")" = 200 ]; then
            return 0
        fi
        kill -0 "$SPID" 2>/dev/null || break
        sleep 0.1
    done
    echo "bench_server: the server did not become ready:" >&2
    tail -n 20 "$LOG" >&2
    return 1
}

echo "==== server: $(basename "$MODEL"), -np $PARALLEL -c $CTX -t $THREADS, loopback ===="
start_server
status=0
echo "-- load: $SERVER_CLIENTS concurrent streaming clients x $SERVER_REQUESTS requests x $SERVER_MAX_TOKENS tokens"
"$PY" bench/server/load.py load --port "$PORT" --clients "$SERVER_CLIENTS" --requests "$SERVER_REQUESTS" \
    --max-tokens "$SERVER_MAX_TOKENS" --json "$BUILD/bench/server-load.json" >/dev/null || status=1

# The soak may grow RSS by the KV pool (its pages are touched as blocks are
# first used) plus 64 MiB; the memory plan line gives the pool's size.
budget=$("$PY" - "$LOG" <<'PY'
import re, sys
m = re.search(r"KV pool \d+ tokens ([\d.]+) (B|KiB|MiB|GiB)", open(sys.argv[1]).read())
mult = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
print(int((float(m.group(1)) * mult[m.group(2)] if m else 0) + 64 * 2**20))
PY
)
echo "-- soak: $SOAK_CLIENTS clients, ${SOAK_SECONDS}s or $SOAK_REQUESTS requests, some disconnecting early"
"$PY" bench/server/load.py soak --port "$PORT" --pid "$SPID" --clients "$SOAK_CLIENTS" --seconds "$SOAK_SECONDS" \
    --max-requests "$SOAK_REQUESTS" --max-tokens "$SERVER_MAX_TOKENS" --budget-bytes "$budget" \
    --json "$BUILD/bench/server-soak.json" >/dev/null || status=1
stop_server

"$PY" - "$BUILD" <<'PY'
import json, sys
b = sys.argv[1]
l = json.load(open(b + "/bench/server-load.json"))
s = json.load(open(b + "/bench/server-soak.json"))
print("load: %d requests, %d failed, %.1f tokens/s aggregate; TTFT p50 %.0f ms p99 %.0f ms; "
      "inter-token p50 %.1f ms p99 %.1f ms" % (l["requests"], l["failed"], l["tokens_per_s"], l["ttft_ms_p50"],
                                                 l["ttft_ms_p99"], l["itl_ms_p50"], l["itl_ms_p99"]))
m = s["metrics_end"]
print("soak: %d requests in %.0f s (%d disconnected on purpose), %d failed among those that stayed%s; "
      "%.1f tokens/s" % (s["requests"], s["wall_s"], s["dropped_on_purpose"], s["failed"],
                         (" " + str(s["errors"])) if s["failed"] else "", s["tokens_per_s"]))
print("soak: RSS %.1f MiB at start, %.1f MiB at end (growth %.1f MiB, budget %.1f MiB); idle after %s s: "
      "running %s, active %s, KV blocks used %s cached %s free %s" % (
          s["rss_start_mib"], s["rss_end_mib"], s["rss_growth_mib"], s["budget_mib"], s["idle_after_s"],
          m.get("running"), m.get("active"), m.get("kv_used"), m.get("kv_cached"), m.get("kv_free")))
PY
[ $status = 0 ] && echo "server bench: ok" || echo "server bench: FAILED (see $BUILD/bench/server-*.json)"
exit $status
