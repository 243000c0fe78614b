#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The expert store under offload (bench/run.sh runs it; runnable alone after
# `make bench` built $BUILD/bench/bench_io): the medium model in Q4_K_M and
# Q8_0 with the expert cache at 25 % of the experts' bytes, after dropping
# the file's pages from the page cache. For each: decode tokens/s (and the
# ratio to the same model fully resident, measured in this run), hit rate,
# disk bytes per generated token, the loader's achieved read GB/s beside a
# raw io_uring O_DIRECT sequential read of the same file at the same queue
# depth measured just before, stall seconds per token, and peak RSS against
# the memory plan. BENCH_QUICK=1: 32 tokens instead of 128.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
MODELS=$BUILD/bench-models
OUT=$BUILD/bench
N=128
[ "${BENCH_QUICK:-0}" = 1 ] && N=32
THREADS=${BENCH_THREADS:-2}
PROMPT="In the beginning of the twentieth century the city was a small harbour town whose"
QD=24 # the loader: 8 experts in flight x 3 slices
for t in q4_k_m q8_0; do
    f=$MODELS/medium-$t.gguf
    [ -f "$f" ] || { echo "cache bench: $f is missing (bench/run.sh writes it)"; continue; }
    "$BUILD/moed" run -m "$f" -p "$PROMPT" -n $N --temp 0 --ignore-eos -t "$THREADS" \
        --stats-json "$OUT/cache-$t-resident.json" >/dev/null 2>&1
    raw=$("$BUILD/bench/bench_io" "$f" --qd $QD --bs 512K --drop)
    "$BUILD/bench/bench_io" "$f" --drop-only
    resident_pages=$(fincore -nb -o RES "$f" 2>/dev/null | tr -d ' ' || echo "?")
    "$BUILD/moed" run -m "$f" -p "$PROMPT" -n $N --temp 0 --ignore-eos -t "$THREADS" --expert-cache 25% \
        --stats-json "$OUT/cache-$t-25.json" >/dev/null 2>&1
    /usr/bin/python3 - "$OUT/cache-$t-resident.json" "$OUT/cache-$t-25.json" "$raw" "$t" "$resident_pages" <<'PY'
import json, sys
res, st, raw, t, pages = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3].split(), sys.argv[4], sys.argv[5]
raw_gbs = float(raw[1])
c, p = st["cache"], st["memory_plan"]
gen = st["completion_tokens"]
tps, tps0 = st["generation_tokens_per_s"], res["generation_tokens_per_s"]
print(f"medium {t}: expert cache 25% ({c['slots']} slots, {p['expert_cache_bytes']/2**20:.0f} of "
      f"{p['expert_bytes']/2**20:.0f} MiB), file pages cached before the run: {pages} bytes, "
      f"{c['io']}{' O_DIRECT' if c['o_direct'] else ' buffered'}")
print(f"  decode            {tps:8.2f} tokens/s   (fully resident {tps0:.2f}: {tps/tps0:.2f}x)")
print(f"  hit rate          {100*c['hit_rate']:8.1f} %        ({c['device_hits']} hits, {c['device_misses']} misses)")
print(f"  disk bytes/token  {c['bytes_disk_to_device']/gen/2**20:8.2f} MiB      ({c['bytes_disk_to_device']/2**20:.0f} MiB "
      f"over {st['prompt_tokens']} prompt + {gen} generated tokens)")
print(f"  read bandwidth    {c['read_gb_per_s']:8.2f} GB/s     (raw io_uring O_DIRECT sequential, qd {raw[7]}, "
      f"512 KiB reads: {raw_gbs:.2f} GB/s; {c['read_gb_per_s']/raw_gbs:.2f}x)")
print(f"  stall             {1e3*c['stall_seconds']/gen:8.2f} ms/token ({c['stall_seconds']:.2f} s; load latency mean "
      f"{1e3*c['load_seconds']/max(c['loads'],1):.2f} ms)")
print(f"  peak RSS          {st['peak_rss_bytes']/2**20:8.0f} MiB      (plan {p['total_bytes']/2**20:.0f} MiB; "
      f"fully resident run {res['peak_rss_bytes']/2**20:.0f} MiB)")
PY
done
