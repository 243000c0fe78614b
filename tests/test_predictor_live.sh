#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The predictor in the engine:
# - output identity: every mode (pregate, path, combined; lookahead 1 and 2,
#   k' = k and k' = 2k) gives exactly the tokens of `none`, with the expert
#   cache at 25 %, on the medium shape (decode and a prompt in chunks) and on
#   tiny models of each MoE architecture;
# - the predictions are real: recall at lookahead 1 is far above chance
#   (k/N) and prefetches are issued and used;
# - a routing trace recorded live (--trace-routing) replays in tools/replay
#   with the live run's LRU hit rate, to the hundredth of a percent, at the
#   live cache size and batching.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
M=$BUILD/models
MOED=$BUILD/moed
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
[ -f "$M/qwen3moe-medium-q8_0.gguf" ] || { echo "skip: no test models in $M (make models)"; exit 77; }
fails=0
long() { for i in $(seq 1 "$1"); do printf 'word%d and the %d-th sentence, ' $i $((i * 7)); done; }

identity() { # model n prompt
    local model=$1 n=$2 prompt=$3 name
    name=$(basename "$model" .gguf)
    "$MOED" run -m "$model" -p "$prompt" -n "$n" --temp 0 --ignore-eos -b 64 --expert-cache 25% --expert-store-always \
        >"$T/ref" 2>"$T/err" || { echo "FAIL $name: none: $(tail -1 "$T/err")"; fails=$((fails+1)); return; }
    for cfg in "pregate --lookahead 1" "pregate --lookahead 2 --pregate-at input" "path --lookahead 2" "combined --lookahead 2" "combined --lookahead 2 --prefetch-depth 2 --k-pred 16"; do
        case $name in *tiny*) cfg=${cfg//2/1}; cfg=${cfg//16/4} ;; esac # two layers, 8 experts
        "$MOED" run -m "$model" -p "$prompt" -n "$n" --temp 0 --ignore-eos -b 64 --expert-cache 25% \
            --expert-store-always --predictor $cfg --stats-json "$T/st.json" >"$T/out" 2>"$T/err" ||
            { echo "FAIL $name $cfg: $(tail -1 "$T/err")"; fails=$((fails+1)); continue; }
        if cmp -s "$T/ref" "$T/out"; then
            jq -r --arg n "$name" --arg c "$cfg" '"ok   \($n) --predictor \($c): same tokens; recall d=1 \(.predictor.by_distance[0].recall * 1000 | floor / 1000), prefetches \(.predictor.prefetch_issued) issued \(.predictor.prefetch_used) used, hit rate \(.cache.hit_rate * 1000 | floor / 10) %"' "$T/st.json"
        else
            echo "FAIL $name --predictor $cfg: output differs from none"; fails=$((fails+1))
        fi
    done
}
identity "$M/qwen3moe-medium-q8_0.gguf" 24 "The history of the expert cache begins with a question"
identity "$M/qwen3moe-medium-q8_0.gguf" 4 "$(long 30)"
for m in mixtral-tiny-q8_0 qwen2moe-tiny-q8_0 olmoe-tiny-q8_0; do
    identity "$M/$m.gguf" 16 "$(long 6)"
done

# predictions are real on the medium model (64 experts, top-8: chance recall 0.125)
"$MOED" run -m "$M/qwen3moe-medium-q8_0.gguf" -p "The history of the expert cache" -n 32 --temp 0 --ignore-eos \
    --expert-cache 25% --predictor combined --lookahead 1 --stats-json "$T/st.json" >/dev/null 2>&1
if jq -e '.predictor.by_distance[0].recall > 0.4 and .predictor.prefetch_issued > 0 and .predictor.prefetch_used > 0' \
    "$T/st.json" >/dev/null; then
    echo "ok   combined predictor: recall at d=1 $(jq '.predictor.by_distance[0].recall' "$T/st.json") (chance 0.125)"
else
    echo "FAIL combined predictor: $(jq -c .predictor "$T/st.json")"; fails=$((fails+1))
fi

# replay of a live trace gives the live hit rate
for prompt in "The history of the expert cache begins with a question" "$(long 20)"; do
    "$MOED" run -m "$M/qwen3moe-medium-q8_0.gguf" -p "$prompt" -n 30 --temp 0 --ignore-eos -b 64 --expert-cache 25% \
        --trace-routing "$T/live.trace" --stats-json "$T/live.json" >/dev/null 2>"$T/err" ||
        { echo "FAIL trace run: $(tail -1 "$T/err")"; fails=$((fails+1)); continue; }
    slots=$(jq '.cache.slots' "$T/live.json")
    live=$(jq '.cache.hit_rate * 100' "$T/live.json")
    rep=$("$BUILD/replay" "$T/live.trace" --slots "$slots" --batch live --policy lru 2>&1 | awk '$1 == "lru" { print $3 }')
    if [ -n "$rep" ] && awk -v a="$live" -v b="$rep" 'BEGIN { d = a - b; exit !(d < 0.01 && d > -0.01) }'; then
        echo "ok   replay of the live trace: LRU hit rate $rep % (live $live %), $slots slots"
    else
        echo "FAIL replay hit rate '$rep' vs live $live"; fails=$((fails+1))
    fi
done
[ $fails = 0 ] || { echo "$fails failures"; exit 1; }
echo "all predictor checks passed"
