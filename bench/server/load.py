#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Load and soak client for an OpenAI-style server on loopback (moed serve or
# any server with /v1/completions streaming; ignore_eos makes every request
# generate exactly max_tokens tokens). Standard library only.
#
#   load.py load --port P [--clients N] [--requests R] [--max-tokens M] [--prompt-words W]
#                [--temperature T] [--json OUT]
#       N concurrent streaming clients, R requests each, one connection per
#       request. Reports aggregate generated tokens/s over the wall time,
#       time to first token and inter-token latency p50/p99, failed requests.
#   load.py soak --port P --pid PID [--seconds S] [--max-requests K] [--clients N] [--budget-bytes B] [--json OUT]
#       N clients for S seconds or K requests (whichever first), a mix of
#       streamed and whole requests of random lengths, about a quarter of them
#       disconnecting early (mid-prefill, after the first token, mid-stream).
#       Reports failed requests among those that stayed, the server's RSS at
#       the start (after a warm-up) and at the end, and its /metrics at the
#       end once idle (running sequences, active requests, KV blocks in use).
# Exit status 1 when a request that stayed failed, or (soak) when the server
# did not return to idle or its RSS grew by more than --budget-bytes.
import argparse
import asyncio
import json
import random
import re
import statistics
import sys
import time

HOST = "127.0.0.1"


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100.0
    f = int(k)
    c = min(f + 1, len(xs) - 1)
    return xs[f] + (xs[c] - xs[f]) * (k - f)


class Result:
    __slots__ = ("ok", "status", "ttft", "gaps", "tokens", "err", "dropped", "t0", "t1")

    def __init__(self):
        self.ok = False
        self.status = 0
        self.ttft = None
        self.gaps = []
        self.tokens = 0
        self.err = ""
        self.dropped = False
        self.t0 = self.t1 = 0.0


async def read_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    hdr = {}
    for ln in lines[1:]:
        if ":" in ln:
            k, v = ln.split(":", 1)
            hdr[k.strip().lower()] = v.strip()
    return status, hdr


async def body_pieces(reader, hdr):
    """Yields the body's bytes as they arrive (chunked, sized, or to EOF)."""
    if hdr.get("transfer-encoding", "").lower() == "chunked":
        while True:
            ln = await reader.readuntil(b"\r\n")
            n = int(ln.strip().split(b";")[0], 16)
            if n == 0:
                return
            data = await reader.readexactly(n + 2)
            yield data[:n]
    elif "content-length" in hdr:
        n = int(hdr["content-length"])
        if n:
            yield await reader.readexactly(n)
    else:
        while True:
            d = await reader.read(65536)
            if not d:
                return
            yield d


