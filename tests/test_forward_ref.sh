#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# moed's logits against the independent numpy reference (tests/ref/gguf_ref.py)
# for every architecture x every type mkmodel writes, over a prompt of 20
# tokens fed in two batches (prefill then decode path) plus 6 greedy steps.
#
# Method: the reference generates 6 greedy tokens; moed is then fed the prompt
# plus those tokens (teacher forcing, in batches of 12, so the prefill and the
# decode paths both run) and every row of logits is compared.
# Tolerance, by the precision of the activations each matmul sees: f32
# models (no activation rounding) must agree within 1e-4 of the row maximum
# (float32 vs float64 summation only; measured worst 1e-6); f16 models within
# 2e-3. bf16 and every quantized type round activations to 8 bits, and a
# one-ulp float32-vs-float64 difference can move an activation across a
# rounding step, which shifts later logits by up to ~2 % of the row maximum on
# these tiny random models (measured worst 1.8 %): 5e-2 for those. The argmax
# must agree wherever the reference's top-2 margin exceeds twice the
# tolerance. A real bug (wrong scale, pairing, norm, gating) moves logits by
# tens of percent: see the negative controls at the end.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PY=/usr/bin/python3
MOED=$BUILD/moed
M=$BUILD/models
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
if ! $PY -c 'import numpy' 2>/dev/null; then echo "skip: Debian python3-numpy missing"; exit 77; fi
TOK=5,17,42,99,3,250,7,64,128,33,11,200,301,77,18,400,21,90,13,6
RTOL=${RTOL:-2e-3}
fail=0; n=0

compare() { # model [mutate]
    local model=$1 mut=${2:-}
    local name; name=$(basename "$model" .gguf)
    local base=$TMP/$name
    local extra=""; [ -n "$mut" ] && extra="--mutate $mut"
    local rtol=5e-2
    case "$name" in *-f32|*-yarn|*-linear) rtol=1e-4;; *-f16|*-tied) rtol=2e-3;; esac
    if [ ! -f "$base.ref" ]; then
        $PY tests/ref/gguf_ref.py "$model" --tokens $TOK --greedy 6 --out "$base.ref" > "$base.refids" || return 2
    fi
    local forced="$TOK,$(head -c -1 "$base.refids" | tr ' ' ',' | cut -d, -f1-5)"
    "$MOED" logits -m "$model" --tokens "$forced" --batch 12 $extra -o "$base.moed" || return 2
    local V; V=$($PY tests/ref/gguf_ref.py "$model" --info | awk '/^n_vocab/ {print $2}')
    $PY tests/ref/compare.py "$base.ref" "$base.moed" --n-vocab "$V" --rtol "$rtol" --atol 1e-5 > "$base.cmp" 2>&1 || return 1
    return 0
}

for model in "$M"/*-tiny-*.gguf "$M"/*-tinyk-*.gguf "$M"/qwen3moe-tiny-yarn.gguf "$M"/llama-tiny-linear.gguf "$M"/qwen3-tiny-tied.gguf; do
    [ -f "$model" ] || continue
    n=$((n+1))
    compare "$model"; rc=$?
    if [ $rc = 0 ]; then echo "ok    $(basename "$model") $(grep -m1 'max' "$TMP/$(basename "$model" .gguf).cmp")"
    else echo "FAIL  $(basename "$model")"; cat "$TMP/$(basename "$model" .gguf).cmp"; fail=$((fail+1)); fi
done
[ $n -gt 0 ] || { echo "no test models in $M"; exit 1; }

# Negative controls: each mutation must be caught.
for spec in "qwen3moe-tiny-f32:rope" "mixtral-tiny-f32:rope" "qwen3moe-tiny-f32:qknorm" "olmoe-tiny-f32:qknorm" \
            "qwen3moe-tiny-f32:topk" "olmoe-tiny-f32:topk" "qwen3moe-tinyk-q4_K:rope" "qwen3moe-tinyk-q4_K:topk" \
            "olmoe-tiny-q4_0:qknorm" "qwen2moe-tiny-q8_0:rope"; do
    model=$M/${spec%%:*}.gguf; mut=${spec#*:}
    compare "$model" "$mut"; rc=$?
    if [ $rc = 1 ]; then echo "ok    negative control $spec detected"
    else echo "FAIL  negative control $spec NOT detected (rc $rc)"; fail=$((fail+1)); fi
done
echo "forward vs reference: $n models, $fail failures"
[ $fail = 0 ]
