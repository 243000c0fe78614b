#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs every libFuzzer harness in $BUILD/fuzz (built by `make fuzzers`; this
# script builds nothing) for FUZZ_SECONDS seconds each (default 20).
# Seeds come from tests/fuzz/corpus/<fuzzer>/ and are copied into the working
# corpus $BUILD/fuzz/corpus-<fuzzer>, which grows across runs; crashing
# inputs land in $BUILD/fuzz/artifacts-<fuzzer>/. A dictionary
# tests/fuzz/<fuzzer>.dict is used when present.
# Exit: 0 when no fuzzer found anything, 1 when one did, 77 when there is no
# fuzzer binary to run.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
# UBSan reports are not fatal by default; make them findings.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}

shopt -s nullglob
fuzzers=()
for f in "$BUILD"/fuzz/fuzz_*; do
    [ -x "$f" ] && [ -f "$f" ] || continue
    case "$f" in *.d|*.o|*.log) continue;; esac
    fuzzers+=("$f")
done
if [ ${#fuzzers[@]} = 0 ]; then
    echo "no fuzzers in $BUILD/fuzz (run: make fuzzers)"
    exit 77
fi

status=0
for f in "${fuzzers[@]}"; do
    name=$(basename "$f")
    corpus="$BUILD/fuzz/corpus-$name"
    artifacts="$BUILD/fuzz/artifacts-$name/"
    log="$BUILD/fuzz/$name.log"
    mkdir -p "$corpus" "$artifacts"
    if [ -d "tests/fuzz/corpus/$name" ]; then
        cp -n "tests/fuzz/corpus/$name"/* "$corpus"/ 2>/dev/null || true
    fi
    dict=()
    [ -f "tests/fuzz/$name.dict" ] && dict=("-dict=tests/fuzz/$name.dict")
    echo "fuzz: $name for ${FUZZ_SECONDS}s (corpus $corpus)"
    "$f" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 -artifact_prefix="$artifacts" "${dict[@]}" "$corpus" >"$log" 2>&1
    rc=$?
    if [ $rc != 0 ]; then
        echo "FAIL  $name (exit $rc); log $log, inputs in $artifacts"
        grep -E "ERROR|SUMMARY|check failed|runtime error|Test unit written" "$log" | head -n 20 | sed 's/^/    | /'
        status=1
    else
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n1)
        echo "ok    $name: ${execs:-?} executions in ${FUZZ_SECONDS}s, $cov"
    fi
done
exit $status
