#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# moed's logits against golden outputs of llama.cpp (tests/data/golden, made
# by hand outside this repository: see its README). Each golden file holds
# llama.cpp's greedy tokens and its top logits at every position for one
# test model; moed is fed the same prompt plus llama.cpp's greedy tokens
# (teacher forcing) and must match the top logits and the argmax.
# The models are rebuilt by tests/make_models.sh from fixed seeds; MANIFEST
# records their sha256 when the golden data was made, so a change in the
# model writer is reported instead of compared against stale data.
# Tolerances as in test_forward_ref.sh, by activation precision: f32 1e-4 of
# the row maximum, f16 2e-3, bf16 and quantized types 5e-2.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PY=/usr/bin/python3
G=tests/data/golden
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
if ! $PY -c 'import numpy' 2>/dev/null; then echo "skip: Debian python3-numpy missing"; exit 77; fi
fail=0; n=0
while read -r sum name; do
    model=$BUILD/models/$name.gguf
    n=$((n+1))
    if [ ! -f "$model" ]; then echo "FAIL  $name: model missing"; fail=$((fail+1)); continue; fi
    if [ "$(sha256sum "$model" | cut -d' ' -f1)" != "$sum" ]; then
        echo "FAIL  $name: model bytes differ from those the golden data was made from (regenerate, see $G/README.md)"
        fail=$((fail+1)); continue
    fi
    rtol=5e-2
    case "$name" in *-f32|*-yarn|*-linear) rtol=1e-4;; *-f16|*-tied) rtol=2e-3;; esac
    toks=$($PY -c "import json,sys; g=json.load(open('$G/$name.json')); print(','.join(map(str, g['prompt'] + g['greedy'])))")
    if ! "$BUILD/moed" logits -m "$model" --tokens "$toks" --batch 12 -o "$TMP/$name.f32" > /dev/null; then
        echo "FAIL  $name: moed logits failed"; fail=$((fail+1)); continue
    fi
    if out=$($PY tests/golden_compare.py "$G/$name.json" "$TMP/$name.f32" --rtol $rtol); then
        echo "ok    $name  $(echo "$out" | tail -n1)"
    else
        echo "FAIL  $name"; echo "$out" | tail -n 8; fail=$((fail+1))
    fi
done < "$G/MANIFEST"
[ $n -gt 0 ] || { echo "no golden data"; exit 1; }
echo "forward vs llama.cpp: $n models, $fail failures"
[ $fail = 0 ]
