#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Integration test of `moed serve`: starts it on 127.0.0.1 with an ephemeral
# port and a tiny model, checks the configuration errors, then uses curl and
# the official `openai` npm client (tests/server/api.test.js) against it,
# then authentication, the queue limit (429), and the SIGTERM drain.
# Loopback only; every server started here is killed on exit.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
MOED=$BUILD/moed
MODEL=$BUILD/models/qwen3moe-tiny-qwenvocab.gguf
for t in node curl jq; do
    command -v $t >/dev/null || { echo "skip: $t is not installed"; exit 77; }
done
[ -x "$MOED" ] || { echo "skip: $MOED is not built"; exit 77; }
[ -f "$MODEL" ] || { echo "skip: $MODEL is missing (bash tests/make_models.sh $BUILD)"; exit 77; }
[ -f node_modules/openai/package.json ] || { echo "skip: the openai npm package is not installed (make setup)"; exit 77; }

TMP=$(mktemp -d)
. tests/server/harness.sh
check() { # name command...
    local name=$1; shift
    if "$@" >/dev/null 2>&1; then ok "$name"; else bad "$name"; fi
}

# ---- configuration errors ----
echo '{"server": {"port": 0, "nope": 1}}' >"$TMP/unknown.json"
out=$("$MOED" serve -m "$MODEL" --config "$TMP/unknown.json" 2>&1); rc=$?
[ $rc = 2 ] && grep -q "server.nope" <<<"$out" && ok "config: unknown key rejected, named" || bad "config: unknown key" "$rc $out"
echo '{"engine": {"parallel": "four"}}' >"$TMP/badtype.json"
out=$("$MOED" serve -m "$MODEL" --config "$TMP/badtype.json" 2>&1); rc=$?
[ $rc = 2 ] && grep -q "engine.parallel" <<<"$out" && ok "config: wrong type rejected, named" || bad "config: wrong type" "$rc $out"
echo '{"server": {"max_connections": 0}}' >"$TMP/range.json"
out=$("$MOED" serve -m "$MODEL" --config "$TMP/range.json" 2>&1); rc=$?
[ $rc = 2 ] && grep -q "server.max_connections" <<<"$out" && ok "config: out of range rejected, named" || bad "config: range" "$rc $out"
echo '{"server": ' >"$TMP/broken.json"
out=$("$MOED" serve -m "$MODEL" --config "$TMP/broken.json" 2>&1); rc=$?
[ $rc = 2 ] && grep -q "broken.json" <<<"$out" && ok "config: malformed file rejected" || bad "config: malformed file" "$rc $out"
out=$("$MOED" serve -m "$MODEL" --port 70000 2>&1); rc=$?
[ $rc = 2 ] && grep -q "server.port" <<<"$out" && ok "flags: bad --port rejected, named" || bad "flags: bad --port" "$rc $out"
out=$("$MOED" serve -m "$MODEL" -ctk q4 2>&1); rc=$?
[ $rc = 2 ] && grep -q "engine.kv_type" <<<"$out" && ok "flags: bad -ctk rejected, named" || bad "flags: bad -ctk" "$rc $out"
out=$("$MOED" serve --frobnicate 2>&1); rc=$?
[ $rc = 2 ] && grep -q "frobnicate" <<<"$out" && ok "flags: unknown flag rejected" || bad "flags: unknown flag" "$rc $out"
out=$("$MOED" serve --help 2>&1); rc=$?
[ $rc = 0 ] && grep -q -- "--config" <<<"$out" && ok "serve --help" || bad "serve --help" "$rc"
mkdir -p "$TMP/repo/build" && cp "$MOED" "$TMP/repo/build/moed"
out=$("$TMP/repo/build/moed" serve 2>&1); rc=$?
[ $rc = 1 ] && grep -q "make setup" <<<"$out" && ok "no model and no demo model: says to run make setup" || bad "default model message" "$rc $out"
out=$("$MOED" serve -m "$TMP/none.gguf" 2>&1); rc=$?
[ $rc = 1 ] && grep -q "none.gguf" <<<"$out" && ok "missing model file named" || bad "missing model" "$rc $out"

# ---- the main server ----
LOG=$TMP/server.log
if ! start_server "$LOG" -m "$MODEL" --host 127.0.0.1 --port 0 -np 4 -t 2; then
    echo "0 passed, 1 failed"; exit 1
