# SPDX-License-Identifier: MIT
# Shared by the server test scripts (sourced; needs MOED and TMP set).
# start_server LOG FLAGS...: starts `moed serve` (ephemeral port), sets SPID
# and PORT, waits for /health 200; GREPLOG names another file to find
# "listening on" in (when log.file is set). cleanup: SIGTERM first (timeout
# passes it on to moed; SIGKILL would orphan it), then SIGKILL, then removes
# TMP. ok/bad count checks in pass/fail.
PIDS=()
pass=0; fail=0
ok() { pass=$((pass+1)); echo "ok    $1"; }
bad() { fail=$((fail+1)); echo "FAIL  $1${2:+: $2}"; }
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for _ in $(seq 30); do
        alive=0
        for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for p in "${PIDS[@]}"; do { kill -9 "$p" && wait "$p"; } 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT
start_server() {
    local log=$1; shift
    local grepf=${GREPLOG:-$log}
    timeout --foreground 300 "$MOED" serve "$@" >"$log" 2>&1 &
    SPID=$!
    PIDS+=("$SPID")
    PORT=
    for _ in $(seq 200); do
        PORT=$(grep -so 'listening on 127.0.0.1:[0-9]*' "$grepf" | head -n1 | sed 's/.*://')
        [ -n "$PORT" ] && break
        kill -0 "$SPID" 2>/dev/null || break
        sleep 0.05
    done
    [ -n "$PORT" ] || { echo "server did not start:"; cat "$log"; return 1; }
    for _ in $(seq 300); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health")" = 200 ] && return 0
        sleep 0.1
    done
    echo "server did not become ready:"; tail -n 20 "$log"
    return 1
}
