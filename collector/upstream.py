"""HTTP/1.1 to the upstreams, byte for byte: kept-alive connections and a response reader.

A small client of prompttap's own, on asyncio and httptools (the parser uvicorn serves with),
because the proxy must forward exactly what the client sent: the raw request target (no
percent-decoding, re-encoding or dot-segment normalisation), header values as bytes (no
re-encoding of non-ASCII), and a request body streamed as it arrives and aborted when the
client's upload does not complete. A general-purpose client (aiohttp, httpx) does none of
the three. Everything a server can grow is bounded: the response head (``MAX_HEAD_BYTES``),
and the body buffered ahead of the client (reading pauses above ``HIGH_WATER``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Iterable

import httptools

MAX_HEAD_BYTES = 256 * 1024
"""Largest response head (status line and headers) accepted from an upstream."""
MAX_HEADERS = 500
HIGH_WATER = 512 * 1024
"""Body bytes buffered ahead of the client before the upstream socket stops being read."""
IDLE_KEEP = 30.0
"""Seconds an idle kept-alive connection is kept for reuse."""
MAX_IDLE_PER_ORIGIN = 64


class UpstreamError(Exception):
    """The upstream could not be reached or broke the exchange; ``status`` is what the client gets."""

    def __init__(self, message: str, status: int = 502, kind: str = "upstream_unreachable") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


class Origin:
    """Where connections go: scheme, host, port and the TLS context for https."""

    __slots__ = ("host", "key", "port", "server_hostname", "ssl")

    def __init__(self, scheme: str, host: str, port: int, ssl_context: ssl.SSLContext | None) -> None:
        self.host = host
        self.port = port
        self.ssl = ssl_context if scheme == "https" else None
        self.server_hostname = host if self.ssl is not None else None
        self.key = (scheme, host, port)


def client_tls(ca_file: str | None = None) -> ssl.SSLContext:
    """TLS to upstreams: the system trust store (plus ``ca_file``), certificates verified, HTTP/1.1."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    context.set_alpn_protocols(["http/1.1"])
    return context


class Connection(asyncio.Protocol):
    """One connection to an upstream, carrying one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: Origin) -> None:
        self.loop = loop
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.keep_alive = False  # read when the head completes: llhttp forgets it once the message ends
        self.complete = False
        self.no_body = False
        self.error: UpstreamError | None = None
        self._head_bytes = 0
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._reading_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self.last_read = self.loop.time()

    # -- exchange API ---------------------------------------------------------------------
    def start(self, head: bytes, no_body: bool) -> None:
        """Begin an exchange by writing the request head (and any body bytes already framed)."""
        self.no_body = no_body
        self.last_read = self.loop.time()
        self.transport.write(head)  # type: ignore[union-attr]

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)  # type: ignore[union-attr]

    async def drain(self) -> None:
        """Wait while the socket's write buffer is above its high-water mark."""
        if self._write_paused and not self.closed:
            self._drained = self.loop.create_future()
            await self._drained

    async def response_head(self, timeout: float) -> None:
        """Wait for the final (non-1xx) response head; raises UpstreamError."""
        while not self.head_done:
            await self._wait(timeout)

    async def read(self, timeout: float) -> bytes:
        """The body bytes received so far (joined), b"" at the end; raises UpstreamError."""
        while not self._chunks:
            if self.complete:
                return b""
            await self._wait(timeout)
        data = b"".join(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
        self._chunks.clear()
        self._buffered = 0
        if self._reading_paused and not self.closed:
            self._reading_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        return data

    @property
    def reusable(self) -> bool:
        return self.complete and not self.closed and self.error is None and self.keep_alive and not self._chunks

    def abort(self) -> None:
        """End the exchange at once: the upstream sees the connection reset."""
        if not self.closed:
            self.closed = True
            self.transport.abort()  # type: ignore[union-attr]
        self._fail(UpstreamError("exchange aborted", 502, "aborted"))

    async def _wait(self, timeout: float) -> None:
        if self.error is not None:
            raise self.error
        if self.closed:
            raise UpstreamError("upstream closed the connection")
        self._waiter = self.loop.create_future()
        timer = self.loop.call_at(self.last_read + timeout, self._timed_out, timeout)
        try:
            await self._waiter
        finally:
            timer.cancel()
            self._waiter = None
        if self.error is not None:
            raise self.error

    def _timed_out(self, timeout: float) -> None:
        if self.loop.time() - self.last_read < timeout:
            self._wake()  # data arrived meanwhile: the caller waits again from then
            return
        self._fail(UpstreamError(f"upstream timed out: nothing received for {timeout:g} s", 504, "upstream_timeout"))
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None and not self.complete:
            self.error = error
        self._wake()

    # -- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.last_read = self.loop.time()
        if self.complete:  # bytes after a complete response: the connection is not reusable
            self.closed = True
            self.transport.close()  # type: ignore[union-attr]
            return
        if not self.head_done:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamError("upstream switched protocols, which prompttap does not relay"))
        except httptools.HttpParserError as exc:
            cause = exc.__context__ if isinstance(exc.__context__, UpstreamError) else None
            self._fail(cause or UpstreamError(f"upstream sent an invalid HTTP response ({exc})"))
        if not self.head_done and self._head_bytes > MAX_HEAD_BYTES:
            self._fail(UpstreamError(f"upstream response head larger than {MAX_HEAD_BYTES} bytes"))
        if self.error is not None:
            self.closed = True
            self.transport.close()  # type: ignore[union-attr]

    def eof_received(self) -> bool | None:
        if self.head_done and not self.complete and self._eof_delimited():
            self.on_message_complete()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.head_done and not self.complete and self._eof_delimited():
            self.on_message_complete()
        else:
            self._fail(UpstreamError("upstream closed the connection" + (f": {exc}" if exc else "")))
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    # -- httptools callbacks ----------------------------------------------------------------
    def on_status(self, status: bytes) -> None:
        pass

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        if len(self.headers) > MAX_HEADERS:
            raise UpstreamError(f"upstream sent more than {MAX_HEADERS} headers")

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.headers = []  # an interim response (100 Continue, 103 Early Hints): the final one follows
            return
        self.status = status
        self.head_done = True
        self.keep_alive = self.parser.should_keep_alive()
        self._head_bytes = 0
        if self.no_body or status in (204, 304):
            self.on_message_complete()
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]
        self._wake()

    def on_message_complete(self) -> None:
        if self.head_done:
            self.complete = True
            self._wake()

    def _eof_delimited(self) -> bool:
        """A body without Content-Length or chunked framing ends when the connection does."""
        names = {k.lower() for k, _ in self.headers}
        return b"content-length" not in names and b"transfer-encoding" not in names


