#!/usr/bin/env python3
"""HTTPS load client of the intercept phase: one aiohttp code path, direct over TLS or through a CONNECT proxy.

wrk cannot speak HTTPS through a proxy, so this client drives both targets the same way; they differ
only in the session: ``proxy=`` (aiohttp sends ``CONNECT host:443`` and runs TLS inside the tunnel)
and the one CA the TLS context trusts (the test CA direct, prompttap's CA through the proxy). Each
request is the harness's own (``loadgen.make_request``: a unique body), timed by the harness's own
``loadgen._do_request`` (TTFT = first SSE event carrying text) and summarised by ``loadgen.analyze``,
so a number here means what it means in the harness's ``closed`` mode. Runs in the harness venv.

    tls_load.py TARGETS run --via direct|proxy|routed [-c N] [-d S] [--warmup S] [--stream] [--fresh]
    tls_load.py TARGETS same

``routed`` (with ``--routed``) is a reference: plain HTTP to prompttap's own proxy port, which
forwards to the same TLS mock, so ``proxy`` minus ``routed`` is what the interception itself costs.

``run`` is one closed-loop measurement at concurrency N on kept-alive connections, or with
``--fresh`` on a new connection per request (through the proxy: a new CONNECT and TLS handshake
each time). Every response is compared with the bytes the mock sent (a pure function of its config
and the request). ``same`` sends one request of each API shape both ways and compares the bodies.
The result is JSON on stdout, with the client's own CPU use (its ceiling: one core).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import ssl
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
from paths import HARNESS

sys.path.insert(0, str(HARNESS))
import loadgen  # the harness's load drivers
import mock_upstream as mu

PATHS = {
    "chat": "/v1/chat/completions",
    "messages": "/v1/messages",
    "embeddings": "/v1/embeddings",
    "models": "/v1/models",
}
SHAPES = (  # the harness's fidelity cases: (name, route, stream)
    ("chat_json", "chat", False),
    ("chat_sse", "chat", True),
    ("embeddings", "embeddings", False),
    ("anthropic_json", "messages", False),
    ("anthropic_sse", "messages", True),
    ("models", "models", False),
)


@dataclass(frozen=True)
class Target:
    name: str
    base: str  # https://127.0.0.1:PORT (direct), https://HOST (through the proxy), http://127.0.0.1:PORT (routed)
    proxy: str | None
    tls: ssl.SSLContext

    def session(self, limit: int, fresh: bool = False) -> aiohttp.ClientSession:
        keep = {"force_close": True} if fresh else {"keepalive_timeout": 60}
        conn = aiohttp.TCPConnector(limit=limit, ssl=self.tls, **keep)
        return aiohttp.ClientSession(connector=conn, auto_decompress=False, proxy=self.proxy)


class Tally:
    """Responses compared with the bytes the mock sent; bodies are dropped once compared (bounded memory)."""

    def __init__(self, route: str, cfg: dict[str, Any]) -> None:
        self.route, self.cfg = route, cfg
        self.verified = self.identical = 0
        self.first_mismatch: dict[str, Any] | None = None

    def check(self, r: loadgen.Rec) -> None:
        if r.err is None and r.status < 400 and r.body is not None:
            want = mu.expected_bytes(self.route, self.cfg, r.req)
            self.verified += 1
            if r.body == want:
                self.identical += 1
            elif self.first_mismatch is None:
                self.first_mismatch = {"got": r.body[:200].decode(errors="replace"), "want": want[:200].decode()}
        r.body = r.req = None

    def as_dict(self) -> dict[str, Any]:
        return {"verified": self.verified, "bytes_identical": self.identical, "first_mismatch": self.first_mismatch}


async def mock_config(direct: Target) -> dict[str, Any]:
    async with direct.session(1) as s, s.get(direct.base + "/__mock/config") as r:
        return await r.json()


async def measure(
    t: Target, cfg: dict[str, Any], c: int, duration: float, warmup: float, stream: bool, fresh: bool, timeout: float
) -> dict[str, Any]:
    run_id, url, n = uuid.uuid4().hex[:8], t.base + PATHS["chat"], itertools.count()
    tally, recs, warm = Tally("chat", cfg), [], {"warmup_requests": 0, "warmup_errors": 0}

    async with t.session(c, fresh) as s:

        async def worker(end: float, keep: bool) -> None:
            while time.perf_counter() < end:
                i = next(n)
                r = loadgen.Rec(i, time.perf_counter(), loadgen.make_request("chat", i, run_id, stream))
                await loadgen._do_request(s, url, r, stream, keep, timeout)
                if keep:
                    tally.check(r)
                    recs.append(r)
                else:
                    warm["warmup_requests"] += 1
                    warm["warmup_errors"] += int(r.err is not None or r.status >= 400)

        if warmup > 0:  # kept-alive connections open (and prompttap's leaf certificate made) before timing
            end = time.perf_counter() + warmup
            await asyncio.gather(*(worker(end, False) for _ in range(c)))
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(t0 + duration, True) for _ in range(c)))
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    out = loadgen.analyze(recs, elapsed, "chat", stream, None, "closed")
    out.update(tally.as_dict(), **warm)
    out.update(target=t.name, concurrency=c, stream=stream, fresh=fresh, duration_s=duration)
    out.update(client_cpu_s=cpu, client_cpu_pct=100.0 * cpu / elapsed if elapsed else None)
    return out


async def fetch(t: Target, route: str, req: dict[str, Any] | None) -> tuple[int, str | None, bytes]:
    async with t.session(1) as s:
        if req is None:
            resp_cm = s.get(t.base + PATHS[route])
        else:
            resp_cm = s.post(t.base + PATHS[route], data=json.dumps(req), headers=loadgen.HEADERS)
        async with resp_cm as r:
            return r.status, r.headers.get("content-type"), await r.read()


async def same(direct: Target, proxy: Target, cfg: dict[str, Any]) -> dict[str, Any]:
    """Each API shape once direct and once through the proxy (the same request): bodies compared byte for byte."""
    run_id, out = uuid.uuid4().hex[:8], {}
    for i, (name, route, stream) in enumerate(SHAPES):
        req = None if route == "models" else loadgen.make_request(route, i, f"same-{run_id}", stream)
        d, p = await fetch(direct, route, req), await fetch(proxy, route, req)
        want = mu.render_models(cfg) if req is None else mu.expected_bytes(route, cfg, req)
        out[name] = {
            "status": [d[0], p[0]],
            "content_type_same": d[1] == p[1],
            "identical": d == p,  # status, content type and body
            "direct_is_upstream": d[2] == want,
            "bytes": len(p[2]),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--upstream", required=True, help="the TLS mock, https://127.0.0.1:PORT")
    ap.add_argument("--upstream-ca", required=True, help="the CA the direct target trusts")
    ap.add_argument("--proxy", required=True, help="prompttap's forward proxy, http://127.0.0.1:PORT")
    ap.add_argument("--proxy-ca", required=True, help="prompttap's CA: the only one trusted through the proxy")
    ap.add_argument("--host", default="api.openai.com", help="the intercepted host asked for through the proxy")
    ap.add_argument("--routed", help="prompttap's own proxy port, http://127.0.0.1:PORT (the routed reference)")
    ap.add_argument("mode", choices=["run", "same"])
    ap.add_argument("--via", choices=["direct", "proxy", "routed"], default="direct")
    ap.add_argument("-c", "--concurrency", type=int, default=1)
    ap.add_argument("-d", "--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--fresh", action="store_true", help="a new connection for every request")
    ap.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args()
    direct = Target("direct", a.upstream, None, ssl.create_default_context(cafile=a.upstream_ca))
    proxy = Target("proxy", f"https://{a.host}", a.proxy, ssl.create_default_context(cafile=a.proxy_ca))
    targets = {"direct": direct, "proxy": proxy}
    if a.routed:
        targets["routed"] = Target("routed", a.routed, None, direct.tls)
    if a.via not in targets:
        ap.error("--via routed needs --routed")
    loadgen._install_uvloop()

    async def go() -> dict[str, Any]:
        cfg = await mock_config(direct)
        if a.mode == "same":
            return await same(direct, proxy, cfg)
        return await measure(targets[a.via], cfg, a.concurrency, a.duration, a.warmup, a.stream, a.fresh, a.timeout)

    print(json.dumps(asyncio.run(go())))


if __name__ == "__main__":
    main()
