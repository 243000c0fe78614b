#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Chat template reference test: engine/chat.c (through $BUILD/chatcheck)
# against @huggingface/jinja for the real templates in tests/data/templates
# (listed with their bos/eos in tests/chat/templates.json, sources in
# tests/data/templates/README.md) over the conversations of
# tests/chat/conversations.js, each with add_generation_prompt true and false
# and chat_template_kwargs {}, {enable_thinking: false}, {enable_thinking:
# true}. Every rendering must equal the reference byte for byte (a case both
# sides refuse, e.g. a system message for Mixtral, passes); every template
# must render at least 20 cases. Exit 0 pass, 1 fail, 77 skip (no node or no
# reference package).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}

skip() { echo "skip: $*"; exit 77; }
command -v node >/dev/null 2>&1 || skip "node is not installed"
[ -d node_modules/@huggingface/jinja ] || skip "@huggingface/jinja missing (make setup installs node_modules)"
[ -x "$BUILD/chatcheck" ] || { echo "FAIL: $BUILD/chatcheck not built"; exit 1; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

node tests/chat/reference.js "$TMP/cases.jsonl" "$TMP/ref.jsonl" || { echo "FAIL: reference renderer failed"; exit 1; }
"$BUILD/chatcheck" <"$TMP/cases.jsonl" >"$TMP/out.jsonl" || { echo "FAIL: chatcheck exited $?"; exit 1; }
node tests/chat/compare.js "$TMP/cases.jsonl" "$TMP/ref.jsonl" "$TMP/out.jsonl"
