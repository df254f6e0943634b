"""The recording proxy: a plain ASGI app (the hot path) with aiohttp upstream.

One exchange follows one path: client -> ``Proxy.__call__`` -> upstream, and every
response chunk is sent to the client first and then teed into a ``Tee``. When the
exchange ends (or just before the client can see it end), ``Tee.capture`` freezes a
``Capture`` and the recorder spools it. Nothing here waits on a sink.

Plain ASGI rather than a framework because measurement says so
(``proxy-stack-calibration.md``): per-request routing machinery triples the CPU cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
from prompttap.collector.config import Settings, Upstream
from prompttap.schemas.capture import Capture, new_capture_id
from prompttap.schemas.credentials import redact_headers, redact_query

log = logging.getLogger("prompttap.proxy")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# RFC 9110 7.6.1 hop-by-hop fields, plus what the transport recomputes on each leg.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)
OWN_HEADER_PREFIX = b"x-prompttap-"
STREAM_TYPES = (b"text/event-stream", b"application/x-ndjson", b"application/jsonl")
# An event after which a streaming client considers the answer complete: the capture is
# spooled before that chunk is sent, so a crash can never lose an answer a client saw.
TERMINAL_EVENT = re.compile(
    rb"data: \[DONE\]|event: message_stop|\"done\":\s*true|\"type\":\s*\"response\.(?:completed|failed|incomplete)\""
)


def is_terminal(chunk: bytes) -> bool:
    """TERMINAL_EVENT in chunk. Substrings every terminal event contains are checked first: a substring
    test is a fast C scan, where the regex tries its alternatives at each quote and letter of the JSON
    (measured: 1 us against 2.4-3.3 us for a typical chat chunk)."""
    hinted = b"[DONE]" in chunk or b"message_stop" in chunk or b'"done"' in chunk or b"response." in chunk
    return hinted and TERMINAL_EVENT.search(chunk) is not None


# Events that mean the generation is over, even if trailing usage/[DONE] is still to come.
FINISHED_EVENT = re.compile(
    rb"\"finish_reason\":\s*\"|\"stop_reason\":\s*\"|\"finishReason\":\s*\"|" + TERMINAL_EVENT.pattern
)


class Tee:
    """The recording side of one exchange: a bounded copy of both bodies plus timings."""

    __slots__ = (
        "body_limit",
        "chunks",
        "kept",
        "recorded",
        "sha",
        "size",
        "t0",
        "timing",
        "truncated",
        "ttfb",
    )

    def __init__(self, t0: float, body_limit: int) -> None:
        self.t0 = t0
        self.body_limit = body_limit
        self.chunks: list[bytes] = []
        self.kept = 0
        self.size = 0
        self.sha = hashlib.sha256()
        self.timing: list[tuple[float, int]] = []
        self.truncated = False
        self.ttfb: float | None = None
        self.recorded: tuple[int, str] | None = None  # (size, outcome) when last spooled

    def feed(self, chunk: bytes) -> None:
        offset = (time.perf_counter() - self.t0) * 1000.0
        if self.ttfb is None:
            self.ttfb = offset
        n = len(chunk)
        self.size += n
        self.timing.append((round(offset, 3), n))
        self.sha.update(chunk)
        if self.kept + n <= self.body_limit:
            self.chunks.append(chunk)
            self.kept += n
        elif not self.truncated:
            self.truncated = True
            room = self.body_limit - self.kept
            if room > 0:
                self.chunks.append(chunk[:room])
                self.kept += room

    def finished_seen(self) -> bool:
        """Did the generation finish (a finish/stop event arrived)? Scanned only on disconnect."""
        tail = b"".join(self.chunks[-4:])
        return bool(FINISHED_EVENT.search(tail)) or any(FINISHED_EVENT.search(c) for c in self.chunks)


class Proxy:
    """ASGI app: forwards to configured upstreams only, records every exchange."""

    def __init__(self, settings: Settings, record: Callable[[Capture], None]) -> None:
        self.settings = settings
        self.record = record
        self.routes = settings.routes
        self.default = settings.upstream
        self.session: aiohttp.ClientSession | None = None
        self.inflight = 0
        self.health: Callable[[], dict[str, Any]] = lambda: {"status": "ok"}
        self.metrics: Callable[[], str] = lambda: ""

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=self.settings.upstream_connect_timeout,
            sock_read=self.settings.upstream_read_timeout,
        )
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            timeout=timeout,
            auto_decompress=False,  # compressed bodies reach the client byte-identical
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            trust_env=False,  # never route capture traffic through an env-configured proxy
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    # -- ASGI entry ---------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path.startswith("/_prompttap/"):
            await self._own(scope, send)
            return
        method: str = scope["method"]
        if method == "CONNECT":
            await _json_error(
                send, 405, "CONNECT is not supported: prompttap is not an open proxy", "invalid_request_error"
            )
            return
        upstream, route, rel_path = self._route(path)
        body = await _read_body(receive)
        self.inflight += 1
        try:
            await self._exchange(scope, receive, send, upstream, route, rel_path, body)
        finally:
            self.inflight -= 1

    def _route(self, path: str) -> tuple[Upstream, str, str]:
        if self.routes:
            first, _, rest = path[1:].partition("/")
            upstream = self.routes.get(first)
            if upstream is not None:
                return upstream, first, "/" + rest
        return self.default, "default", path

    async def _exchange(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        upstream: Upstream,
        route: str,
        rel_path: str,
        body: bytes,
    ) -> None:
        t0 = time.perf_counter()
        started_at = time.time()
        raw_query: bytes = scope["query_string"]
        target = upstream.base + upstream.target_path(rel_path)
        if raw_query:
            target += "?" + raw_query.decode("latin-1")
        headers, own = _upstream_headers(scope["headers"])
        tee = Tee(t0, self.settings.max_body_bytes)
        # One identity per exchange, however many times its capture is spooled.
        trace_id, parent = _traceparent(_header(scope["headers"], b"traceparent"))
        identity = (new_capture_id(), trace_id, os.urandom(8).hex(), parent)
        state: dict[str, Any] = {
            "status": 0,
            "outcome": "ok",
            "error": "",
            "resp_headers": [],
            "disconnected": False,
        }

        def capture() -> Capture:
            return self._capture(scope, upstream, route, rel_path, body, own, tee, state, started_at, t0, identity)

        try:
            resp = await self.session.request(  # type: ignore[union-attr]
                scope["method"], target, headers=headers, data=body or None, allow_redirects=False
            )
        except Exception as exc:
            status, kind = _transport_failure(exc)
            state.update(status=status, outcome="upstream_unreachable", error=f"{kind}: {exc!r}"[:2000])
            self._spool(capture, tee, state)
            await _json_error(
                send,
                status,
                f"prompttap could not reach upstream {upstream.base} for route {route!r}: {kind}",
                "upstream_unreachable" if status == 502 else "upstream_timeout",
            )
            return

        await self._relay(resp, send, receive, tee, state, capture)

    async def _relay(
        self,
        resp: aiohttp.ClientResponse,
        send: Send,
        receive: Receive,
        tee: Tee,
        state: dict[str, Any],
        capture: Callable[[], Capture],
    ) -> None:
        state["status"] = resp.status
        if resp.status >= 400:
            state["outcome"] = "upstream_error"
        state["resp_headers"] = resp.raw_headers
        out_headers = [
            (k.lower(), v) for k, v in resp.raw_headers if k.lower() not in HOP_BY_HOP or k.lower() == b"content-length"
        ]
        streaming = resp.headers.get("content-type", "").encode("latin-1").lower().startswith(STREAM_TYPES)
        expected = resp.content_length
        gone = _ClientGone(resp, tee, state, streaming, self.settings)
        cycle = getattr(send, "__self__", None)  # uvicorn's cycle knows when the client left
        watcher = asyncio.ensure_future(gone.watch(receive)) if streaming else None
        try:
            await send({"type": "http.response.start", "status": resp.status, "headers": out_headers})
            async for chunk in resp.content.iter_any():
                tee.feed(chunk)
                if gone.happened or (cycle is not None and cycle.disconnected):
                    if not gone.keep_draining():
                        break
                    continue
                if (expected is not None and tee.size == expected) or (streaming and is_terminal(chunk)):
                    self._spool(capture, tee, state)  # before the client can see the answer complete
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except asyncio.CancelledError:
            state.update(outcome="client_cancelled", error="prompttap shut down mid-response")
            raise
        except Exception as exc:
            if not gone.happened:
                state.update(outcome="upstream_error", error=f"upstream failed mid-response: {exc!r}"[:2000])
        finally:
            if watcher is not None:
                watcher.cancel()
            gone.settle()
            resp.release()
            if tee.recorded != (tee.size, state["outcome"]):
                self._spool(capture, tee, state)
        if gone.happened:
            return
        if state["error"]:
            _cut_connection(send)  # the upstream's body broke: the client must see it broken too
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _spool(self, capture: Callable[[], Capture], tee: Tee, state: dict[str, Any]) -> None:
        """Spool the exchange as it stands. Spooled again (same id) only if it changed since:
        the store keeps the newest version of a capture id."""
        tee.recorded = (tee.size, state["outcome"])
        try:
            self.record(capture())
        except Exception:
            log.exception("could not build a capture record")

    def _capture(
        self,
        scope: Scope,
        upstream: Upstream,
        route: str,
        rel_path: str,
        body: bytes,
        own: dict[str, str],
        tee: Tee,
        state: dict[str, Any],
        started_at: float,
        t0: float,
        identity: tuple[Any, str, str, str],
    ) -> Capture:
        req_headers = redact_headers(scope["headers"])
        query = redact_query(scope["query_string"].decode("latin-1"))
        capture_id, trace_id, span_id, parent = identity
        limit = self.settings.max_body_bytes
        tags = [t.strip() for t in own.get("tags", "").split(",") if t.strip()]
        upstream_url = upstream.base + upstream.target_path(rel_path) + (f"?{query}" if query else "")
        return Capture(
            id=capture_id,
            trace_id=trace_id,
            span_id=span_id,
            parent_span_id=parent,
            started_at=started_at,
            route=route,
            method=scope["method"],
            path=scope["path"] + (f"?{query}" if query else ""),
            upstream_url=upstream_url,
            duration_ms=round((time.perf_counter() - t0) * 1000.0, 3),
            ttft_ms=tee.ttfb,
            status_code=state["status"],
            outcome=state["outcome"],
            error=state["error"],
            request_headers=req_headers,
            response_headers=redact_headers(state["resp_headers"]),
            request_body=body[:limit],
            response_body=b"".join(tee.chunks),
            request_size=len(body),
            response_size=tee.size,
            request_sha256=hashlib.sha256(body).hexdigest(),
            response_sha256=tee.sha.hexdigest(),
            truncated=tee.truncated or len(body) > limit,
            stream_timing=tee.timing,
            client=req_headers.get("user-agent", ""),
            session_id=own.get("session", ""),
            user_id=own.get("user", ""),
            tags=tags,
            replay_of=own.get("replay-of") or None,
            tracestate=req_headers.get("tracestate", ""),
        )

    # -- prompttap's own endpoints on the proxy port ------------------------------------
    async def _own(self, scope: Scope, send: Send) -> None:
        if scope["path"] == "/_prompttap/healthz":
            health = self.health()
            await _send_json(send, 200 if health.get("status") == "ok" else 503, health)
        elif scope["path"] == "/_prompttap/metrics":
            body = self.metrics().encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")],
                }
            )
            await send({"type": "http.response.body", "body": body, "more_body": False})
        elif scope["path"] == "/_prompttap/refused":
            await _json_error(
                send,
                400,
                "absolute-form request targets are refused: prompttap is not an open proxy",
                "invalid_request_error",
            )
        else:
            await _json_error(send, 404, f"no such prompttap endpoint: {scope['path']}", "not_found")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


class _UpstreamBroke(Exception):
    """Raised into the server so the client's connection is cut, as the upstream's was."""


async def _read_body(receive: Receive) -> bytes:
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        return body
    parts = [body]
    while message.get("more_body"):
        message = await receive()
        parts.append(message.get("body", b""))
    return b"".join(parts)


def _upstream_headers(raw: list[tuple[bytes, bytes]]) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Headers to forward (hop-by-hop and prompttap's own removed) and prompttap's own values."""
    listed: set[bytes] = set()
    for k, v in raw:
        if k == b"connection":
            listed.update(t.strip().lower() for t in v.split(b","))
    out: list[tuple[str, str]] = []
    own: dict[str, str] = {}
    for k, v in raw:
        if k in HOP_BY_HOP or k in listed:
            continue
        if k.startswith(OWN_HEADER_PREFIX):
            own[k[len(OWN_HEADER_PREFIX) :].decode("latin-1")] = v.decode("latin-1")
            continue
        out.append((k.decode("latin-1"), v.decode("latin-1")))
    return out, own


