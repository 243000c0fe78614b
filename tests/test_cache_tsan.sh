#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The expert store's pinning and eviction under concurrency, under
# ThreadSanitizer: tests/test_cache_store.c's threaded test (4 threads
# acquiring, checking every pinned slot's bytes, prefetching and releasing,
# through io_uring and through the pread pool) built with -fsanitize=thread
# together with cache/ and common/ only (a few seconds). Any ThreadSanitizer
# report fails it.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
CC=${CC:-cc}
echo 'int main(void){return 0;}' | $CC -fsanitize=thread -x c - -o /dev/null 2>/dev/null ||
    { echo "skip: $CC cannot link -fsanitize=thread"; exit 77; }
OUT=$BUILD/tsan-cache
mkdir -p "$OUT"
$CC -std=gnu11 -g -O1 -fsanitize=thread -fno-omit-frame-pointer -I. -pthread -D_GNU_SOURCE -DTESTING \
    -o "$OUT/test_cache_store" tests/test_cache_store.c cache/*.c common/*.c kernels/types.c kernels/cpu/quant.c \
    -lcmocka -luring -lm || { echo "FAIL: build"; exit 1; }
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" "$OUT/test_cache_store" concurrency >"$OUT/log" 2>&1
rc=$?
if grep -q "WARNING: ThreadSanitizer" "$OUT/log" || [ $rc -ne 0 ]; then
    grep -A30 "WARNING: ThreadSanitizer" "$OUT/log" | head -60
    tail -5 "$OUT/log"
    echo "FAIL: ThreadSanitizer run (rc $rc, log $OUT/log)"
    exit 1
fi
grep -E "PASSED|FAILED" "$OUT/log"
echo "ok: store concurrency under ThreadSanitizer"