fi
MAIN_PID=$SPID
B=http://127.0.0.1:$PORT
grep -q "config: server.port = 0" "$LOG" && grep -q "config: engine.parallel = 4" "$LOG" && ok "effective config logged" || bad "effective config logged"
grep -q "memory plan:" "$LOG" && ok "memory plan logged" || bad "memory plan logged"

r=$(curl -s "$B/health"); check "curl /health" jq -e '.status == "ok"' <<<"$r"
r=$(curl -s "$B/v1/completions" -H 'Content-Type: application/json' \
    -d '{"prompt": "Once upon a time", "max_tokens": 5, "temperature": 0}')
check "curl completion shape" jq -e '(.id | startswith("cmpl-")) and .object == "text_completion" and
    (.choices[0].text | type) == "string" and .choices[0].index == 0 and .usage.total_tokens > 0 and
    (.usage.prompt_tokens_details.cached_tokens | type) == "number"' <<<"$r"
r=$(curl -sN "$B/v1/completions" -d '{"prompt": "Once upon a time", "max_tokens": 5, "temperature": 0, "stream": true}')
[ "$(printf '%s' "$r" | tail -n 1)" = "data: [DONE]" ] && ok "curl stream ends with [DONE]" || bad "curl stream" "$r"
code=$(curl -s -o "$TMP/e.json" -w '%{http_code}' "$B/v1/completions" -d '{"prompt": "x", "top_p": 7}')
[ "$code" = 400 ] && jq -e '.error.param == "top_p" and .error.type == "invalid_request_error" and has("error") and
    (.error | has("code"))' "$TMP/e.json" >/dev/null && ok "curl 400 error object" || bad "curl 400" "$code $(cat "$TMP/e.json")"
code=$(curl -s -o "$TMP/e.json" -w '%{http_code}' -X PUT "$B/v1/models")
[ "$code" = 405 ] && jq -e '.error.message' "$TMP/e.json" >/dev/null && ok "curl 405" || bad "curl 405" "$code"

echo "---- openai client (tests/server/api.test.js) ----"
if timeout 170 node tests/server/api.test.js "$B"; then ok "openai client tests"; else bad "openai client tests"; fi

# ---- SIGTERM drain: the running stream finishes, new connections are refused, exit 0 ----
curl -sN "$B/v1/completions" -d '{"prompt": "Once upon a time", "max_tokens": 120, "ignore_eos": true, "stream": true}' \
    >"$TMP/drain.out" 2>/dev/null &
CURL_PID=$!
for _ in $(seq 100); do [ -s "$TMP/drain.out" ] && break; sleep 0.02; done
kill -TERM "$MAIN_PID"
sleep 0.2
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$B/health"); crc=$?
[ $crc != 0 ] && ok "after SIGTERM new connections are refused" || bad "new connections refused" "$crc $code"
wait "$CURL_PID"
wait "$MAIN_PID"; src=$?
[ $src = 0 ] && ok "SIGTERM: exit code 0" || bad "SIGTERM exit code" "$src"
[ "$(tail -c 14 "$TMP/drain.out" | head -c 12)" = "data: [DONE]" ] && [ "$(grep -c '^data: {' "$TMP/drain.out")" -ge 120 ] &&
    ok "SIGTERM: the in-flight stream finished" || bad "in-flight stream finished" "$(tail -c 200 "$TMP/drain.out")"
grep -q "draining" "$LOG" && ok "drain logged" || bad "drain logged"
grep -q 'access: 127.0.0.1:[0-9]* "POST /v1/completions" 200' "$LOG" && ok "access log lines" || bad "access log"

