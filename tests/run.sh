#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs every test: the C test executables in $BUILD/tests and the scripts
# tests/test_*.sh. Exit 0 = pass, 77 = skip, anything else = fail. Prints one
# line per test and a closing "N passed, N failed, N skipped" summary.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export BUILD
pass=0; fail=0; skip=0; failed=()
mkdir -p "$BUILD/test-logs"
run_one() {
    local name=$1; shift
    local log="$BUILD/test-logs/$name.log"
    local t0=$(date +%s%N)
    "$@" >"$log" 2>&1
    local rc=$?
    local dt=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
    if [ $rc = 0 ]; then
        pass=$((pass+1)); echo "PASS  $name (${dt}s)"
    elif [ $rc = 77 ]; then
        skip=$((skip+1)); echo "SKIP  $name: $(tail -n1 "$log")"
    else
        fail=$((fail+1)); failed+=("$name"); echo "FAIL  $name (exit $rc, ${dt}s)"
        tail -n 30 "$log" | sed 's/^/    | /'
    fi
}
for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    case "$t" in *.d|*.o) continue;; esac
    run_one "$(basename "$t")" "$t"
done
for t in tests/test_*.sh; do
    [ -f "$t" ] || continue
    run_one "$(basename "$t")" bash "$t"
done
echo
[ ${#failed[@]} -gt 0 ] && echo "failed: ${failed[*]}"
echo "$pass passed, $fail failed, $skip skipped"
[ $fail = 0 ]