class _ClientGone:
    """What to do when the client leaves mid-response.

    A stream whose generation had finished (a finish/stop event was seen) is drained a
    little longer, bounded in time and bytes, so the capture keeps its usage and counts as
    ``ok``. An unfinished stream is cancelled upstream, since it would keep spending tokens.
    A non-stream response is already generated: it is read to its end.
    """

    __slots__ = ("deadline", "happened", "limit", "resp", "settings", "state", "streaming", "tee")

    def __init__(
        self,
        resp: aiohttp.ClientResponse,
        tee: Tee,
        state: dict[str, Any],
        streaming: bool,
        settings: Settings,
    ) -> None:
        self.resp, self.tee, self.state, self.streaming, self.settings = resp, tee, state, streaming, settings
        self.happened = False
        self.deadline = 0.0
        self.limit = 0

    async def watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.mark()
        if self.state["outcome"] == "client_cancelled":
            self.resp.close()  # wakes the relay loop at once, and ends the upstream request

    def mark(self) -> None:
        if self.happened:
            return
        self.happened = True
        if self.streaming and not self.tee.finished_seen():
            self.state.update(outcome="client_cancelled", error="client disconnected before the response finished")
        else:
            self.deadline = time.monotonic() + self.settings.drain_after_finish_seconds
            self.limit = self.tee.size + self.settings.drain_after_finish_bytes

    def keep_draining(self) -> bool:
        self.mark()
        if self.state["outcome"] == "client_cancelled":
            return False
        return not self.streaming or (time.monotonic() < self.deadline and self.tee.size < self.limit)

    def settle(self) -> None:
        if self.happened and self.state["outcome"] == "client_cancelled":
            self.resp.close()


