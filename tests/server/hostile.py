#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Malformed and hostile requests against a running `moed serve`, over raw
# sockets on loopback. Usage: hostile.py PORT API_KEY
# The server must run with: an API key (API_KEY), server.open_health and
# server.open_metrics true, server.idle_timeout_s 1.5, max_header_bytes 4096,
# max_body_bytes 65536, max_json_depth 32, a context of 1024 tokens.
# Each case sends bytes and checks the status and OpenAI's error object
# ({"error":{"message","type","param","code"}}, with the code or param when
# the server documents one), then checks that /health still answers 200 on a
# new connection. Prints one line per check and a summary; exit 1 on failure.
import json
import re
import select
import socket
import sys
import time

PORT = int(sys.argv[1])
KEY = sys.argv[2]
HOST = "127.0.0.1"
passed = failed = 0
failures = []


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print("ok    " + name)
    else:
        failed += 1
        failures.append(name)
        print("FAIL  " + name + (": " + str(detail)[:400] if detail != "" else ""))


def connect(timeout=10.0):
    s = socket.create_connection((HOST, PORT), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class Reader:
    """Reads HTTP/1.1 responses off one socket."""

    def __init__(self, sock):
        self.s = sock
        self.buf = b""
        self.eof = False

    def fill(self):
        try:
            d = self.s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            d = b""
        if not d:
            self.eof = True
        self.buf += d
        return bool(d)

    def until(self, sep):
        while sep not in self.buf:
            if not self.fill():
                return None
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def take(self, n):
        while len(self.buf) < n:
            if not self.fill():
                return None
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def response(self, head_only=False):
        """(status, headers dict, body bytes) or None when the connection ended first."""
        head = self.until(b"\r\n\r\n")
        if head is None:
            return None
        lines = head.decode("latin1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        hdr = {}
        for ln in lines[1:]:
            if ":" in ln:
                k, v = ln.split(":", 1)
                hdr[k.strip().lower()] = v.strip()
        if status == 100 or head_only:
            return status, hdr, b""
        if "content-length" in hdr:
            body = self.take(int(hdr["content-length"]))
        elif hdr.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                ln = self.until(b"\r\n")
                if ln is None:
                    return status, hdr, body
                n = int(ln.strip().split(b";")[0], 16)
                if n == 0:
                    self.until(b"\r\n")
                    break
                body += self.take(n + 2)[:n]
        else:
            while self.fill():
                pass
            body, self.buf = self.buf, b""
        return status, hdr, body if body is not None else b""


def exchange(data, n=1, pause=0.0, timeout=10.0):
    """Sends data (bytes or list of bytes, with pauses), reads n responses."""
    s = connect(timeout)
    try:
        for part in data if isinstance(data, list) else [data]:
            # Stop sending once the server has answered (a 408 or an
            # early 413), so that its reply is read rather than reset.
            if select.select([s], [], [], 0)[0]:
                break
            try:
                s.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break
            if pause:
                time.sleep(pause)
        r = Reader(s)
        out = []
        for _ in range(n):
            x = r.response()
            if x is None:
                break
            out.append(x)
        return out
    finally:
        s.close()


def req(method, path, body=None, headers=None, auth=True, version="1.1"):
    h = {"Host": "x"}
    if auth:
        h["Authorization"] = "Bearer " + KEY
    if body is not None:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        h["Content-Type"] = "application/json"
        h["Content-Length"] = str(len(body))
    h.update(headers or {})
    head = "%s %s HTTP/%s\r\n" % (method, path, version) + "".join("%s: %s\r\n" % kv for kv in h.items()) + "\r\n"
    return head.encode("latin1") + (body or b"")


def error_ok(resp, status, code=None, param=None):
    """resp has the status and OpenAI's error object (and code/param when given)."""
    if resp is None:
        return False, "no response"
    st, hdr, body = resp
    try:
        e = json.loads(body)["error"]
    except Exception:
        return False, "%d %r" % (st, body[:200])
    good = (st == status and isinstance(e.get("message"), str) and e["message"] and isinstance(e.get("type"), str)
            and "param" in e and "code" in e and hdr.get("content-type", "").startswith("application/json"))
    if code is not None:
        good = good and e.get("code") == code
    if param is not None:
        good = good and e.get("param") == param
    return good, "%d %s" % (st, body[:300].decode("utf-8", "replace"))


def health_ok():
    r = exchange(req("GET", "/health", auth=False))
    return bool(r) and r[0][0] == 200 and json.loads(r[0][2]).get("status") == "ok"


n_cases = 0


def case(name, data, status, code=None, param=None, **kw):
    global n_cases
    n_cases += 1
    t0 = time.time()
    r = exchange(data, **kw)
    good, detail = error_ok(r[0] if r else None, status, code, param)
    check("%s -> %d" % (name, status), good, detail)
    check("  /health after '%s'" % name, health_ok())
    return time.time() - t0


C = "/v1/completions"
CH = "/v1/chat/completions"
base = {"prompt": "Hello", "max_tokens": 2}


def body_with(**kw):
    d = dict(base)
    d.update(kw)
    return d


# ---- broken and truncated JSON ----
case("truncated JSON", req("POST", C, '{"prompt": "x", '), 400)
case("trailing garbage", req("POST", C, '{"prompt": "x"} yes'), 400)
case("empty body", req("POST", C, ""), 400)
case("array body", req("POST", C, "[1, 2]"), 400)
case("string body", req("POST", C, '"prompt"'), 400)
case("trailing comma", req("POST", C, '{"prompt": "x",}'), 400)
case("single quotes", req("POST", C, "{'prompt': 'x'}"), 400)
case("raw NUL inside a string", req("POST", C, b'{"prompt": "a\x00b"}'), 400)
case("\\u0000 escape", req("POST", C, '{"prompt": "a\\u0000b"}'), 400)
case("body shorter than its Content-Length", [req("POST", C, '{"prompt": "x"}')[:-4]], 408, code="request_timeout")
# ---- wrong types ----
case("prompt is a number", req("POST", C, body_with(prompt=5)), 400, param="prompt")
case("max_tokens is a string", req("POST", C, body_with(max_tokens="10")), 400, param="max_tokens")
case("temperature is a string", req("POST", C, body_with(temperature="hot")), 400, param="temperature")
case("stream is a string", req("POST", C, body_with(stream="yes")), 400, param="stream")
case("stop is a number", req("POST", C, body_with(stop=5)), 400, param="stop")
case("logit_bias is an array", req("POST", C, body_with(logit_bias=[])), 400, param="logit_bias")
case("n is a string", req("POST", C, body_with(n="2")), 400, param="n")
case("messages is a string", req("POST", CH, {"messages": "hi", "max_tokens": 2}), 400, param="messages")
case("message role is a number", req("POST", CH, {"messages": [{"role": 5, "content": "x"}], "max_tokens": 2}), 400,
     param="messages")
case("message content is an object", req("POST", CH, {"messages": [{"role": "user", "content": {"a": 1}}], "max_tokens": 2}),
     400, param="messages")
case("unknown field", req("POST", C, body_with(frobnicate=1)), 400)
# a key given twice (found by fuzz_http: the second prompt leaked the first, a second stop list overflowed)
case("duplicate prompt key", req("POST", C, b'{"prompt": "a", "prompt": "b", "max_tokens": 1}'), 400, param="prompt")
case("duplicate stop key", req("POST", C, b'{"prompt": "a", "stop": ["1", "2", "3", "4"], "stop": ["5", "6", "7", "8"]}'),
     400, param="stop")
# ---- huge numbers ----
case("max_tokens 1e300", req("POST", C, '{"prompt": "x", "max_tokens": 1e300}'), 400, param="max_tokens")
case("temperature 1e400 (infinite)", req("POST", C, '{"prompt": "x", "temperature": 1e400}'), 400, param="temperature")
case("max_tokens with 30 digits", req("POST", C, '{"prompt": "x", "max_tokens": 999999999999999999999999999999}'), 400,
     param="max_tokens")
case("seed 1e30", req("POST", C, '{"prompt": "x", "seed": 1e30}'), 400, param="seed")
case("token id 1e20", req("POST", C, '{"prompt": [1e20], "max_tokens": 1}'), 400, param="prompt")
case("n 1e10", req("POST", C, '{"prompt": "x", "n": 1e10}'), 400, param="n")
# ---- negative and zero max_tokens ----
case("max_tokens -1", req("POST", C, body_with(max_tokens=-1)), 400, param="max_tokens")
case("max_tokens 0", req("POST", C, body_with(max_tokens=0)), 400, param="max_tokens")
case("max_completion_tokens -100 (chat)",
     req("POST", CH, {"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": -100}), 400,
     param="max_completion_tokens")
case("prompt + max_tokens past the context", req("POST", C, body_with(max_tokens=1020, prompt="a b c d e f g h")), 400,
     code="context_length_exceeded")
# ---- invalid UTF-8 and lone surrogates ----
case("bytes ff fe in a string", req("POST", C, b'{"prompt": "\xff\xfe"}'), 400)
case("overlong encoding c0 af", req("POST", C, b'{"prompt": "\xc0\xaf"}'), 400)
case("UTF-8 cut at the end of a string", req("POST", C, b'{"prompt": "\xe2\x82"}'), 400)
case("UTF-16 surrogate encoded in UTF-8 (ed a0 80)", req("POST", C, b'{"prompt": "\xed\xa0\x80"}'), 400)
case("lone high surrogate \\ud800", req("POST", C, '{"prompt": "\\ud800"}'), 400)
case("lone low surrogate \\udc00", req("POST", C, '{"prompt": "\\udc00"}'), 400)
case("high surrogate then a letter \\ud800\\u0041", req("POST", C, '{"prompt": "\\ud800\\u0041"}'), 400)
case("invalid UTF-8 in a chat message",
     req("POST", CH, b'{"messages": [{"role": "user", "content": "\xf8\x88\x80\x80\x80"}]}'), 400)
# ---- deep nesting ----
case("prompt nested 40 deep", req("POST", C, '{"prompt": ' + "[" * 40 + "]" * 40 + "}"), 400)
case("objects nested 1000 deep", req("POST", C, '{"a":' * 1000 + "1" + "}" * 1000), 400)
case("60000 open brackets", req("POST", C, "[" * 60000), 400)
# ---- oversized headers and bodies, huge Content-Length ----
case("one 8 KiB header", req("GET", "/v1/models", headers={"X-Big": "a" * 8192}), 431, code="headers_too_large")
case("500 small headers", req("GET", "/v1/models", headers={"X-H%d" % i: "v" for i in range(500)}), 431,
     code="headers_too_large")
case("10 KiB URL", req("GET", "/v1/models?" + "q" * 10240), 431, code="headers_too_large")
case("100 KiB body (limit 64 KiB)", req("POST", C, '{"prompt": "' + "a" * 102400 + '"}'), 413, code="request_too_large")
big = b'{"prompt": "' + b"a" * 70000 + b'"}'
case("chunked body over the limit",
     req("POST", C, headers={"Transfer-Encoding": "chunked"}) + b"".join(
         b"%x\r\n%s\r\n" % (len(big[i:i + 8192]), big[i:i + 8192]) for i in range(0, len(big), 8192)) + b"0\r\n\r\n",
     413, code="request_too_large")
t = case("Content-Length 10^12, no body sent", req("POST", C, headers={"Content-Length": "1000000000000"}), 413,
         code="request_too_large")
check("  413 without waiting for the body", t < 1.0, t)
case("Content-Length overflowing 64 bits", req("POST", C, headers={"Content-Length": "99999999999999999999999"}), 400)
case("negative Content-Length", req("POST", C, headers={"Content-Length": "-1"}), 400)
case("two different Content-Lengths", b"POST /v1/completions HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
     400)
case("Content-Length with chunked", req("POST", C, headers={"Content-Length": "5", "Transfer-Encoding": "chunked"}) +
     b"0\r\n\r\n", 400)
# ---- slowloris ----
t = case("slowloris: headers never finish", [b"GET /health HTTP/1.1\r\nHost: x\r\nX-a: b\r\n"], 408, code="request_timeout")
check("  408 within idle_timeout_s + 1 tick", t < 4.5, t)
drip = req("GET", "/v1/models", headers={"X-Pad": "p" * 200})
t = case("slowloris: one byte every 50 ms", [drip[i:i + 1] for i in range(len(drip))], 408, code="request_timeout",
         pause=0.05)
check("  a dripping client is cut at the timeout, not served", t < 6, t)
# ---- bad chunked encoding ----
case("chunk size not hex", req("POST", C, headers={"Transfer-Encoding": "chunked"}) + b"zz\r\nabc\r\n", 400)
case("chunk size overflowing", req("POST", C, headers={"Transfer-Encoding": "chunked"}) + b"fffffffffffffffffff\r\n", 400)
case("chunk data without its CRLF", req("POST", C, headers={"Transfer-Encoding": "chunked"}) + b"3\r\nabcXY0\r\n\r\n", 400)
case("unknown transfer coding", req("POST", C, headers={"Transfer-Encoding": "gzip"}) + b"abc", 400)
# ---- unknown paths and methods, garbage ----
case("unknown path", req("GET", "/v2/nothing"), 404, code="not_found")
case("path traversal", req("GET", "/../../etc/passwd"), 404, code="not_found")
case("PUT /v1/models", req("PUT", "/v1/models"), 405, code="method_not_allowed")
case("DELETE /health", req("DELETE", "/health", auth=False), 405, code="method_not_allowed")
case("PATCH /v1/completions", req("PATCH", C, base), 405, code="method_not_allowed")
case("unknown method BREW", b"BREW /v1/completions HTTP/1.1\r\n\r\n", 400)
case("NUL in the request line", b"GET /hea\x00lth HTTP/1.1\r\n\r\n", 400)
case("control byte in a header name", b"GET /health HTTP/1.1\r\nX-\x01: v\r\n\r\n", 400)
case("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400)
case("binary garbage", bytes(range(256)) * 4, 400)
case("unknown model", req("POST", C, body_with(model="gpt-4o")), 404, code="model_not_found", param="model")
# ---- missing and wrong auth ----
case("no Authorization", req("POST", C, base, auth=False), 401, code="invalid_api_key")
case("wrong key", req("POST", C, base, auth=False, headers={"Authorization": "Bearer sk-wrong"}), 401,
     code="invalid_api_key")
case("key prefix only", req("POST", C, base, auth=False, headers={"Authorization": "Bearer " + KEY[:-1]}), 401,
     code="invalid_api_key")
case("key plus a suffix", req("POST", C, base, auth=False, headers={"Authorization": "Bearer " + KEY + "x"}), 401,
     code="invalid_api_key")
case("Basic scheme", req("POST", C, base, auth=False, headers={"Authorization": "Basic c2stdGVzdDp4"}), 401,
     code="invalid_api_key")
case("Bearer with no key", req("POST", C, base, auth=False, headers={"Authorization": "Bearer "}), 401,
     code="invalid_api_key")
case("models list without a key", req("GET", "/v1/models", auth=False), 401, code="invalid_api_key")

# ---- pipelining ----
r = exchange(req("GET", "/health") * 3 + req("POST", C, body_with(max_tokens=3, temperature=0)) + req("GET", "/nope"), n=5)
check("5 pipelined requests answered in order", [x[0] for x in r] == [200, 200, 200, 200, 404], [x[0] for x in r])
r = exchange(req("GET", "/health") * 100, n=100)
check("100 pipelined requests all answered", len(r) == 100 and all(x[0] == 200 for x in r), len(r))
r = exchange(req("GET", "/health") + b"FOO BAR BAZ\r\n\r\n" + req("GET", "/health"), n=3)
good, detail = error_ok(r[1] if len(r) > 1 else None, 400)
check("pipelined garbage: 200, then 400, then the connection closes",
      len(r) == 2 and r[0][0] == 200 and good and r[1][1].get("connection") == "close", [x[0] for x in r])
r = exchange(req("GET", "/health", headers={"Connection": "Upgrade", "Upgrade": "websocket"}) + req("GET", "/health"), n=2,
             timeout=3)
check("Upgrade request answered, then the connection closes", len(r) == 1 and r[0][0] == 200 and
      r[0][1].get("connection") == "close", [(x[0], x[1]) for x in r])
check("  /health after the upgrade", health_ok())

# ---- clients vanishing ----
s = connect()
s.sendall(req("POST", C, {"prompt": "word " * 300, "max_tokens": 200, "ignore_eos": True}))
s.close()  # mid-prefill
s = connect()
s.sendall(req("POST", C, '{"prompt": "x", "max_tokens": 2}')[:-5])
s.close()  # mid-body
s = connect()
s.sendall(req("POST", C, {"prompt": "Once", "max_tokens": 300, "ignore_eos": True, "stream": True}))
Reader(s).until(b"data: ")
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
s.close()  # mid-stream, with a reset
check("clients vanishing mid-prefill, mid-body and mid-stream (reset): still healthy", health_ok())


# ---- disconnect: one chunk of a 500-token stream, then close ----
def metrics():
    r = exchange(req("GET", "/metrics", auth=False))
    txt = r[0][2].decode() if r else ""

    def g(name):
        m = re.search(r"^" + re.escape(name) + r" (\S+)$", txt, re.M)
        return float(m.group(1)) if m else -1
    return {"running": g("moed_engine_running_sequences"), "active": g("moed_active_requests"),
            "steps": g("moed_engine_steps_total"), "kv_used": g('moed_engine_kv_blocks{state="used"}')}


time.sleep(0.3)
m0 = metrics()
check("idle before the disconnect test", m0["running"] == 0 and m0["active"] == 0 and m0["kv_used"] == 0, m0)
s = connect()
s.sendall(req("POST", C, {"prompt": "Once upon a time", "max_tokens": 500, "ignore_eos": True, "stream": True}))
rd = Reader(s)
got = rd.response(head_only=True)
chunk = rd.until(b"\n\n")
mid = metrics()
s.close()
t_close = time.time()
steps_at_close = metrics()["steps"]
m1 = None
for _ in range(100):
    m1 = metrics()
    if m1["running"] == 0 and m1["active"] == 0 and m1["kv_used"] == 0:
        break
    time.sleep(0.01)
check("disconnect: the stream had started (200, one SSE chunk, one running sequence)",
      got and got[0] == 200 and chunk and b"data: {" in chunk and mid["running"] == 1, (got, chunk, mid))
check("disconnect: no running sequence, no active request, no KV block in use",
      m1["running"] == 0 and m1["active"] == 0 and m1["kv_used"] == 0, m1)
check("disconnect: freed within two engine steps of the close (%d steps, %.0f ms)" %
      (m1["steps"] - steps_at_close, 1000 * (time.time() - t_close)), m1["steps"] - steps_at_close <= 2,
      (steps_at_close, m1))
check("disconnect: far fewer than 500 tokens were generated",
      m1["steps"] - m0["steps"] < 400, (m0["steps"], m1["steps"]))

print("\n%d hostile cases; %d checks passed, %d failed" % (n_cases, passed, failed))
if failed:
    print("failed: " + "; ".join(failures))
sys.exit(1 if failed else 0)