# ---- config.example.json: accepted, and documents every key the server logs ----
# (With a template whose generation prompt opens <think>, so that the
# reasoning split is exercised: everything generated is reasoning.)
cat >"$TMP/think.jinja" <<'JINJA'
{%- for m in messages %}<|im_start|>{{ m.role }}
{% if m.reasoning_content %}<think>{{ m.reasoning_content }}</think>{% endif %}{{ m.content }}<|im_end|>
{% endfor %}{%- if add_generation_prompt %}<|im_start|>assistant
<think>
{% endif %}
JINJA
LOG3=$TMP/example.log
if start_server "$LOG3" -m "$MODEL" --config config.example.json --port 0 --chat-template "$TMP/think.jinja" --alias tiny; then
    B3=http://127.0.0.1:$PORT
    req='{"model": "tiny", "messages": [{"role": "user", "content": "Think."}], "max_tokens": 8, "temperature": 0, "ignore_eos": true'
    r=$(curl -s "$B3/v1/chat/completions" -d "$req}")
    rs=$(jq -c '.choices[0].message.reasoning_content' <<<"$r")
    check "reasoning_content when the prompt opens <think>" jq -e '.model == "tiny" and (.choices[0].message.reasoning_content | length) > 0' <<<"$r"
    s=$(curl -sN "$B3/v1/chat/completions" -d "$req, \"stream\": true}" | sed -n 's/^data: //p' | grep -v '^\[DONE\]' |
        jq -s -c 'map(.choices[0].delta.reasoning_content // "") | join("")')
    [ "$rs" != null ] && [ "$rs" != '""' ] && [ "$s" = "$rs" ] && ok "streamed reasoning_content == non-streamed" || bad "streamed reasoning" "[$s] [$rs]"
    logged=$(grep -o 'config: [a-z_.]* =' "$LOG3" | awk '{print $2}' | sort)
    documented=$(jq -r 'paths(type != "object") | select(length == 2) | select(.[1] | startswith("#") | not) | join(".")' \
        config.example.json | sort -u)
    [ -n "$logged" ] && [ "$logged" = "$documented" ] && ok "config.example.json documents exactly the server's keys" ||
        bad "config.example.json keys" "$(diff <(echo "$logged") <(echo "$documented") | head -5)"
    kill -TERM "$SPID"; wait "$SPID"
else
    bad "server with config.example.json"
fi

# ---- authentication and the queue limit ----
cat >"$TMP/auth.json" <<'EOF'
{"server": {"api_keys": ["sk-test-1", "sk-test-2"], "max_queued": 1, "open_metrics": false},
 "engine": {"parallel": 1, "threads": 1}}
EOF
LOG2=$TMP/auth.log
if start_server "$LOG2" -m "$MODEL" --config "$TMP/auth.json" --port 0; then
    B2=http://127.0.0.1:$PORT
    code=$(curl -s -o "$TMP/a.json" -w '%{http_code}' "$B2/v1/models")
    [ "$code" = 401 ] && jq -e '.error.code == "invalid_api_key"' "$TMP/a.json" >/dev/null && ok "401 without a key" || bad "401 without key" "$code"
    code=$(curl -s -o "$TMP/a.json" -w '%{http_code}' -H 'Authorization: Bearer sk-test-3' "$B2/v1/models")
    [ "$code" = 401 ] && ok "401 with a wrong key" || bad "401 wrong key" "$code"
    code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer sk-test-2' "$B2/v1/models")
    [ "$code" = 200 ] && ok "200 with a good key" || bad "200 with key" "$code"
    code=$(curl -s -o /dev/null -w '%{http_code}' "$B2/health")
    [ "$code" = 200 ] && ok "/health open without a key" || bad "/health open" "$code"
    code=$(curl -s -o /dev/null -w '%{http_code}' "$B2/metrics")
    [ "$code" = 401 ] && ok "/metrics closed without a key" || bad "/metrics closed" "$code"
    QP=()
    for i in 1 2 3 4 5 6; do
        curl -s -o "$TMP/q$i.json" -D "$TMP/q$i.h" -w '%{http_code}' -H 'Authorization: Bearer sk-test-1' "$B2/v1/completions" \
            -d '{"prompt": "Once upon a time", "max_tokens": 200, "ignore_eos": true}' >"$TMP/q$i.code" &
        QP+=($!)
    done
    wait "${QP[@]}"
    n429=$(cat "$TMP"/q*.code | grep -o 429 | wc -l); n200=$(cat "$TMP"/q*.code | grep -o 200 | wc -l)
    [ "$n429" -ge 1 ] && [ "$n200" -ge 2 ] && [ $((n429 + n200)) = 6 ] && grep -qi '^Retry-After:' "$TMP"/q*.h &&
        ok "queue full: 429 with Retry-After, the others served ($n200 x 200, $n429 x 429)" || bad "queue full 429" "$(cat "$TMP"/q*.code)"
    code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer sk-test-1' "$B2/v1/completions" -d '{"prompt": "x", "max_tokens": 2}')
    [ "$code" = 200 ] && ok "served again after the 429s" || bad "served after 429" "$code"
    kill -TERM "$SPID"; wait "$SPID"
else
    bad "auth server start"
fi

echo
echo "$pass passed, $fail failed"
[ $fail = 0 ] || { echo "server log tail:"; tail -n 30 "$LOG"; exit 1; }