async def request(port, body, stream, drop=None):
    """One request on its own connection. drop: None, ("prefill", seconds) or
    ("tokens", k): close the connection early on purpose."""
    r = Result()
    r.t0 = time.perf_counter()
    payload = json.dumps(body).encode()
    writer = None
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (HOST.encode(), port, len(payload)) + payload)
        await writer.drain()
        if drop and drop[0] == "prefill":
            await asyncio.sleep(drop[1])
            r.dropped = True
            return r
        r.status, hdr = await read_head(reader)
        if r.status != 200:
            r.err = "status %d" % r.status
            return r
        if not stream:
            body_b = b"".join([p async for p in body_pieces(reader, hdr)])
            j = json.loads(body_b)
            r.tokens = j["usage"]["completion_tokens"]
            r.ttft = time.perf_counter() - r.t0
            r.ok = r.tokens == body["max_tokens"]
            if not r.ok:
                r.err = "%d tokens, expected %d" % (r.tokens, body["max_tokens"])
            return r
        buf = b""
        last = None
        done = False
        usage_tokens = None
        async for piece in body_pieces(reader, hdr):
            buf += piece
            while b"\n\n" in buf:
                ev, buf = buf.split(b"\n\n", 1)
                if not ev.startswith(b"data: "):
                    continue  # a comment (keep-alive)
                data = ev[6:]
                if data == b"[DONE]":
                    done = True
                    continue
                j = json.loads(data)
                if "error" in j:
                    r.err = "error event: %s" % data[:200]
                    return r
                if j.get("usage"):
                    usage_tokens = j["usage"].get("completion_tokens")
                ch = j.get("choices") or []
                if ch and ch[0].get("finish_reason") is None and ch[0].get("text") is not None:
                    now = time.perf_counter()
                    if r.ttft is None:
                        r.ttft = now - r.t0
                    else:
                        r.gaps.append(now - last)
                    last = now
                    r.tokens += 1
                    if drop and drop[0] == "tokens" and r.tokens >= drop[1]:
                        r.dropped = True
                        return r
        # A token whose text is held back (an incomplete UTF-8 sequence)
        # sends no chunk: the usage chunk has the true count.
        if usage_tokens is not None:
            r.tokens = usage_tokens
        r.ok = done and r.tokens == body["max_tokens"]
        if not r.ok:
            r.err = "stream ended: done=%s, %d tokens of %d" % (done, r.tokens, body["max_tokens"])
        return r
    except Exception as e:  # a failed request is counted, not raised
        r.err = "%s: %s" % (type(e).__name__, e)
        return r
    finally:
        r.t1 = time.perf_counter()
        if writer:
            writer.close()


def words(rng, n):
    vocab = ("the of and to in is was for on that with as by at from his her an were which this be are "
             "river stone music garden window engine cloud market winter harbor letter forest silver").split()
    return " ".join(rng.choice(vocab) for _ in range(n))


async def get(port, path):
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
    await writer.drain()
    status, hdr = await read_head(reader)
    body = b"".join([p async for p in body_pieces(reader, hdr)])
    writer.close()
    return status, body.decode("utf-8", "replace")


def metric(txt, name):
    m = re.search(r"^" + re.escape(name) + r" (\S+)$", txt, re.M)
    return float(m.group(1)) if m else None


def rss_bytes(pid):
    for ln in open("/proc/%d/status" % pid):
        if ln.startswith("VmRSS:"):
            return int(ln.split()[1]) * 1024
    return 0


def summary(results, wall):
    ok = [r for r in results if r.ok]
    stayed = [r for r in results if not r.dropped]
    failed = [r for r in stayed if not r.ok]
    toks = sum(r.tokens for r in results)
    ttft = [r.ttft for r in ok if r.ttft is not None]
    gaps = [g for r in ok for g in r.gaps]
    return {
        "requests": len(results), "ok": len(ok), "dropped_on_purpose": len(results) - len(stayed),
        "failed": len(failed), "errors": sorted({r.err for r in failed})[:5],
        "wall_s": round(wall, 2), "tokens": toks, "tokens_per_s": round(toks / wall, 2) if wall > 0 else 0,
        "ttft_ms_p50": round(1000 * pct(ttft, 50), 1), "ttft_ms_p99": round(1000 * pct(ttft, 99), 1),
        "itl_ms_p50": round(1000 * pct(gaps, 50), 2), "itl_ms_p99": round(1000 * pct(gaps, 99), 2),
        "itl_ms_mean": round(1000 * statistics.fmean(gaps), 2) if gaps else None,
    }


async def run_load(a):
    rng = random.Random(a.seed)

    async def client(ci):
        out = []
        for k in range(a.requests):
            body = {"prompt": "Story %d.%d: " % (ci, k) + words(rng, a.prompt_words), "max_tokens": a.max_tokens,
                    "temperature": a.temperature, "seed": ci * 1000 + k, "ignore_eos": True, "stream": True,
                    "stream_options": {"include_usage": True}}
            if a.model:
                body["model"] = a.model
            out.append(await request(a.port, body, True))
        return out

    t0 = time.perf_counter()
    res = await asyncio.gather(*[client(i) for i in range(a.clients)])
    wall = time.perf_counter() - t0
    s = summary([r for rs in res for r in rs], wall)
    s.update({"mode": "load", "clients": a.clients, "requests_per_client": a.requests, "max_tokens": a.max_tokens,
              "prompt_words": a.prompt_words})
    return s, s["failed"] == 0 and s["ok"] == a.clients * a.requests


