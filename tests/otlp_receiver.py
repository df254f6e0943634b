"""A real OTLP/HTTP traces receiver for prompttap's span sinks (and the langfuse SDK) in tests.

A raw ASGI app served by uvicorn over a real socket in a background thread, like
``tests/fake_upstream.py``: ``with OtlpReceiver() as rx: rx.base_url``.

Paths: ``/v1/traces`` (generic OTLP; optional ``required_headers``) and
``/api/public/otel/v1/traces`` (Langfuse's: Basic auth with ``public_key:secret_key``, 401
otherwise, answers JSON like Langfuse). Bodies: protobuf ``ExportTraceServiceRequest``,
gzip-aware; anything else is 400/415.

Every delivered span is decoded to a plain dict (``rx.spans``, in arrival order, one entry per
delivery): ``trace_id``/``span_id``/``parent_span_id`` hex, ``attributes`` as Python values
(str/int/float/bool/list/dict), ``events``, ``resource``, ``scope``, ``status``, ``kind``.
``rx.deliveries[span_id]`` counts raw deliveries; ``rx.latest()`` is one dict per span id.

Faults (set with ``rx.fault(...)``, cleared with ``rx.clear()``): answer a fixed status
(429/500/503 with ``retry_after``, 302 with a location, ...) ``times`` times or until cleared;
``hang`` (never answer); ``max_spans`` (413 above N spans in one request); ``poison``
(400 when a span carries the attribute key=value); ``partial_reject`` (2xx with
``partial_success.rejected_spans``); ``at`` ({n: status}: answer the n-th request, counted from
this ``fault()`` call, with that status instead, e.g. a transient 503 in the middle of a split).
``rx.down()`` stops listening (connection refused) and ``rx.up()`` serves again on the same port.

Langfuse's ``DELETE /api/public/traces/{traceId}`` (same Basic auth) is answered like Langfuse does
(200, the deletion queued) and recorded in ``rx.deleted_traces``.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from google.rpc.status_pb2 import Status as RpcStatus
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.servers import start_in_thread, stop_thread

LANGFUSE_PATH = "/api/public/otel/v1/traces"
TRACES_PATH = "/api/public/traces/"  # Langfuse's public API: DELETE .../{traceId}
OTLP_PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"


def any_value(v: AnyValue) -> Any:
    """An OTLP AnyValue as a plain Python value."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


def decode_request(body: bytes, path: str = "") -> list[dict[str, Any]]:
    """Every span of an ``ExportTraceServiceRequest`` as a plain dict."""
    request = ExportTraceServiceRequest.FromString(body)
    out = []
    for rs in request.resource_spans:
        resource = _attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            scope = {"name": ss.scope.name, "version": ss.scope.version, "attributes": _attrs(ss.scope.attributes)}
            for s in ss.spans:
                out.append(
                    {
                        "trace_id": s.trace_id.hex(),
                        "span_id": s.span_id.hex(),
                        "parent_span_id": s.parent_span_id.hex(),
                        "trace_state": s.trace_state,
                        "name": s.name,
                        "kind": Span.SpanKind.Name(s.kind),
                        "start_ns": s.start_time_unix_nano,
                        "end_ns": s.end_time_unix_nano,
                        "attributes": _attrs(s.attributes),
                        "events": [
                            {"name": e.name, "time_ns": e.time_unix_nano, "attributes": _attrs(e.attributes)}
                            for e in s.events
                        ],
                        "status": {"code": Status.StatusCode.Name(s.status.code), "message": s.status.message},
                        "resource": resource,
                        "scope": scope,
                        "path": path,
                    }
                )
    return out


@dataclass
class Export:
    """One request the receiver answered (delivered or not)."""

    path: str
    headers: dict[str, str]
    span_ids: list[str]
    status: int
    gzip: bool


