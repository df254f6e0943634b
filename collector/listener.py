"""The proxy port's HTTP/1.1 protocol: uvicorn's httptools protocol with prompttap's limits.

uvicorn puts no bound on a request head when it runs httptools, and no deadline on a client
that connects and never finishes one. A proxy in front of every LLM call needs both:

- the request line and headers are limited to ``max_header_bytes`` in all and ``max_headers``
  fields (defaults 64 KiB and 100, as nginx, Node and Apache do), answered with 431 before
  anything is forwarded, and counted as bytes arrive, so a 50 MB header is refused after its
  first 64 KiB instead of being parsed whole;
- a connection must finish each request head within ``header_timeout`` seconds of its first
  byte (or of connecting), or it gets 408 and is closed (slowloris);
- absolute-form targets (``GET http://elsewhere/``) are refused: the proxy is not an open relay.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class Refusal(Exception):
    """Raised from a parser callback: answer ``status`` now, before anything is forwarded."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _too_large(message: str) -> Refusal:
    return Refusal(431, message)


class ProxyProtocol(HttpToolsProtocol):
    """One client connection to the proxy port."""

    max_header_bytes = 64 * 1024
    max_headers = 100
    header_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._head_timer: asyncio.TimerHandle | None = None

    @classmethod
    def with_limits(cls, max_header_bytes: int, max_headers: int, header_timeout: float) -> type[ProxyProtocol]:
        """This protocol with other limits (uvicorn makes one instance per connection from a class)."""
        limits = {"max_header_bytes": max_header_bytes, "max_headers": max_headers, "header_timeout": header_timeout}
        return type(cls.__name__, (cls,), limits)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._in_head:
            super().data_received(data)
            return
        self._unset_keepalive_if_required()
        if self._head_timer is None:
            self._arm()  # a kept-alive connection's next request: its head must arrive in time too
        self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, Refusal):
                self._refuse(cause.status, str(cause))
            elif not self._stopped(cause):
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return
        if self._in_head and self._head_bytes > self.max_header_bytes:
            self._refuse(431, f"request line and headers exceed {self.max_header_bytes} bytes")

    # -- parser callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.max_headers:
            raise _too_large(f"more than {self.max_headers} header fields")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        size = len(self.url) + sum(len(k) + len(v) + 4 for k, v in self.headers)
        if size > self.max_header_bytes:
            raise _too_large(f"request line and headers exceed {self.max_header_bytes} bytes")
        self._in_head = False
        self._disarm()
        if self.url[:1] != b"/" and self.url != b"*":
            method = self.parser.get_method()
            self.url = b"/" if method == b"CONNECT" else b"/_prompttap/refused"
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0

    def _stopped(self, cause: BaseException | None) -> bool:
        """A subclass's hook: did a callback stop the parser on purpose (handled: True)?"""
        return False

    # -- limits ----------------------------------------------------------------------------
    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm()  # a pipelined head behind a response still being sent: judge it after
            return
        self._refuse(408, f"request head not received within {self.header_timeout:g} s")

    def _refuse(self, status: int, message: str) -> None:
        """Answer before anything is forwarded, then close: the rest of this connection is unread."""
        self._disarm()
        body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                       "code": str(status)}})  # fmt: skip
        extra = b'proxy-authenticate: Basic realm="prompttap"\r\n' if status == 407 else b""
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%sconnection: close\r\n\r\n%s"
            % (status, HTTPStatus(status).phrase.encode(), len(body), extra, body)
        )
        self.transport.close()
