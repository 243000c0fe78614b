#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# ThreadSanitizer run of the engine and server tests, outside the Makefile
# (not part of `make test`: building and running take a few minutes).
# Compiles the library, moed and tests/test_engine_batch.c with
# -fsanitize=thread into $TSAN_DIR (default /tmp/tsan), then runs
# test_engine_batch, tests/test_server_hostile.sh and tests/test_server_api.sh
# against that moed (the
# test models are taken from $BUILD/models; run `make test` or
# `bash tests/make_models.sh $BUILD` first). Any "WARNING: ThreadSanitizer"
# report fails the run; reports are in $TSAN_DIR/logs/.
#   bash tests/tsan.sh            # build and run
#   TSAN_SKIP_BUILD=1 bash tests/tsan.sh
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
TSAN_DIR=${TSAN_DIR:-/tmp/tsan}
CC=${CC:-cc}
JOBS=${JOBS:-2}
[ -f "$BUILD/models/qwen3moe-tiny-qwenvocab.gguf" ] || { echo "skip: no test models in $BUILD/models"; exit 77; }
echo 'int main(void){return 0;}' | $CC -fsanitize=thread -x c - -o /dev/null 2>/dev/null ||
    { echo "skip: $CC cannot link -fsanitize=thread"; exit 77; }

CFLAGS="-std=gnu11 -g -O1 -fsanitize=thread -fno-omit-frame-pointer -Wall -Wextra -Wno-unused-parameter -Wshadow
        -Wstrict-prototypes -fno-strict-aliasing -I. -pthread -D_GNU_SOURCE"
LIBS="-luv -lllhttp -lcjson -luring -lpcre2-8 -lutf8proc -lm -ldl -pthread"
AVX2="-mavx2 -mfma -mf16c"
AVX512="$AVX2 -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512vnni -mavx512bf16"
OBJ=$TSAN_DIR/obj
B=$TSAN_DIR/build            # a BUILD directory for the test scripts
mkdir -p "$OBJ" "$B" "$TSAN_DIR/logs"

if [ "${TSAN_SKIP_BUILD:-0}" != 1 ]; then
    echo "tsan: compiling into $OBJ"
    srcs=$(ls common/*.c kernels/*.c kernels/cpu/*.c engine/*.c cache/*.c predictor/*.c server/*.c tools/*_lib.c \
        2>/dev/null | grep -v '^server/main.c$')
    export CC CFLAGS AVX2 AVX512 OBJ
    printf '%s\n' $srcs | xargs -P "$JOBS" -I{} sh -c '
        f={}; o=$OBJ/$(echo "${f%.c}" | tr / _).o; extra=
        case "$f" in *_avx512.c) extra=$AVX512;; *_avx2.c) extra=$AVX2;; esac
        [ "$o" -nt "$f" ] || $CC $CFLAGS $extra -c "$f" -o "$o" || exit 255' || { echo "tsan: compile failed"; exit 1; }
    rm -f "$OBJ/libmoed.a"
    ar rcs "$OBJ/libmoed.a" $(ls "$OBJ"/*.o | grep -v 'tools_.*_lib.o$')
    $CC $CFLAGS -o "$B/moed" server/main.c "$OBJ/libmoed.a" $LIBS || exit 1
    mkdir -p "$B/tests"
    $CC $CFLAGS -DTESTING -o "$B/tests/test_engine_batch" tests/test_engine_batch.c "$OBJ"/tools_*_lib.o \
        "$OBJ/libmoed.a" -lcmocka $LIBS || exit 1
fi
ln -sfn "$(realpath "$BUILD/models")" "$B/models"

# history_size keeps stacks of older accesses; exitcode 66 marks a report.
export TSAN_OPTIONS="halt_on_error=0 exitcode=66 history_size=4 second_deadlock_stack=1 log_path=$TSAN_DIR/logs/tsan"
rm -f "$TSAN_DIR"/logs/tsan.*
# Newer kernels randomize mmap more than TSan's shadow layout allows.
run() { if command -v setarch >/dev/null; then setarch "$(uname -m)" -R "$@"; else "$@"; fi; }

status=0
echo "tsan: test_engine_batch"
BUILD=$B run "$B/tests/test_engine_batch" >"$TSAN_DIR/logs/engine_batch.out" 2>&1; rc=$?
echo "  exit $rc"; [ $rc = 0 ] || status=1
for t in test_server_hostile test_server_api; do
    echo "tsan: $t.sh"
    BUILD=$B run bash tests/$t.sh >"$TSAN_DIR/logs/$t.out" 2>&1; rc=$?
    echo "  exit $rc: $(tail -n 1 "$TSAN_DIR/logs/$t.out")"; [ $rc = 0 ] || status=1
done

reports=$(cat "$TSAN_DIR"/logs/tsan.* 2>/dev/null | grep -c '^WARNING: ThreadSanitizer')
echo "tsan: $reports report(s)"
if [ "$reports" != 0 ]; then
    status=1
    cat "$TSAN_DIR"/logs/tsan.* | grep -A12 '^WARNING: ThreadSanitizer' | head -n 120
fi
exit $status