class Pool:
    """Kept-alive connections per origin, reused one exchange at a time."""

    def __init__(self, connect_timeout: float) -> None:
        self.connect_timeout = connect_timeout
        self.idle: dict[tuple[str, str, int], list[Connection]] = {}

    async def acquire(self, origin: Origin) -> Connection:
        loop = asyncio.get_running_loop()
        idle = self.idle.get(origin.key)
        now = loop.time()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_KEEP:
                conn.reused = True
                conn._reset()
                return conn
            conn.abort()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: Connection(loop, origin),
                    origin.host,
                    origin.port,
                    ssl=origin.ssl,
                    server_hostname=origin.server_hostname,
                ),
                self.connect_timeout,
            )
        except TimeoutError:
            raise UpstreamError(
                f"connecting timed out after {self.connect_timeout:g} s", 504, "upstream_timeout"
            ) from None
        except ssl.SSLError as exc:
            raise UpstreamError(f"TLS handshake failed: {exc.reason or exc}") from None
        except OSError as exc:
            raise UpstreamError(f"connection refused or host unreachable ({exc.strerror or exc})") from None
        return conn

    def release(self, conn: Connection) -> None:
        """Keep a connection whose exchange ended cleanly; close any other."""
        if not conn.reusable:
            if not conn.closed:
                conn.closed = True
                conn.transport.close()  # type: ignore[union-attr]
            return
        idle = self.idle.setdefault(conn.origin.key, [])
        if len(idle) >= MAX_IDLE_PER_ORIGIN:
            conn.closed = True
            conn.transport.close()  # type: ignore[union-attr]
            return
        conn.idle_since = conn.loop.time()
        idle.append(conn)

    def close(self) -> None:
        for conns in self.idle.values():
            for conn in conns:
                if not conn.closed:
                    conn.closed = True
                    conn.transport.close()  # type: ignore[union-attr]
        self.idle.clear()


def request_head(method: bytes, target: bytes, host: bytes, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The request line and headers, as bytes: nothing re-encoded, nothing normalised."""
    parts = [method, b" ", target, b" HTTP/1.1\r\nhost: ", host, b"\r\n"]
    for name, value in headers:
        parts += [name, b": ", value, b"\r\n"]
    parts.append(b"\r\n")
    return b"".join(parts)


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (an empty ``data`` is the last chunk)."""
    return b"%x\r\n%b\r\n" % (len(data), data)
