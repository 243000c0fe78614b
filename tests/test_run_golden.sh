#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# `moed run --temp 0` prints the same text as llama.cpp's greedy generation
# for the same prompt. tests/data/golden/run/NAME.out holds what
# llama-completion printed (made by hand, see tests/data/golden/README.md):
# the generated text, then "\n\n" (" [end of text]\n\n\n" when the model
# stopped at its end-of-generation token), raw bytes. moed never emits invalid UTF-8: it replaces each
# invalid sequence with U+FFFD the way the WHATWG decoder does, so the
# reference is compared after the same replacement. The models are the f32
# ones (see tests/data/golden/README.md for why quantized ones are not used
# for exact text).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PY=/usr/bin/python3
G=tests/data/golden/run
PROMPT="Hello world, this is a test of"
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
n=0; fail=0
for ref in "$G"/*.out; do
    name=$(basename "$ref" .out)
    model=$BUILD/models/$name.gguf
    n=$((n+1))
    if ! grep -q " $name\$" tests/data/golden/MANIFEST || \
       [ "$(sha256sum "$model" 2>/dev/null | cut -d' ' -f1)" != "$(grep " $name\$" tests/data/golden/MANIFEST | cut -d' ' -f1)" ]; then
        echo "FAIL  $name: model missing or different from the one the golden text was made with"; fail=$((fail+1)); continue
    fi
    "$BUILD/moed" run -m "$model" -p "$PROMPT" -n 12 --temp 0 > "$TMP/out" 2> "$TMP/err" || {
        echo "FAIL  $name: moed run failed: $(tail -n1 "$TMP/err")"; fail=$((fail+1)); continue; }
    if $PY - "$ref" "$TMP/out" <<'PY'
import sys
ref = open(sys.argv[1], "rb").read()
out = open(sys.argv[2], "rb").read()
eot = b" [end of text]\n\n\n"
if ref.endswith(eot):
    ref = ref[: -len(eot)]
else:
    assert ref.endswith(b"\n\n"), "reference does not end as llama-completion's output does"
    ref = ref[:-2]
want = ref.decode("utf-8", errors="replace").encode("utf-8")
if want != out:
    print("want %r\n got %r" % (want, out))
    sys.exit(1)
PY
    then echo "ok    $name"; else echo "FAIL  $name"; fail=$((fail+1)); fi
done
[ $n -gt 0 ] || { echo "no golden text"; exit 1; }
echo "moed run vs llama.cpp: $n models, $fail failures"
[ $fail = 0 ]