def _cut_connection(send: Send) -> None:
    """Close the client's connection without ending the body (uvicorn), so a truncated
    upstream body reaches the client as a truncated body, not as a complete one."""
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise _UpstreamBroke("upstream body broke")
    cycle.disconnected = True
    transport.close()


def _transport_failure(exc: BaseException) -> tuple[int, str]:
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return 504, "upstream timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return 502, "connection refused or host unreachable"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return 502, "upstream closed the connection"
    return 502, type(exc).__name__


def _header(raw: list[tuple[bytes, bytes]], name: bytes) -> str:
    for k, v in raw:
        if k == name:
            return v.decode("latin-1")
    return ""


def _traceparent(value: str) -> tuple[str, str]:
    """(trace id, parent span id) from a W3C traceparent, or a fresh trace id."""
    parts = value.strip().split("-")
    if len(parts) >= 4 and len(parts[1]) == 32 and len(parts[2]) == 16 and parts[1] != "0" * 32:
        with contextlib.suppress(ValueError):
            int(parts[1], 16), int(parts[2], 16)
            return parts[1].lower(), parts[2].lower()
    return os.urandom(16).hex(), ""


async def _send_json(send: Send, status: int, payload: Any) -> None:
    body = orjson.dumps(payload)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _json_error(send: Send, status: int, message: str, kind: str) -> None:
    """An error in OpenAI's error shape, which every OpenAI-compatible client can show."""
    await _send_json(send, status, {"error": {"message": message, "type": kind, "param": None, "code": kind}})
