"""The recording proxy: a plain ASGI app (the hot path) over prompttap's own upstream client.

One exchange follows one path: client -> ``Proxy.__call__`` -> upstream. The request body is
forwarded as it arrives; every response chunk is teed into the ``Exchange`` and then sent to
the client. Just before the client can see the answer complete (the last byte of a sized
body, or the chunk that completes a stream's terminal event), the exchange is spooled as a
``Capture``; it is spooled again at the end only if it changed. Nothing here waits on a sink.

Plain ASGI rather than a framework: per-request routing machinery triples the CPU cost of a
pass-through (measured when the proxy was first built; the bench keeps checking it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from prompttap.collector import routing
from prompttap.collector.config import Settings, Upstream
from prompttap.collector.disconnect import ClientGone
from prompttap.collector.exchange import LINE_END, OWN_HEADER_PREFIX, Exchange, header
from prompttap.collector.routing import RouteError, Router
from prompttap.collector.upstream import Connection, Origin, Pool, UpstreamError, chunk, client_tls, request_head
from prompttap.schemas.capture import Capture
from prompttap.schemas.credentials import scrub

log = logging.getLogger("prompttap.proxy")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# RFC 9110 7.6.1 hop-by-hop fields, plus what each leg frames for itself.
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
        b"expect",  # the body is streamed anyway; an upstream's 100 Continue is not relayed
    }
)
INVALID = "invalid_request_error"  # OpenAI's error type for a request the client got wrong
UPSTREAM_KEY = "prompttap.upstream"
"""Scope key set by the forward proxy (``--intercept``): the upstream of an intercepted request."""
RECORD_KEY = "prompttap.record"
"""Scope key set by the forward proxy: False for plain HTTP to a host that is not intercepted."""
STREAM_TYPES = (b"text/event-stream", b"application/x-ndjson", b"application/jsonl")


class Proxy:
    """ASGI app: forwards to configured upstreams only, records every exchange."""

    def __init__(self, settings: Settings, record: Callable[[Capture], None]) -> None:
        self.settings = settings
        self.record = record
        self.router = Router(settings.upstream, settings.routes)
        self.pool = Pool(settings.upstream_connect_timeout)
        self.origins: dict[tuple[str, str, int], Origin] = {}
        self.tls = client_tls(str(settings.upstream_ca) if settings.upstream_ca else None)
        self.inflight = 0
        self.health: Callable[[], dict[str, Any]] = lambda: {"status": "ok"}
        self.metrics: Callable[[], str] = lambda: ""
        # Literal secrets configured for upstreams, scrubbed from any text the proxy writes out.
        self.secrets = [u.authorization.split(" ", 1)[-1] for u in [settings.upstream, *settings.routes.values()]]

    async def start(self) -> None:
        pass

    def origin(self, upstream: Upstream) -> Origin:
        key = (upstream.scheme, upstream.host, upstream.port)
        origin = self.origins.get(key)
        if origin is None:
            if len(self.origins) > 4096:  # plain-HTTP hosts through the forward proxy: keep it bounded
                self.origins.clear()
            origin = self.origins[key] = Origin(*key, self.tls)
        return origin

    async def close(self) -> None:
        self.pool.close()

    # -- ASGI entry ---------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        raw_path: bytes = scope["raw_path"]
        if raw_path.startswith(b"/_prompttap/"):
            await self._own(scope, send)
            return
        if scope["method"] == "CONNECT":
            await _json_error(
                send, 405, "CONNECT is not supported: prompttap is not an open proxy", "invalid_request_error"
            )
            return
        try:
            upstream = scope.get(UPSTREAM_KEY)
            if upstream is None:
                upstream, target = self.router.route(raw_path, scope["query_string"])
            else:
                target = routing.target(upstream, raw_path, scope["query_string"])
        except RouteError as exc:
            await _json_error(send, 400, str(exc), INVALID)
            return
        ex = Exchange(scope, upstream, upstream.name, target, self.settings.max_body_bytes)
        ex.recording = scope.get(RECORD_KEY, True)
        self.inflight += 1
        try:
            await self._exchange(ex, receive, send)
        finally:
            self.inflight -= 1

    async def _exchange(self, ex: Exchange, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "http.request":
            ex.fail("client_cancelled", "client disconnected before sending its request body; nothing was forwarded")
            self._spool(ex)
            return
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        ex.request.feed(body)
        headers, chunked = self._upstream_headers(ex)
        head = request_head(ex.method.encode("ascii"), ex.target, ex.upstream.host_header.encode("ascii"), headers)
        first = (chunk(body) if body else b"") + (b"" if more else chunk(b"")) if chunked else body
        timeout = self.settings.upstream_read_timeout
        origin = self.origin(ex.upstream)
        for attempt in (1, 2):
            try:
                conn = await self.pool.acquire(origin)
            except UpstreamError as exc:
                await self._unreachable(ex, send, exc)
                return
            conn.start(head + first, no_body=ex.method == "HEAD")
            pump = asyncio.ensure_future(self._pump(ex, conn, receive, chunked)) if more else None
            try:
                await conn.response_head(timeout)
                break
            except UpstreamError as exc:
                if pump is not None:
                    pump.cancel()
                conn.abort()
                if ex.outcome == "client_cancelled":  # the upload broke: the upstream got no whole request
                    self._spool(ex)
                    return
                # A kept-alive connection the upstream closed as we reused it: nothing reached it.
                if attempt == 1 and conn.reused and pump is None and exc.kind == "upstream_unreachable":
                    continue
                await self._unreachable(ex, send, exc)
                return
        await self._relay(ex, conn, send, receive, pump)

    async def _pump(self, ex: Exchange, conn: Connection, receive: Receive, chunked: bool) -> None:
        """Forward the rest of the request body as it arrives; abort the upstream request if the
        client's upload does not complete, so a cut upload never reaches it as a whole one."""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                declared = header(ex.request_headers, b"content-length")
                of = f" of {declared}" if declared else ""
                ex.fail(
                    "client_cancelled",
                    f"client disconnected after sending {ex.request.size}{of} request body bytes; "
                    "the upstream request was aborted",
                )
                conn.abort()
                return
            body = message.get("body", b"")
            ex.request.feed(body)
            if body:
                conn.write(chunk(body) if chunked else body)
            if not message.get("more_body", False):
                if chunked:
                    conn.write(chunk(b""))
                return
            await conn.drain()

    async def _relay(
        self, ex: Exchange, conn: Connection, send: Send, receive: Receive, pump: asyncio.Future[None] | None
    ) -> None:
        ex.status = conn.status
        if conn.status >= 400:
            ex.outcome = "upstream_error"
        ex.response_headers = conn.headers
        out_headers = []
        content_type = b""
        expected: int | None = None
        for k, v in conn.headers:
            name = k.lower()
            if name == b"content-type":
                content_type = v.lower()
            elif name == b"content-length" and v.strip().isdigit():
                expected = int(v)
            if name not in HOP_BY_HOP or name == b"content-length":
                out_headers.append((name, v))
        streaming = content_type.startswith(STREAM_TYPES)
        gone = ClientGone(conn, ex, streaming, self.settings)
        cycle = getattr(send, "__self__", None)  # uvicorn's cycle knows when the client left
        watcher = asyncio.ensure_future(gone.watch(receive, pump)) if streaming else None
        tee = ex.response
        if not content_type.startswith(b"text/event-stream"):
            tee.event_end = LINE_END  # NDJSON / JSON lines
        timeout = self.settings.upstream_read_timeout
        ended = False
        watching = streaming  # for the first terminal event only: an upstream repeating one costs no spool each
        try:
            await send({"type": "http.response.start", "status": conn.status, "headers": out_headers})
            while True:
                data = await conn.read(timeout)
                if not data:
                    ended = True
                    break
                tee.feed(data)
                if gone.happened or (cycle is not None and cycle.disconnected):
                    if not gone.keep_draining():
                        break
                    continue
                if watching and tee.ends_stream(data):
                    watching = False
                    self._spool(ex)  # before the client can see the answer complete
                elif expected is not None and tee.size == expected:
                    self._spool(ex)
                await send({"type": "http.response.body", "body": data, "more_body": True})
        except asyncio.CancelledError:
            ex.fail("client_cancelled", "prompttap shut down mid-response")
            raise
        except UpstreamError as exc:
            if not gone.happened:
                ex.fail("upstream_error", f"upstream failed mid-response: {exc}")
        finally:
            if watcher is not None:
                watcher.cancel()
            if pump is not None and not pump.done():
                pump.cancel()  # the upstream answered before the body was all sent: not reusable
                ended = False
            gone.settle()
            if ended and conn.reusable:
                self.pool.release(conn)
            else:
                conn.abort()
            if ex.changed:
                self._spool(ex)
        if gone.happened:
            return
        if ex.error:
            _cut_connection(send)  # the upstream's body broke: the client must see it broken too
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _upstream_headers(self, ex: Exchange) -> tuple[list[tuple[bytes, bytes]], bool]:
        """Headers to forward, as bytes (hop-by-hop and prompttap's own removed), and whether the
        body is sent chunked (the client sent it chunked: its length is not known in advance)."""
        raw = ex.request_headers
        listed: set[bytes] = set()
        length = None
        chunked = False
        auth = False
        for k, v in raw:
            if k == b"connection":
                listed.update(t.strip().lower() for t in v.split(b","))
            elif k == b"content-length":
                length = v
            elif k == b"transfer-encoding":
                chunked = True
            elif k == b"authorization":
                auth = True
        out = [
            (k, v) for k, v in raw if k not in HOP_BY_HOP and k not in listed and not k.startswith(OWN_HEADER_PREFIX)
        ]
        if ex.upstream.authorization and not auth:
            out.append((b"authorization", ex.upstream.authorization.encode("latin-1")))
        if length is not None:
            out.append((b"content-length", length))
        elif chunked:
            out.append((b"transfer-encoding", b"chunked"))
        return out, chunked and length is None

    async def _unreachable(self, ex: Exchange, send: Send, exc: UpstreamError) -> None:
        ex.status = exc.status
        ex.fail("upstream_unreachable", scrub(f"{exc.kind}: {exc}", self.secrets))
        self._spool(ex)
        await _json_error(
            send,
            exc.status,
            f"prompttap could not reach upstream {ex.upstream.base} for route {ex.route!r}: {exc}",
            "upstream_unreachable" if exc.status == 502 else "upstream_timeout",
        )

    def _spool(self, ex: Exchange) -> None:
        """Spool the exchange as it stands; the store keeps the newest version of a capture id."""
        if not ex.recording:
            return
        try:
            self.record(ex.capture())
        except Exception:
            log.exception("could not build a capture record")

    # -- prompttap's own endpoints on the proxy port ------------------------------------
    async def _own(self, scope: Scope, send: Send) -> None:
        if scope["path"] in ("/_prompttap/healthz", "/_prompttap/readyz"):
            # /healthz is liveness (200 while this answers); /readyz and /healthz?verbose=1, readiness
            health = self.health()
            ready = scope["path"].endswith("readyz") or b"verbose=1" in scope.get("query_string", b"").split(b"&")
            await _send_json(send, 200 if health.get("ready" if ready else "live", True) else 503, health)
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


def _cut_connection(send: Send) -> None:
    """Close the client's connection without ending the body (uvicorn), so a truncated
    upstream body reaches the client as a truncated body, not as a complete one."""
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise _UpstreamBroke("upstream body broke")
    cycle.disconnected = True
    transport.close()


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
