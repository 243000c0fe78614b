#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A short run of every fuzzer (tests/fuzz/run.sh) as part of `make test`:
# FUZZ_SECONDS seconds each, 15 by default. Skips (77) when the fuzzer
# binaries were not built (they need clang with libFuzzer).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export BUILD
found=0
for f in "$BUILD"/fuzz/fuzz_*; do
    [ -x "$f" ] && [ -f "$f" ] && found=1
done
if [ $found = 0 ]; then
    echo "skip: no fuzzer binaries in $BUILD/fuzz (make fuzzers needs clang with libFuzzer)"
    exit 77
fi
FUZZ_SECONDS=${FUZZ_SECONDS:-15} bash tests/fuzz/run.sh
