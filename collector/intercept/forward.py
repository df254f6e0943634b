"""The forward proxy (``--intercept``): HTTPS interception for apps that cannot change their base URL.

A client configured with ``HTTPS_PROXY`` sends ``CONNECT host:443``. For an intercepted host
the proxy answers 200, terminates TLS with a certificate for that host from prompttap's
name-constrained CA, and hands the decrypted connection to the very protocol and ASGI app the
proxy port runs, with the host's upstream attached to each request: every intercepted call is
forwarded and recorded exactly as a routed one (route = the host name). ``CONNECT`` to any
other host is tunnelled byte for byte and not recorded (or refused with 403 under
``--intercept-only``). Plain-HTTP absolute-form requests are recorded for intercepted hosts
and forwarded, unrecorded, otherwise.

Off loopback the proxy requires ``--intercept-token`` (``Proxy-Authorization: Basic``): it is
never an open relay on a network.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

from prompttap.collector.config import Settings, Upstream
from prompttap.collector.intercept.ca import LocalCA
from prompttap.collector.intercept.clients import authorized
from prompttap.collector.intercept.targets import upstream_for
from prompttap.collector.listener import ProxyProtocol, Refusal
from prompttap.collector.proxy import RECORD_KEY, UPSTREAM_KEY

log = logging.getLogger("prompttap.intercept")

HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n"


class InterceptStats:
    """What ``/healthz`` shows of the forward proxy; a problem per host is logged once with its fix."""

    def __init__(self) -> None:
        self.intercepted: Counter[str] = Counter()
        self.tunnelled = 0
        self.refused = 0
        self.handshake_failures: Counter[str] = Counter()
        self.http2_only: Counter[str] = Counter()

    def handshake_failed(self, host: str, reason: str) -> None:
        if not self.handshake_failures[host]:
            log.warning(
                "a client rejected prompttap's certificate for %s (%s): it does not trust prompttap's CA, or it "
                "pins the provider's certificate. Run it under `prompttap run`, or trust the CA (`prompttap ca`); "
                "a client that pins certificates cannot be intercepted",
                host,
                reason,
            )
        self.handshake_failures[host] += 1

    def spoke_http2(self, host: str) -> None:
        if not self.http2_only[host]:
            log.warning(
                "a client spoke HTTP/2 to %s through the forward proxy: prompttap intercepts HTTP/1.1 only, so "
                "this client cannot be recorded (most SDKs use HTTP/1.1; see the README)",
                host,
            )
        self.http2_only[host] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "intercepted_connections": dict(self.intercepted),
            "tunnelled_connections": self.tunnelled,
            "refused": self.refused,
            "handshake_failures": dict(self.handshake_failures),
            "http2_only_clients": dict(self.http2_only),
        }


class ForwardProtocol(ProxyProtocol):
    """One client connection to the forward proxy, and (``upstream`` set) the decrypted inside of
    an intercepted CONNECT."""

    settings: Settings
    ca: LocalCA
    stats: InterceptStats

    def __init__(self, *args: Any, upstream: Upstream | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.upstream = upstream  # set inside an intercepted tunnel: every request goes there
        self.connect_target: bytes | None = None

    @classmethod
    def configured(cls, settings: Settings, ca: LocalCA, stats: InterceptStats) -> type[ForwardProtocol]:
        limited = cls.with_limits(settings.max_header_bytes, settings.max_headers, settings.header_timeout)
        return type(cls.__name__, (limited,), {"settings": settings, "ca": ca, "stats": stats})

    def data_received(self, data: bytes) -> None:
        if self.upstream is not None and self._in_head and data.startswith(HTTP2_PREFACE):
            self.stats.spoke_http2(self.upstream.name)
            self.transport.close()
            return
        super().data_received(data)

    def _stopped(self, cause: BaseException | None) -> bool:
        if not isinstance(cause, _Connect):
            return False
        self._disarm()
        self.transport.pause_reading()  # the client's next bytes are TLS (or a tunnel's): not ours to parse
        self.loop.create_task(self._connect(self.connect_target or b""))
        return True

    # -- parser callbacks ------------------------------------------------------------------
    def on_headers_complete(self) -> None:
        method = self.parser.get_method()
        if self.upstream is not None:  # inside an intercepted tunnel: origin-form only
            if self.url[:1] != b"/":
                self.url = b"/_prompttap/refused"
            super().on_headers_complete()
            self.scope[UPSTREAM_KEY] = self.upstream  # type: ignore[literal-required]
            return
        if not authorized(self._header(b"proxy-authorization"), self.settings.intercept_token):
            raise Refusal(407, "the forward proxy needs --intercept-token (Proxy-Authorization: Basic)")
        if method == b"CONNECT":
            self.connect_target = self.url
            raise _Connect
        if self.url[:1] == b"/":
            if not self.url.startswith(b"/_prompttap/"):
                raise Refusal(400, "this is prompttap's forward proxy: send absolute-form requests or CONNECT")
            super().on_headers_complete()
            return
        parts = urlsplit(self.url.decode("latin-1"))
        if parts.scheme != "http" or not parts.hostname:
            raise Refusal(400, "absolute-form requests must be http://host/...; use CONNECT for https")
        upstream = upstream_for(self.settings.intercept_hosts, parts.hostname, parts.port or 80, "http")
        record = upstream is not None
        if upstream is None:
            if self.settings.intercept_only:
                raise Refusal(403, f"{parts.hostname} is not an intercepted host (--intercept-only)")
            upstream = Upstream.parse(parts.hostname, f"http://{parts.netloc.rpartition('@')[2]}")
        rest = self.url.split(b"//", 1)[1]
        slash = rest.find(b"/")
        self.url = rest[slash:] if slash >= 0 else b"/"
        super().on_headers_complete()
        self.scope[UPSTREAM_KEY] = upstream  # type: ignore[literal-required]
        self.scope[RECORD_KEY] = record  # type: ignore[literal-required]

    def _header(self, name: bytes) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode("latin-1")
        return None

    # -- CONNECT -----------------------------------------------------------------------------
    async def _connect(self, target: bytes) -> None:
        host, _, port_text = target.decode("latin-1").rpartition(":")
        host = host.strip("[]").lower()
        if not host or not port_text.isdigit():
            self._answer(400, "CONNECT needs host:port")
            return
        port = int(port_text)
        upstream = upstream_for(self.settings.intercept_hosts, host, port, "https")
        if upstream is not None:
            await self._intercept(host, upstream)
        elif self.settings.intercept_only:
            self.stats.refused += 1
            self._answer(403, f"{host} is not an intercepted host (--intercept-only)")
        else:
            await self._tunnel(host, port)

    async def _intercept(self, host: str, upstream: Upstream) -> None:
        try:
            context = self.ca.server_context(host)
        except Exception as exc:  # a CA problem must not take the listener down
            log.error("cannot make a certificate for %s: %s", host, exc)
            self._answer(502, "prompttap cannot make a certificate for this host")
            return
        outer = self.transport
        self.connections.discard(self)  # the TLS protocol below owns the client from here
        outer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        inner = type(self)(config=self.config, server_state=self.server_state, app_state=self.app_state,
                           _loop=self.loop, upstream=upstream)  # fmt: skip
        try:
            tls = await self.loop.start_tls(outer, inner, context, server_side=True, ssl_handshake_timeout=30)
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            self.stats.handshake_failed(host, str(reason))
            outer.close()
            return
        if tls is None:
            outer.close()
            return
        self.stats.intercepted[host] += 1
        inner.connection_made(tls)

    async def _tunnel(self, host: str, port: int) -> None:
        client = self.transport
        try:
            remote, pipe = await asyncio.wait_for(
                self.loop.create_connection(lambda: _Pipe(client), host, port), self.settings.upstream_connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            self._answer(502, f"cannot connect to {host}:{port} ({getattr(exc, 'strerror', None) or 'timed out'})")
            return
        self.stats.tunnelled += 1
        self.connections.discard(self)
        back = _Pipe(remote)  # client -> remote
        back.transport = client
        pipe.peer_protocol, back.peer_protocol = back, pipe
        client.set_protocol(back)
        client.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        client.resume_reading()

    def _answer(self, status: int, message: str) -> None:
        self._refuse(status, message)


class _Connect(Exception):
    """Raised out of the parser when a CONNECT head is complete (handled in ``data_received``)."""


class _Pipe(asyncio.Protocol):
    """One direction of a tunnel: what arrives here is written to ``peer``, with flow control."""

    def __init__(self, peer: asyncio.Transport) -> None:
        self.peer = peer
        self.peer_protocol: _Pipe | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.peer.write(data)

    def eof_received(self) -> bool:
        if self.peer.can_write_eof():
            self.peer.write_eof()
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.peer.close()

    def pause_writing(self) -> None:  # our transport's buffer is full: stop reading the other side
        if self.peer_protocol is not None and self.peer_protocol.transport is not None:
            self.peer_protocol.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer_protocol is not None and self.peer_protocol.transport is not None:
            self.peer_protocol.transport.resume_reading()
