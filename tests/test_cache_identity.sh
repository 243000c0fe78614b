#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Output identity of the expert store: greedy generation with the expert
# cache at 10 %, 30 % and 100 % of the experts' bytes (loaded on demand from
# the file, in waves when a layer needs more experts than the cache has
# slots) gives exactly the tokens of full residency, for decode and for a
# long prompt run in chunks, on tiny models of every MoE architecture
# (mixtral, qwen2moe with its shared expert, olmoe, qwen3moe with K-quants)
# and on the medium Qwen3-MoE shape; through io_uring (O_DIRECT on the
# medium model) and through the pread pool. Each cached run must really have
# loaded experts from the file (misses, evictions and, at 10 %, more than one
# wave per layer).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
M=$BUILD/models
MOED=$BUILD/moed
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
[ -f "$M/qwen3moe-medium-q8_0.gguf" ] || { echo "skip: no test models in $M (make models)"; exit 77; }
fails=0
short="The quick brown fox jumps over the lazy dog and then"
long() { for i in $(seq 1 "$1"); do printf 'word%d and the %d-th sentence, ' $i $((i * 7)); done; }

check() { # model n_predict prompt extra-flags...
    local model=$1 n=$2 prompt=$3; shift 3
    local name
    name=$(basename "$model" .gguf)
    "$MOED" run -m "$model" -p "$prompt" -n "$n" --temp 0 --ignore-eos -b 64 "$@" >"$T/ref" 2>"$T/ref.err" ||
        { echo "FAIL $name: reference run: $(tail -1 "$T/ref.err")"; fails=$((fails+1)); return; }
    for xc in "10%" "30%" "100%"; do
        for io in io_uring pread; do
            [ $io = pread ] && [ "$xc" != "30%" ] && continue
            "$MOED" run -m "$model" -p "$prompt" -n "$n" --temp 0 --ignore-eos -b 64 "$@" \
                --expert-cache "$xc" --expert-store-always --io $io --stats-json "$T/st.json" >"$T/out" 2>"$T/err" ||
                { echo "FAIL $name $xc $io: $(tail -1 "$T/err")"; fails=$((fails+1)); continue; }
            if ! cmp -s "$T/ref" "$T/out"; then
                echo "FAIL $name cache $xc ($io): output differs from full residency"
                fails=$((fails+1))
                continue
            fi
            /usr/bin/python3 - "$T/st.json" "$xc" "$io" "$name" <<'PY' || fails=$((fails+1))
import json, sys
st, xc, io, name = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4]
c = st["cache"]
# no predictor: every load is a demand miss, and every miss read the file
ok = c["enabled"] and c["device_misses"] > 0 and c["loads"] == c["device_misses"] and \
     c["bytes_disk_to_device"] >= c["expert_bytes_loaded"] > 0
msg = f"{name} cache {xc} ({io}): slots {c['slots']}, hit rate {c['hit_rate']:.3f}, misses {c['device_misses']}, " \
      f"evictions {c['evictions']}, waves {c['expert_waves']} for {c['moe_layer_steps']} layer steps, " \
      f"O_DIRECT {c['o_direct']}, {c['io']}"
if c["io"] != io:
    ok = False; msg += " (wrong io)"
if xc == "10%" and not (c["evictions"] > 0 and c["expert_waves"] > c["moe_layer_steps"]):
    ok = False; msg += " (expected evictions and several waves per layer)"
if xc == "100%" and c["evictions"] != 0:
    ok = False; msg += " (evictions with room for every expert)"
print(("ok   " if ok else "FAIL ") + msg)
sys.exit(0 if ok else 1)
PY
        done
    done
}

for m in mixtral-tiny-q8_0 qwen2moe-tiny-q8_0 olmoe-tiny-q8_0 qwen3moe-tinyk-q4_K qwen3moe-tinyk-q6_K; do
    check "$M/$m.gguf" 24 "$short"
    check "$M/$m.gguf" 8 "$(long 14)" # ~210 tokens of a 256 context, in 4 chunks
done
check "$M/qwen3moe-medium-q8_0.gguf" 12 "$short"
check "$M/qwen3moe-medium-q8_0.gguf" 4 "$(long 90)" # 1328 tokens, 21 chunks
if [ $fails -gt 0 ]; then
    echo "$fails failures"
    exit 1
fi
echo "all outputs identical"