@dataclass
class _Faults:
    status: int | None = None
    times: int | None = None  # None: until cleared
    retry_after: str | None = None
    location: str = "http://elsewhere.invalid/v1/traces"
    hang: bool = False
    max_spans: int | None = None
    poison: tuple[str, Any] | None = None
    partial_reject: int = 0
    partial_message: str = "some spans were not accepted"
    at: dict[int, int] = field(default_factory=dict)


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


class _App:
    def __init__(self, rx: OtlpReceiver) -> None:
        self.rx = rx

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        reply = await self.rx._handle(scope["method"], scope["path"], headers, bytes(body))
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [
                    (b"content-type", reply.content_type.encode()),
                    *((k.encode(), v.encode()) for k, v in reply.headers),
                ],
            }
        )
        await send({"type": "http.response.body", "body": reply.body})


class OtlpReceiver:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        public_key: str = "pk-lf-test",
        secret_key: str = "sk-lf-test",
        required_headers: dict[str, str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.public_key = public_key
        self.secret_key = secret_key
        self.required_headers = {k.lower(): v for k, v in (required_headers or {}).items()}
        self.base_url = ""
        self.spans: list[dict[str, Any]] = []
        self.deliveries: Counter[str] = Counter()
        self.exports: list[Export] = []
        self.deleted_traces: list[str] = []  # DELETE /api/public/traces/{id}, in arrival order
        self._faults = _Faults()
        self._requests = 0  # since the last fault(): what ``at`` counts
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- endpoints

    @property
    def otlp_endpoint(self) -> str:
        return f"{self.base_url}{OTLP_PATH}"

    @property
    def langfuse_endpoint(self) -> str:
        return f"{self.base_url}{LANGFUSE_PATH}"

    # -- faults

    def fault(self, status: int | None = None, *, times: int | None = None, **kw: Any) -> None:
        """Set faults (see the module docstring); unnamed ones keep their values."""
        with self._lock:
            self._faults.status = status
            self._faults.times = times
            self._requests = 0
            for key, value in kw.items():
                if not hasattr(self._faults, key):
                    raise TypeError(f"unknown fault {key!r}")
                setattr(self._faults, key, value)

    def clear(self) -> None:
        with self._lock:
            self._faults = _Faults()
            self._requests = 0

    # -- request handling

    async def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> _Reply:
        if method == "DELETE" and path.startswith(TRACES_PATH):
            if not self._authorized(True, headers):
                return _Reply(401, b'{"message":"Invalid credentials"}')
            with self._lock:
                self.deleted_traces.append(path[len(TRACES_PATH) :])
            return _Reply(200, b'{"message":"Trace deleted successfully"}')
        if method != "POST" or path not in (OTLP_PATH, LANGFUSE_PATH):
            return _Reply(404, b'{"message":"not found"}')
        langfuse = path == LANGFUSE_PATH
        if not self._authorized(langfuse, headers):
            return self._record(path, headers, [], _Reply(401, b'{"message":"Invalid credentials"}'), body)
        with self._lock:
            f = self._faults
            hang = f.hang
            forced = f.status
            self._requests += 1
            if self._requests in f.at:
                forced = f.at[self._requests]
            elif forced is not None and f.times is not None:
                f.times -= 1
                if f.times <= 0:
                    f.status, f.times = None, None
        if hang:
            while self._faults.hang and self._server is not None and not self._server.should_exit:
                await asyncio.sleep(0.02)
            return _Reply(503, b'{"message":"was hanging"}')
        if forced is not None:
            extra = [("retry-after", f.retry_after)] if f.retry_after else []
            if 300 <= forced < 400:
                extra.append(("location", f.location))
            return self._record(path, headers, [], _Reply(forced, b'{"message":"injected"}', headers=extra), body)
        gzipped = headers.get("content-encoding", "").lower() == "gzip"
        if PROTOBUF not in headers.get("content-type", "").lower():
            return self._record(path, headers, [], _Reply(415, b'{"message":"Invalid content type"}'), body)
        try:
            spans = decode_request(gzip.decompress(body) if gzipped else body, path)
        except Exception as exc:
            return self._record(path, headers, [], _status_reply(400, f"cannot decode: {exc}"), body)
        with self._lock:
            max_spans, poison = f.max_spans, f.poison
            partial, partial_message = f.partial_reject, f.partial_message
        if max_spans is not None and len(spans) > max_spans:
            return self._record(path, headers, spans, _status_reply(413, f"more than {max_spans} spans"), body, False)
        if poison is not None and any(s["attributes"].get(poison[0]) == poison[1] for s in spans):
            return self._record(path, headers, spans, _status_reply(400, f"poison span {poison}"), body, False)
        if langfuse:
            obj = {"partialSuccess": {"rejectedSpans": partial, "errorMessage": partial_message}} if partial else {}
            reply = _Reply(200, json.dumps(obj).encode())
        else:
            response = ExportTraceServiceResponse()
            if partial:
                response.partial_success.rejected_spans = partial
                response.partial_success.error_message = partial_message
            reply = _Reply(200, response.SerializeToString(), PROTOBUF)
        return self._record(path, headers, spans, reply, body, True)

    def _authorized(self, langfuse: bool, headers: dict[str, str]) -> bool:
        if langfuse:
            auth = headers.get("authorization", "")
            if not auth.startswith("Basic "):
                return False
            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except Exception:
                return False
            return user == self.public_key and password == self.secret_key
        return all(headers.get(k) == v for k, v in self.required_headers.items())

    def _record(
        self,
        path: str,
        headers: dict[str, str],
        spans: list[dict[str, Any]],
        reply: _Reply,
        body: bytes,
        delivered: bool = False,
    ) -> _Reply:
        gzipped = headers.get("content-encoding", "").lower() == "gzip"
        with self._lock:
            self.exports.append(Export(path, headers, [s["span_id"] for s in spans], reply.status, gzipped))
            if delivered:
                self.spans.extend(spans)
                self.deliveries.update(s["span_id"] for s in spans)
        return reply

    # -- introspection

    def latest(self) -> dict[str, dict[str, Any]]:
        """The last delivered copy of every span, by span id."""
        with self._lock:
            return {s["span_id"]: s for s in self.spans}

    def reset(self) -> None:
        with self._lock:
            self.spans.clear()
            self.deliveries.clear()
            self.exports.clear()
            self.deleted_traces.clear()
            self._faults = _Faults()

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return predicate()

    # -- lifecycle

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]  # fixed from now on, so down()/up() keep the URL
        self.base_url = f"http://{self.host}:{self.port}"
        return sock

    def start(self) -> str:
        if self._thread is not None:
            return self.base_url
        sock = self._bind()
        config = uvicorn.Config(
            _App(self), lifespan="off", log_level="warning", access_log=False, http="h11", ws="none"
        )
        self._server = server = uvicorn.Server(config)
        self._thread = start_in_thread(server, lambda: server.serve(sockets=[sock]), f"otlp-receiver:{self.port}")
        return self.base_url

    def stop(self) -> None:
        if self._thread is None or self._server is None:
            return
        stop_thread(self._server, self._thread)
        self._thread = None

    def down(self) -> None:
        """Stop listening: clients get 'connection refused' until ``up()``."""
        self.stop()

    def up(self) -> None:
        self.start()

    def __enter__(self) -> OtlpReceiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _status_reply(status: int, message: str) -> _Reply:
    """An OTLP error reply: a google.rpc.Status in protobuf, as the spec asks."""
    return _Reply(status, RpcStatus(code=3, message=message).SerializeToString(), PROTOBUF)


try:
    import pytest
except ImportError:  # pragma: no cover
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def otlp_receiver() -> Iterator[OtlpReceiver]:
        """Function-scoped receiver; import it into a test module to use it."""
        with OtlpReceiver() as rx:
            yield rx
