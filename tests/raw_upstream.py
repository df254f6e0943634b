"""A raw HTTP/1.1 upstream on a real socket that records the exact bytes it receives.

For tests where what matters is what reached the upstream byte for byte (the request target,
header bytes, how much of a body arrived and when, whether the request was ever complete),
which an ASGI server would already have parsed, decoded and normalised. A plain asyncio
server on a background thread; each connection carries one exchange. httptools parses the
request only to know when it is complete: it is answered then, never before, so a request
cut short never gets an answer. The answer is a ``Script`` the test chooses per request:
bytes to write and pauses between them, optionally holding the connection open afterwards.

``with RawUpstream() as up: up.base_url; up.seen`` (one ``Seen`` per connection, in order).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httptools

KEEP = 1 << 20
"""Bytes of each connection kept for inspection; everything beyond is only counted and hashed."""


@dataclass
class Script:
    """What the upstream writes back: bytes, with pauses (seconds, as floats) between them.
    ``hold``: leave the connection open afterwards until the client closes it or the server stops."""

    writes: list[bytes | float]
    hold: bool = False


def json_answer(body: bytes = b'{"ok":true}', status: int = 200) -> Script:
    head = b"HTTP/1.1 %d OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
    return Script([head % (status, len(body)) + body])


@dataclass
class Seen:
    """One connection as the upstream saw it."""

    opened: float
    data: bytearray = field(default_factory=bytearray)  # the first KEEP bytes received, exactly
    size: int = 0  # bytes received in all
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (monotonic time, bytes so far)
    head_done: bool = False
    body_size: int = 0  # body bytes (de-chunked) received
    body_sha: hashlib._Hash = field(default_factory=hashlib.sha256)
    body_first_at: float | None = None
    complete: bool = False  # a whole request arrived
    invalid: bool = False  # what arrived is not HTTP/1.1
    answered: bool = False
    ended: str = ""  # "eof" or "reset" (the client closed), "" while open

    @property
    def head(self) -> bytes:
        return bytes(self.data).partition(b"\r\n\r\n")[0]

    @property
    def target(self) -> bytes:
        """The request target exactly as it arrived on the request line."""
        return self.head.split(b"\r\n", 1)[0].split(b" ")[1]

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """Header fields as raw bytes: names lower-cased, values exactly as received."""
        out = []
        for line in self.head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            out.append((name.strip().lower(), value.strip(b" \t")))
        return out

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)

    @property
    def body_sha256(self) -> str:
        return self.body_sha.hexdigest()

    # httptools callbacks
    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        if self.body_first_at is None:
            self.body_first_at = time.monotonic()
        self.body_size += len(body)
        self.body_sha.update(body)

    def on_message_complete(self) -> None:
        self.complete = True


Respond = Callable[[Seen], Script]


class RawUpstream:
    """The raw upstream on 127.0.0.1, in a daemon thread. ``respond`` picks each answer."""

    def __init__(self, respond: Respond | None = None) -> None:
        self.respond: Respond = respond or (lambda seen: json_answer())
        self.seen: list[Seen] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="raw-upstream", daemon=True)
        self._server: asyncio.Server | None = None
        self._stopping = asyncio.Event()

    def start(self) -> RawUpstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, sock=self._sock)

    def stop(self) -> None:
        async def close() -> None:
            self._stopping.set()
            assert self._server is not None
            self._server.close()
            await asyncio.sleep(0.05)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> RawUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def to(self, marker: bytes) -> list[Seen]:
        """The connections whose request target contains ``marker``."""
        return [s for s in list(self.seen) if s.head and marker in s.target]

    def wait(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return predicate()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        seen = Seen(time.monotonic())
        self.seen.append(seen)
        parser = httptools.HttpRequestParser(seen)
        answer: asyncio.Task[None] | None = None
        gone = asyncio.Event()
        try:
            while True:
                try:
                    data = await reader.read(65536)
                except (ConnectionResetError, BrokenPipeError):
                    seen.ended = "reset"
                    break
                if not data:
                    seen.ended = "eof"
                    break
                seen.size += len(data)
                seen.arrivals.append((time.monotonic(), seen.size))
                if len(seen.data) < KEEP:
                    seen.data += data[: KEEP - len(seen.data)]
                if seen.invalid:
                    continue
                try:
                    parser.feed_data(data)
                except httptools.HttpParserError:
                    seen.invalid = True
                if seen.complete and answer is None:
                    answer = asyncio.ensure_future(self._answer(seen, writer, gone))
        finally:
            gone.set()
            if answer is None:
                writer.close()  # nothing complete arrived: never answered

    async def _answer(self, seen: Seen, writer: asyncio.StreamWriter, gone: asyncio.Event) -> None:
        script = self.respond(seen)
        seen.answered = True
        try:
            for step in script.writes:
                if isinstance(step, float):
                    await asyncio.sleep(step)
                else:
                    writer.write(step)
                    await writer.drain()
            if script.hold:
                stopping = asyncio.ensure_future(self._stopping.wait())
                closed = asyncio.ensure_future(gone.wait())
                await asyncio.wait({stopping, closed}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                closed.cancel()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


def sse_head() -> bytes:
    """A streaming response's head: SSE, chunked."""
    return b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)
