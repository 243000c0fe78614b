#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs every system dependency of moed from Debian's packages and the
# npm packages the tests use (pinned in package-lock.json). Idempotent; runs
# as root on a fresh Debian 12. libllhttp-dev comes from Debian 13 (trixie),
# added with a low pin priority so nothing else is taken from it.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

PKGS="build-essential pkg-config clang libuv1-dev libcjson-dev liburing-dev
      libcmocka-dev python3-numpy libpcre2-dev libutf8proc-dev curl systemd"

need_apt=0
for p in $PKGS libllhttp-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_apt=1
done
command -v node >/dev/null && command -v npm >/dev/null || need_apt=1

if [ "$need_apt" = 1 ]; then
    if ! grep -rqs trixie /etc/apt/sources.list /etc/apt/sources.list.d/; then
        echo "setup: adding Debian trixie (pinned low) for libllhttp-dev"
        $SUDO tee /etc/apt/sources.list.d/moed-trixie.sources >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
        $SUDO tee /etc/apt/preferences.d/moed-trixie >/dev/null <<'PIN'
Package: *
Pin: release n=trixie
Pin-Priority: 100
PIN
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends $PKGS
    $SUDO apt-get install -y -q --no-install-recommends -t trixie libllhttp-dev
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        $SUDO apt-get install -y -q --no-install-recommends nodejs npm
    fi
fi

if [ -f package-lock.json ]; then
    if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
        npm ci --no-audit --no-fund --loglevel=error
    fi
fi
echo "setup: done"
