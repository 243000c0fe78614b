#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The process stays within its memory plan: `moed run` on the medium test
# model with the expert cache at 25 %, inside a memory cgroup limited to the
# plan's total plus 64 MiB, must succeed (the experts come from the file
# through the cache, not from the page cache or the heap) and give the
# tokens of an unlimited run; with --expert-cache auto under a limit that
# cannot hold every expert, the plan must shrink the cache to fit and the
# run must succeed too. Needs a writable memory cgroup (v1 or v2), else skips.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
MOED=$BUILD/moed
MODEL=$BUILD/models/qwen3moe-medium-q8_0.gguf
[ -f "$MODEL" ] || { echo "skip: $MODEL is missing (make models)"; exit 77; }
CG=
if [ -w /sys/fs/cgroup/cgroup.subtree_control ] && grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
    CG=/sys/fs/cgroup/moed-test-$$; V=2
elif [ -d /sys/fs/cgroup/memory ] && [ -w /sys/fs/cgroup/memory ]; then
    CG=/sys/fs/cgroup/memory/moed-test-$$; V=1
fi
[ -n "$CG" ] && mkdir "$CG" 2>/dev/null || { echo "skip: no writable memory cgroup here"; exit 77; }
T=$(mktemp -d)
trap 'rmdir "$CG" 2>/dev/null; rm -rf "$T"' EXIT
set_limit() { if [ $V = 2 ]; then echo "$1" >"$CG/memory.max"; else echo "$1" >"$CG/memory.limit_in_bytes"; fi; }
in_cg() { sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$CG" "$@"; }
P="The history of the expert cache begins with a question about memory"
fails=0

"$MOED" run -m "$MODEL" -p "$P" -n 24 --temp 0 --ignore-eos >"$T/ref" 2>/dev/null || { echo "FAIL: reference run"; exit 1; }
"$MOED" run -m "$MODEL" -p "$P" -n 24 --temp 0 --ignore-eos --expert-cache 25% --stats-json "$T/plan.json" \
    >/dev/null 2>&1 || { echo "FAIL: plan run"; exit 1; }
total=$(jq -r '.memory_plan.total_bytes' "$T/plan.json")
experts=$(jq -r '.memory_plan.expert_bytes' "$T/plan.json")
limit=$((total + 64 * 1024 * 1024))
set_limit $limit
echo "plan total $((total >> 20)) MiB (experts $((experts >> 20)) MiB); cgroup v$V limit $((limit >> 20)) MiB"
if in_cg "$MOED" run -m "$MODEL" -p "$P" -n 24 --temp 0 --ignore-eos --expert-cache 25% --stats-json "$T/st.json" \
    >"$T/out" 2>"$T/err"; then
    cmp -s "$T/ref" "$T/out" && echo "ok    25% cache within plan + 64 MiB: same tokens" ||
        { echo "FAIL  25% cache: output differs"; fails=$((fails+1)); }
    jq -r '"      peak RSS \(.peak_rss_bytes / 1048576 | floor) MiB, plan \(.memory_plan.total_bytes / 1048576 | floor) MiB, hit rate \(.cache.hit_rate * 1000 | floor / 10) %"' "$T/st.json"
else
    echo "FAIL  25% cache under the cgroup: $(tail -2 "$T/err")"; fails=$((fails+1))
fi
# auto under a limit that cannot hold every expert
set_limit $((experts / 2 + 256 * 1024 * 1024))
if in_cg "$MOED" run -m "$MODEL" -p "$P" -n 24 --temp 0 --ignore-eos --stats-json "$T/auto.json" \
    >"$T/out" 2>"$T/err"; then
    resident=$(jq -r '.memory_plan.experts_resident' "$T/auto.json")
    cmp -s "$T/ref" "$T/out" && [ "$resident" = false ] &&
        echo "ok    auto under a $(( (experts / 2 + 256 * 1024 * 1024) >> 20 )) MiB cgroup: cache of $(jq -r '.memory_plan.expert_cache_bytes / 1048576 | floor' "$T/auto.json") MiB, same tokens" ||
        { echo "FAIL  auto: resident=$resident or output differs"; fails=$((fails+1)); }
else
    echo "FAIL  auto under the cgroup: $(tail -2 "$T/err")"; fails=$((fails+1))
fi
[ $fails = 0 ]
