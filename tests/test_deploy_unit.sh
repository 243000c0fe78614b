#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Checks deploy/moed.service: `systemd-analyze verify` accepts it with no
# warning (on a copy whose ExecStart points at the built binary, since verify
# wants the binary to exist), it has the settings the hardening issue asks
# for and not the two that would break the GPU and PCRE2's JIT, its stop
# timeout covers the drain of config.example.json (what the README installs as
# /etc/moed/config.json). Skips (77) when systemd-analyze is missing.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
UNIT=deploy/moed.service
command -v systemd-analyze >/dev/null || { echo "skip: systemd-analyze is not installed (apt-get install systemd)"; exit 77; }
[ -x "$BUILD/moed" ] || { echo "skip: $BUILD/moed is not built"; exit 77; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0; fail=0
ok() { pass=$((pass+1)); echo "ok    $1"; }
bad() { fail=$((fail+1)); echo "FAIL  $1${2:+: $2}"; }

exe=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$UNIT")
[ "$exe" = /usr/local/bin/moed ] && ok "ExecStart runs /usr/local/bin/moed" || bad "ExecStart" "$exe"
sed "s#^ExecStart=$exe #ExecStart=$(realpath "$BUILD/moed") #" "$UNIT" >"$TMP/moed.service"
out=$(systemd-analyze verify --man=no "$TMP/moed.service" 2>&1); rc=$?
# verify exits 0 on unknown keys and bad values but says so: any output fails.
[ $rc = 0 ] && [ -z "$out" ] && ok "systemd-analyze verify: no error, no warning" || bad "systemd-analyze verify" "rc $rc: $out"

# The copy with a deliberate mistake is caught (the check above can fail).
printf '\n[Service]\nProtectSystm=strict\n' >>"$TMP/moed.service"
out=$(systemd-analyze verify --man=no "$TMP/moed.service" 2>&1)
[ -n "$out" ] && ok "a misspelled key is reported" || bad "misspelled key not reported"

has() { grep -qx "$1" "$UNIT" && ok "has $1" || bad "missing $1"; }
has "Type=notify"
has "DynamicUser=yes"
has "ProtectSystem=strict"
has "NoNewPrivileges=yes"
has "PrivateTmp=yes"
has "LimitMEMLOCK=infinity"
has 'ExecReload=/bin/kill -HUP $MAINPID'
grep -q '^ReadOnlyPaths=.*/var/lib/moed/models' "$UNIT" && ok "ReadOnlyPaths covers the model directory" || bad "ReadOnlyPaths"
grep -q '^ExecStart=.* --config /etc/moed/' "$UNIT" && ok "config file under /etc/moed/" || bad "config path"
! grep -Eq '^(PrivateDevices|MemoryDenyWriteExecute)=' "$UNIT" && ok "no PrivateDevices, no MemoryDenyWriteExecute" ||
    bad "PrivateDevices or MemoryDenyWriteExecute is set"
grep -q '^# - PrivateDevices' "$UNIT" && grep -q '^# - MemoryDenyWriteExecute' "$UNIT" &&
    ok "the unit says why those two are off" || bad "comment on PrivateDevices/MemoryDenyWriteExecute"

stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)$/\1/p' "$UNIT")
drain=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["server"]["drain_timeout_s"])' config.example.json)
[ -n "$stop" ] && /usr/bin/python3 -c "import sys; sys.exit(0 if $stop > $drain else 1)" &&
    ok "TimeoutStopSec ($stop s) covers server.drain_timeout_s ($drain s)" || bad "TimeoutStopSec vs drain" "$stop $drain"

echo
echo "$pass passed, $fail failed"
[ $fail = 0 ]
