#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds and runs the benchmarks (`make bench` calls this after building the
# library). Each bench/bench_*.c is built against $BUILD/libmoed.a with the
# library's flags into $BUILD/bench/. BENCH_QUICK=1 shortens the runs;
# BENCH_THREADS=N sets the largest thread count (default: the CPUs this
# process may use).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
CC=${CC:-cc}
mkdir -p "$BUILD/bench"

if [ ! -f "$BUILD/libmoed.a" ]; then
    echo "bench: $BUILD/libmoed.a is missing; run make first" >&2
    exit 1
fi
for src in bench/bench_*.c; do
    [ -f "$src" ] || continue
    name=$(basename "$src" .c)
    $CC -std=gnu11 -O2 -g -Wall -Wextra -Wshadow -I. -D_GNU_SOURCE -pthread -o "$BUILD/bench/$name" "$src" \
        "$BUILD/libmoed.a" -luv -lllhttp -lcjson -luring -lpcre2-8 -lutf8proc -lm -ldl
done

args=()
[ "${BENCH_QUICK:-0}" = 1 ] && args+=(-q -s 1024)
[ -n "${BENCH_THREADS:-}" ] && args+=(-t "$BENCH_THREADS")

echo "==== kernels ===="
"$BUILD/bench/bench_kernels" "${args[@]}"

# ==== end to end (model benchmarks) ====
# Reserved for the lead: prefill pp128/pp512 and decode tg128 on the medium
# test model through `moed bench`, for example
#   "$BUILD/moed" bench -m "$BUILD/models/<medium>.gguf" -p 128,512 -n 128
# ==== end of end to end ====
