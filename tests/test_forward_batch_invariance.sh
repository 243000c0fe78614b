#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The logits of a token do not depend on what else is in its batch: feeding a
# prompt one token at a time and in batches of 7 (and at 1 and 2 threads)
# gives bit-identical logits, for every architecture and the main types.
# Continuous batching relies on this to give each request the output it
# would get alone.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
T=5,17,42,99,3,250,7,64,128,33,11,200,301,77,18,400,21,90,13,6
n=0; bad=0
for m in "$BUILD"/models/*-tiny-f32.gguf "$BUILD"/models/*-tiny-q8_0.gguf "$BUILD"/models/*-tinyk-q4_K.gguf \
         "$BUILD"/models/*-tinyk-q6_K.gguf "$BUILD"/models/*-tiny-bf16.gguf; do
    [ -f "$m" ] || continue
    n=$((n+1))
    "$BUILD/moed" logits -m "$m" --tokens $T --batch 1 -o "$TMP/a" 2>/dev/null &&
    "$BUILD/moed" logits -m "$m" --tokens $T --batch 7 -o "$TMP/b" 2>/dev/null &&
    "$BUILD/moed" logits -m "$m" --tokens $T --batch 20 --threads 1 -o "$TMP/c" 2>/dev/null || { echo "FAIL  $m: moed failed"; bad=$((bad+1)); continue; }
    if cmp -s "$TMP/a" "$TMP/b" && cmp -s "$TMP/a" "$TMP/c"; then echo "ok    $(basename "$m")"
    else echo "FAIL  $(basename "$m"): logits depend on the batch"; bad=$((bad+1)); fi
done
[ $n -gt 0 ] || { echo "no models"; exit 1; }
echo "batch invariance: $n models, $bad failures"
[ $bad = 0 ]
