#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The expert store behind `moed serve`:
# - an expert whose reads fail (the loader's test hook MOED_TEST_EXPERT_FAIL,
#   a permanent failure) fails the requests that need it with an OpenAI
#   error JSON (500, streamed or not), the others answer 200, and the
#   server stays healthy (/health, /metrics with the failure counted);
# - a model file truncated under the running server is detected: requests
#   that must load an expert get 503 with a message saying the file changed,
#   /metrics says moed_model_file_changed 1, and nothing crashes;
# - the memory plan with the cache is logged; a cache too small for one
#   expert and a malformed size are refused at start with a message.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
MOED=$BUILD/moed
SRC=$BUILD/models/qwen3moe-tiny-qwenvocab.gguf
for t in curl jq; do command -v $t >/dev/null || { echo "skip: $t is not installed"; exit 77; }; done
[ -f "$SRC" ] || { echo "skip: $SRC is missing (bash tests/make_models.sh $BUILD)"; exit 77; }
TMP=$(mktemp -d)
. tests/server/harness.sh

# ---- refused at start ----
out=$("$MOED" serve -m "$SRC" --expert-cache 1K --port 0 2>&1); rc=$?
[ $rc != 0 ] && grep -q "too small" <<<"$out" && ok "expert cache too small for one expert: refused" || bad "tiny cache" "$rc $out"
out=$("$MOED" serve -m "$SRC" --expert-cache 12Q --port 0 2>&1); rc=$?
[ $rc = 2 ] && grep -q "cache.device" <<<"$out" && ok "malformed cache size: refused, key named" || bad "bad size" "$rc $out"

# ---- injected read failures ----
MODEL=$TMP/model.gguf
cp "$SRC" "$MODEL"
LOG=$TMP/s1.log
MOED_TEST_EXPERT_FAIL=0:1 start_server "$LOG" -m "$MODEL" --port 0 -np 4 -t 2 --expert-cache 40% || exit 1
B=http://127.0.0.1:$PORT
grep -q "expert cache .* slots" "$LOG" && grep -q "loaded on demand" "$LOG" && ok "memory plan with the expert cache logged" ||
    bad "plan logged"
n200=0; n500=0; other=0
# one-word prompts and one token each: each token meets 2 of the 8 experts,
# so some requests need expert 1 of layer 0 and some do not
for i in $(seq 1 12); do
    w=$(echo "cat dog sun red big run sea tree one two blue car" | cut -d' ' -f$i)
    code=$(curl -s -o "$TMP/r$i.json" -w '%{http_code}' "$B/v1/completions" -H 'Content-Type: application/json' \
        -d "{\"prompt\": \"$w\", \"max_tokens\": 1, \"temperature\": 0}")
    case $code in
    200) jq -e '.choices[0].text | type == "string"' "$TMP/r$i.json" >/dev/null && n200=$((n200+1)) || other=$((other+1)) ;;
    500) jq -e '.error.message | test("expert 1 of layer 0")' "$TMP/r$i.json" >/dev/null && n500=$((n500+1)) ||
             other=$((other+1)) ;;
    *) other=$((other+1)) ;;
    esac
done
echo "      12 requests: $n200 answered, $n500 failed on the expert, $other other"
[ $n500 -ge 1 ] && [ $other = 0 ] && ok "requests needing the failing expert get a 500 error JSON naming it" ||
    bad "failing expert" "$n200 $n500 $other"
[ $n200 -ge 1 ] && ok "requests not needing it are answered" || bad "others answered" "$n200"
# streamed: a prompt that failed above fails as an error event, one that was
# answered completes with [DONE]
fw=; aw=
for i in $(seq 1 12); do
    w=$(echo "cat dog sun red big run sea tree one two blue car" | cut -d' ' -f$i)
    jq -e '.error' "$TMP/r$i.json" >/dev/null 2>&1 && fw=${fw:-$w} || aw=${aw:-$w}
done
r=$(curl -sN "$B/v1/completions" -d "{\"prompt\": \"$fw\", \"max_tokens\": 1, \"temperature\": 0, \"stream\": true}")
grep -q '"error"' <<<"$r" && grep -q 'expert 1 of layer 0' <<<"$r" && ok "streamed: the failure arrives as an error event" ||
    bad "stream error" "$r"
r=$(curl -sN "$B/v1/completions" -d "{\"prompt\": \"$aw\", \"max_tokens\": 1, \"temperature\": 0, \"stream\": true}")
! grep -q '"error"' <<<"$r" && tail -n1 <<<"$r" | grep -q "data: \[DONE\]" &&
    ok "streamed request not needing the expert completes" || bad "stream ok" "$r"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$B/health")" = 200 ] && ok "healthy after the failures" || bad "health"
m=$(curl -s "$B/metrics")
grep -Eq '^moed_expert_cache_load_failures_total [1-9]' <<<"$m" && ok "/metrics counts the failed loads" || bad "metrics failures"
grep -Eq '^moed_expert_cache_lookups_total\{tier="device",result="miss"\} [1-9]' <<<"$m" && ok "/metrics counts misses" ||
    bad "metrics misses"
grep -Eq '^moed_expert_cache_enabled 1' <<<"$m" && ok "/metrics: cache enabled" || bad "metrics enabled"

# ---- the model file changes under the server ----
truncate -s 60000 "$MODEL"
codes=""
for i in $(seq 1 6); do
    code=$(curl -s -o "$TMP/c$i.json" -w '%{http_code}' "$B/v1/completions" \
        -d "{\"prompt\": \"a different prompt $i with other words\", \"max_tokens\": 8, \"temperature\": 0}")
    codes="$codes $code"
    [ "$code" = 503 ] && { jq -e '.error.message | test("changed under the server")' "$TMP/c$i.json" >/dev/null ||
        bad "503 message" "$(cat "$TMP/c$i.json")"; }
done
grep -q 503 <<<"$codes" && ok "after the file changed, loads fail with 503 ($codes)" || bad "file changed" "$codes"
grep -Eq '^moed_model_file_changed 1' <<<"$(curl -s "$B/metrics")" && ok "/metrics: moed_model_file_changed 1" ||
    bad "metrics changed"
grep -q "changed under the server" "$LOG" && ok "logged" || bad "log"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$B/health")" = 200 ] && kill -0 "$SPID" && ok "still running" || bad "alive"

echo "$pass passed, $fail failed"
[ $fail = 0 ]