async def run_soak(a):
    rng = random.Random(a.seed)
    # Warm-up: every slot once, so the start RSS has the steady buffers.
    warm = [request(a.port, {"prompt": words(rng, 40), "max_tokens": 8, "ignore_eos": True, "stream": True}, True)
            for _ in range(a.clients)]
    await asyncio.gather(*warm)
    await asyncio.sleep(0.5)
    rss0 = rss_bytes(a.pid)
    deadline = time.perf_counter() + a.seconds
    issued = 0
    results = []

    async def client(ci):
        nonlocal issued
        crng = random.Random(a.seed * 7919 + ci)
        while time.perf_counter() < deadline and issued < a.max_requests:
            issued += 1
            mt = crng.randint(8, a.max_tokens)
            body = {"prompt": words(crng, crng.randint(5, a.prompt_words)), "max_tokens": mt, "temperature": 0.9,
                    "ignore_eos": True}
            x = crng.random()
            drop = None
            stream = True
            if x < 0.08:
                drop = ("prefill", crng.uniform(0, 0.05))
            elif x < 0.16:
                drop = ("tokens", 1)
            elif x < 0.25:
                drop = ("tokens", crng.randint(2, max(2, mt - 1)))
            elif x < 0.40:
                stream = False
            body["stream"] = stream
            if stream:
                body["stream_options"] = {"include_usage": True}
            results.append(await request(a.port, body, stream, drop))

    t0 = time.perf_counter()
    await asyncio.gather(*[client(i) for i in range(a.clients)])
    wall = time.perf_counter() - t0
    # Back to idle: no running sequence, no active request, no KV block in use.
    m = {}
    t_idle = None
    for _ in range(100):
        st, txt = await get(a.port, "/metrics")
        m = {"running": metric(txt, "moed_engine_running_sequences"), "active": metric(txt, "moed_active_requests"),
             "kv_used": metric(txt, 'moed_engine_kv_blocks{state="used"}'),
             "kv_cached": metric(txt, 'moed_engine_kv_blocks{state="cached"}'),
             "kv_free": metric(txt, 'moed_engine_kv_blocks{state="free"}'),
             "connections": metric(txt, "moed_connections")}
        if m["running"] == 0 and m["active"] == 0 and m["kv_used"] == 0:
            t_idle = time.perf_counter() - t0 - wall
            break
        await asyncio.sleep(0.05)
    rss1 = rss_bytes(a.pid)
    s = summary(results, wall)
    s.update({"mode": "soak", "clients": a.clients, "rss_start_mib": round(rss0 / 2**20, 1),
              "rss_end_mib": round(rss1 / 2**20, 1), "rss_growth_mib": round((rss1 - rss0) / 2**20, 1),
              "budget_mib": round(a.budget_bytes / 2**20, 1), "idle_after_s": None if t_idle is None else round(t_idle, 2),
              "metrics_end": m})
    good = (s["failed"] == 0 and t_idle is not None and rss1 - rss0 <= a.budget_bytes)
    return s, good


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["load", "soak"])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompt-words", type=int, default=48)
    ap.add_argument("--model", default=None)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pid", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=180)
    ap.add_argument("--max-requests", type=int, default=400)
    ap.add_argument("--budget-bytes", type=float, default=64 * 2**20)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    if a.mode == "soak" and not a.pid:
        ap.error("soak needs --pid (the server's, for its RSS)")
    s, good = asyncio.run(run_load(a) if a.mode == "load" else run_soak(a))
    print(json.dumps(s, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(s, f, indent=1)
    sys.exit(0 if good else 1)


if __name__ == "__main__":
    main()
