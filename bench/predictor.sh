#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The predictor under offload (bench/run.sh runs it): the medium model and a
# planted-structure model of the same shape (tools/mkmodel --plant:
# SYNTHETIC routing structure, labelled so), both Q4_K_M, expert cache at
# 25 %, page cache dropped before each run; for --predictor none, pregate,
# path and combined (lookahead 2 scored, 1 prefetched, k' = k): decode
# tokens/s, hit rate, stall per token, bytes read per token, late and wasted
# prefetches, recall at lookahead 1 and 2; beside them tools/replay's bound
# for the same trace and cache size (Belady's optimal eviction with perfect
# knowledge of the future). BENCH_QUICK=1: 24 tokens instead of 64.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
MODELS=$BUILD/bench-models
OUT=$BUILD/bench
N=64
REPS=${PRED_REPS:-3} # the VM's disk speed moves from run to run: modes alternate, medians reported
[ "${BENCH_QUICK:-0}" = 1 ] && N=24 && REPS=1
THREADS=${BENCH_THREADS:-2}
PROMPT="In the beginning of the twentieth century the city was a small harbour town whose people lived from the sea"
f=$MODELS/medium-planted-q4_k_m.gguf
if [ ! -f "$f" ] || [ "$BUILD/mkmodel" -nt "$f" ]; then
    echo "bench: writing $f (planted routing structure)"
    "$BUILD/mkmodel" --arch qwen3moe --preset medium --type q4_k_m --plant -o "$f.tmp" && mv "$f.tmp" "$f"
fi
for m in medium-q4_k_m medium-planted-q4_k_m; do
    f=$MODELS/$m.gguf
    label="random weights"
    [ "$m" = medium-planted-q4_k_m ] && label="SYNTHETIC planted structure"
    for rep in $(seq 1 $REPS); do
        for mode in none pregate path combined; do
            "$BUILD/bench/bench_io" "$f" --drop-only
            extra=()
            [ $mode = none ] && extra=(--trace-routing "$OUT/pred-$m.trace")
            "$BUILD/moed" run -m "$f" -p "$PROMPT" -n $N --temp 0 --ignore-eos -t "$THREADS" --expert-cache 25% \
                --predictor $mode --lookahead 2 --prefetch-depth 1 "${extra[@]}" \
                --stats-json "$OUT/pred-$m-$mode-$rep.json" >/dev/null 2>&1
        done
    done
    slots=$(/usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['cache']['slots'])" \
        "$OUT/pred-$m-none.json")
    "$BUILD/replay" "$OUT/pred-$m.trace" --slots "$slots" --batch live --policy lru,belady > "$OUT/pred-$m-replay.txt" 2>&1
    /usr/bin/python3 - "$OUT" "$m" "$label" "$REPS" <<'PY'
import json, sys, statistics
out, m, label, reps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
print(f"\n{m} ({label}), expert cache 25 %, cold page cache:")
print(f"  {'predictor':10} {'tok/s':>7} {'hit %':>6} {'stall ms/t':>10} {'MiB read/t':>10} {'late':>6} {'wasted':>7} {'recall d1':>9} {'recall d2':>9}")
print("  (tok/s: decode; stall per generated token; MiB read per token computed, prompt included, as the replay counts)")
print(f"  (medians of {reps} runs per mode, modes alternating; decode tok/s range in brackets)")
base = None
for mode in ("none", "pregate", "path", "combined"):
    runs = [json.load(open(f"{out}/pred-{m}-{mode}-{r}.json")) for r in range(1, reps + 1)]
    runs.sort(key=lambda x: x["generation_tokens_per_s"])
    st = runs[len(runs) // 2]
    c, p, gen = st["cache"], st["predictor"], st["completion_tokens"]
    tps = st["generation_tokens_per_s"]
    rng = f"[{runs[0]['generation_tokens_per_s']:.1f}-{runs[-1]['generation_tokens_per_s']:.1f}]"
    base = base or tps
    rec = {d["d"]: d["recall"] for d in p["by_distance"]}
    r1 = f"{rec[1]:.3f}" if 1 in rec else "-"
    r2 = f"{rec[2]:.3f}" if 2 in rec else "-"
    print(f"  {mode:10} {tps:7.2f} {100*c['hit_rate']:6.1f} {1e3*c['stall_seconds']/gen:10.1f} "
          f"{c['bytes_disk_to_device']/(gen - 1 + st['prompt_tokens'])/2**20:10.1f} {p['prefetch_late']:6d} {p['prefetch_wasted']:7d} {r1:>9} {r2:>9}"
          f"   ({tps/base:.2f}x none) {rng}")
for line in open(f"{out}/pred-{m}-replay.txt"):
    w = line.split()
    if w and w[0] in ("lru", "belady"):
        print(f"  replay {w[0]:8} hit {w[2]} %, {float(w[3])/1024:.1f} MiB moved per token"
              + ("   (the bound: perfect prediction, optimal eviction)" if w[0] == "belady" else "   (the live trace, same cache)"))
PY
done
