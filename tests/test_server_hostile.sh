#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Hostile clients against `moed serve` on 127.0.0.1 (ephemeral ports, the
# tiny model): tests/server/hostile.py sends 80-odd malformed or hostile
# requests, each checked for its status and error JSON with /health answered
# after it, then the disconnect test (one chunk of a 500-token stream, then
# close: no running sequence within two engine steps). Then, on a second
# server: the notify protocol (READY=1, STATUS, STOPPING=1 on NOTIFY_SOCKET),
# SIGHUP reopening the log file, and the SIGTERM drain (in-flight streams
# finish, an idle keep-alive connection is closed, new connections are
# refused, exit code 0). Every server started here is killed on exit.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
MOED=$BUILD/moed
MODEL=$BUILD/models/qwen3moe-tiny-qwenvocab.gguf
PY=/usr/bin/python3
for t in curl "$PY"; do
    command -v "$t" >/dev/null || { echo "skip: $t is not installed"; exit 77; }
done
[ -x "$MOED" ] || { echo "skip: $MOED is not built"; exit 77; }
[ -f "$MODEL" ] || { echo "skip: $MODEL is missing (bash tests/make_models.sh $BUILD)"; exit 77; }

TMP=$(mktemp -d)
. tests/server/harness.sh

KEY=sk-hostile-$$
cat >"$TMP/hostile.json" <<EOF
{"server": {"host": "127.0.0.1", "port": 0, "api_keys": ["$KEY"], "open_health": true, "open_metrics": true,
            "idle_timeout_s": 1.5, "max_header_bytes": 4096, "max_body_bytes": 65536, "max_json_depth": 32,
            "drain_timeout_s": 20},
 "engine": {"ctx_size": 1024, "parallel": 4, "threads": 2}}
EOF

# ---- hostile requests and the disconnect test ----
LOG=$TMP/server.log
if start_server "$LOG" -m "$MODEL" --config "$TMP/hostile.json"; then
    if timeout 240 "$PY" tests/server/hostile.py "$PORT" "$KEY"; then ok "hostile requests (tests/server/hostile.py)"
    else bad "hostile requests (tests/server/hostile.py)"; fi
    kill -0 "$SPID" 2>/dev/null && ok "the server is still running" || bad "the server died"
    grep -E "AddressSanitizer|runtime error|LeakSanitizer" "$LOG" && bad "sanitizer report in the server log" ||
        ok "no sanitizer report"
    kill -TERM "$SPID"; wait "$SPID"; rc=$?
    [ $rc = 0 ] && ok "exit 0 after the hostile run" || bad "exit code after the hostile run" "$rc"
else
    bad "server start"
fi

# ---- notify protocol, SIGHUP, SIGTERM drain ----
NS=$TMP/notify.sock
"$PY" -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1]); s.settimeout(60)
f = open(sys.argv[2], "ab", 0)
try:
    while True:
        f.write(s.recv(4096).replace(b"\n", b" ") + b"\n")
except socket.timeout:
    pass' "$NS" "$TMP/notify.txt" &
PIDS+=($!)
for _ in $(seq 50); do [ -S "$NS" ] && break; sleep 0.05; done
LOG2=$TMP/drain.log
if GREPLOG=$LOG2 NOTIFY_SOCKET=$NS start_server "$TMP/drain.stderr" -m "$MODEL" --config "$TMP/hostile.json" --log-file "$LOG2" \
        --log-level info; then
    B=http://127.0.0.1:$PORT
    for _ in $(seq 50); do grep -q READY=1 "$TMP/notify.txt" 2>/dev/null && break; sleep 0.05; done
    grep -q "STATUS=loading" "$TMP/notify.txt" && ok "notify: STATUS while loading" || bad "notify STATUS" "$(cat "$TMP/notify.txt")"
    grep -q "READY=1 STATUS=serving" "$TMP/notify.txt" && ok "notify: READY=1 with STATUS" || bad "notify READY" "$(cat "$TMP/notify.txt")"

    mv "$LOG2" "$LOG2.1"
    kill -HUP "$SPID"
    for _ in $(seq 50); do [ -s "$LOG2" ] && break; sleep 0.05; done
    curl -s -o /dev/null "$B/health"
    sleep 0.2
    grep -q "SIGHUP: reopened" "$LOG2" && grep -q 'access: .*"GET /health" 200' "$LOG2" &&
        ok "SIGHUP reopens log.file; the access log goes to the new file" || bad "SIGHUP reopen" "$(cat "$LOG2" 2>/dev/null)"

    for i in 1 2; do
        curl -sN -H "Authorization: Bearer $KEY" "$B/v1/completions" \
            -d '{"prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": true, "stream": true}' >"$TMP/s$i.out" 2>/dev/null &
        CP[$i]=$!
    done
    # An idle keep-alive connection: the drain must close it, not wait on it.
    "$PY" -c '
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
t0 = time.time(); got = b""
s.settimeout(25)
try:
    while True:
        d = s.recv(4096)
        if not d:
            break
        if not got:
            open(sys.argv[2] + ".up", "w").close()  # connected and answered: idle from now on
        got += d
except socket.timeout:
    pass
print("closed" if got.startswith(b"HTTP/1.1 200") and time.time() - t0 < 20 else "open", file=open(sys.argv[2], "w"))
' "$PORT" "$TMP/idle.out" &
    IDLE=$!
    # Both streams running and the idle connection answered (python may
    # take a while to start on a loaded machine) before the signal.
    for _ in $(seq 500); do [ -s "$TMP/s1.out" ] && [ -s "$TMP/s2.out" ] && [ -e "$TMP/idle.out.up" ] && break; sleep 0.02; done
    t0=$(date +%s.%N)
    kill -TERM "$SPID"
    ! grep -q '\[DONE\]' "$TMP/s1.out" "$TMP/s2.out" && ok "both streams were still running at SIGTERM" ||
        bad "a stream had finished before SIGTERM (make it longer)"
    sleep 0.3
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$B/health"); crc=$?
    [ $crc = 7 ] && ok "after SIGTERM new connections are refused" || bad "new connections refused" "curl $crc $code"
    wait "${CP[1]}" "${CP[2]}"
    wait "$IDLE"
    wait "$SPID"; src=$?
    dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    [ $src = 0 ] && ok "SIGTERM: exit code 0 after ${dt}s" || bad "SIGTERM exit code" "$src"
    for i in 1 2; do
        [ "$(tail -c 14 "$TMP/s$i.out" | head -c 12)" = "data: [DONE]" ] && [ "$(grep -c '^data: {' "$TMP/s$i.out")" -ge 400 ] &&
            ok "SIGTERM: in-flight stream $i finished (400 tokens, [DONE])" || bad "stream $i finished" "$(tail -c 200 "$TMP/s$i.out")"
    done
    [ "$(cat "$TMP/idle.out")" = closed ] && ok "SIGTERM: an idle keep-alive connection is closed" || bad "idle connection closed"
    grep -q "STOPPING=1" "$TMP/notify.txt" && ok "notify: STOPPING=1" || bad "notify STOPPING" "$(cat "$TMP/notify.txt")"
    grep -q "drained; exiting" "$LOG2" && ok "drain logged" || bad "drain logged"
else
    bad "second server start"
fi

echo
echo "$pass passed, $fail failed"
[ $fail = 0 ] || { echo "server log tail:"; tail -n 30 "$LOG"; exit 1; }
