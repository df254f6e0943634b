"""OTLP/HTTP sinks: one span per capture, to Langfuse or any OTLP traces endpoint.

The request is an ``ExportTraceServiceRequest`` built directly with ``opentelemetry-proto``
(protobuf, gzip): no SDK span processor, because the spool already is the queue and the span
and trace ids must be the capture's own (a replayed capture is the same span, so Langfuse and
other receivers dedup it by id).

Delivery rules for ``send`` (the recorder owns retries and backoff; this sink never sleeps or drops):
2xx is success (``partial_success`` is logged, not re-sent: it was delivered); 400 and 413 raise
``Rejected``, so the recorder sends the batch again in halves (acking each half it delivers: no span
is sent twice) until it isolates a poison capture or one too large on its own; 401/403 raise
``OtlpAuthError`` (held and retried until fixed); everything else, 3xx included, raises ``OtlpError``
and is retried.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from prompttap.collector.sinks.base import Misconfigured, Rejected
from prompttap.schemas.credentials import is_secret_name, scrub, strip_userinfo
from prompttap.schemas.spans import SCOPE_NAME, SCOPE_VERSION, AttrValue, CaptureSpan, resource_attributes, span_of

log = logging.getLogger("prompttap.otlp")

_KINDS = {
    "INTERNAL": Span.SPAN_KIND_INTERNAL,
    "SERVER": Span.SPAN_KIND_SERVER,
    "CLIENT": Span.SPAN_KIND_CLIENT,
    "PRODUCER": Span.SPAN_KIND_PRODUCER,
    "CONSUMER": Span.SPAN_KIND_CONSUMER,
}
_STATUS = {"UNSET": Status.STATUS_CODE_UNSET, "OK": Status.STATUS_CODE_OK, "ERROR": Status.STATUS_CODE_ERROR}
_PROTOBUF = "application/x-protobuf"
_TRACE_ID = re.compile(r"[0-9a-f]{32}")


class OtlpError(Exception):
    """The receiver is unavailable or answered something other than success: retry later."""


class OtlpAuthError(OtlpError, Misconfigured):
    """The receiver refused the credentials: held and retried until the configuration is fixed."""


class OtlpSink:
    """Sends capture spans as OTLP/HTTP protobuf to one endpoint.

    ``kind``/``options`` name the encoder (``collector.sinks.encoders``) that turns rows into
    the serialized ``ExportTraceServiceRequest`` ``send`` posts; ``export`` does both here.
    """

    kind = "otlp"

    def __init__(
        self,
        name: str,
        endpoint: str,
        headers: Mapping[str, str],
        timeout: float = 10.0,
        service_name: str = "prompttap",
        secrets: Sequence[str] = (),
        recall_url: str | None = None,
    ) -> None:
        self.name = name
        # Where a trace is deleted ("{trace_id}" filled in): Langfuse's public API; OTLP itself has no delete.
        self.recall_url = recall_url
        self.endpoint = endpoint
        self.timeout = timeout
        self.options: dict[str, Any] = {"service_name": service_name}
        self.in_engine = False
        self.primary = False  # another tool's copy: its backlog gives way when the spool runs short
        self.partial_rejected = 0  # spans receivers reported as rejected inside a 2xx
        # What error text must never show: the credentials in its headers (a receiver may echo them) and
        # ``secrets`` (a key that only reaches the receiver inside another value, as Langfuse's in Basic auth).
        self._secrets = (*secrets, *_header_secrets(headers))
        self._where = scrub(strip_userinfo(endpoint))
        self._auth = dict(headers)
        self._headers = {
            **self._auth,
            "Content-Type": _PROTOBUF,
            "Content-Encoding": "gzip",
            "User-Agent": f"prompttap/{SCOPE_VERSION}",
        }
        # trust_env=False: no proxy or netrc from the environment in the path of the data.
        self._client = httpx.Client(timeout=timeout, trust_env=False, follow_redirects=False)

    def __repr__(self) -> str:  # headers hold secrets: never shown
        return f"OtlpSink(name={self.name!r}, endpoint={self._where!r})"

    def export(self, records: Sequence[dict[str, Any]]) -> None:
        """Map and send capture rows in this process (tools and tests; the drain uses ``send``)."""
        spans = []
        for record in records:
            try:
                spans.append(span_of(record))
            except Exception as exc:  # a mapping bug isolates that capture, not the whole stream
                raise Rejected(f"cannot map capture {record.get('id')} to a span: {exc!r}"[:500]) from exc
        self.send(encode_spans(spans, self.options["service_name"]), len(spans))

    def send(self, payload: bytes, rows: int) -> None:
        """POST one serialized ExportTraceServiceRequest holding ``rows`` spans."""
        if not rows:
            return
        try:
            response = self._client.post(
                self.endpoint, content=gzip.compress(payload, compresslevel=6), headers=self._headers
            )
        except httpx.HTTPError as exc:  # refused, reset, DNS, timeout: all "try again later"
            raise OtlpError(self._clean(f"{self._where} unreachable: {type(exc).__name__}: {exc}")) from exc
        code = response.status_code
        if 200 <= code < 300:
            self._log_partial(response, rows)
            return
        detail = _error_detail(response)
        if code == 413:
            raise Rejected(self._clean(f"{self._where} refused {rows} span(s) as too large (HTTP 413): {detail}"))
        if code == 400:
            raise Rejected(self._clean(f"{self._where} refused the batch (HTTP 400): {detail}"))
        if code in (401, 403):
            raise OtlpAuthError(self._clean(f"authentication failed for {self._where} (HTTP {code}): {detail}"))
        if 300 <= code < 400:
            where = scrub(strip_userinfo(response.headers.get("location", "")))
            raise OtlpError(
                self._clean(f"{self._where} redirected (HTTP {code}) to {where!r}: not followed, set the final URL")
            )
        retry_after = response.headers.get("retry-after")
        hint = f", retry-after {retry_after}" if retry_after else ""
        raise OtlpError(self._clean(f"{self._where} answered HTTP {code}{hint}: {detail}"))

    @property
    def recalls(self) -> bool:
        """Can this receiver delete what it was sent (``recall``)?"""
        return self.recall_url is not None

    def recall(self, trace_id: str) -> None:
        """Delete a trace from the receiver (a privacy delete): Langfuse's ``DELETE
        /api/public/traces/{traceId}``, with the same credentials as the exports. A trace it does not have
        (404) is done too. Raises ``OtlpAuthError`` on 401/403 and ``OtlpError`` otherwise, for a retry."""
        if self.recall_url is None:
            raise OtlpError(f"{self._where} cannot delete what it received: OTLP has no delete")
        if not _TRACE_ID.fullmatch(trace_id):
            return  # no span was ever sent under it (span ids are hex): nothing to delete
        url = self.recall_url.replace("{trace_id}", trace_id)
        try:
            response = self._client.delete(url, headers=self._auth)
        except httpx.HTTPError as exc:
            raise OtlpError(self._clean(f"{url} unreachable: {type(exc).__name__}: {exc}")) from exc
        code = response.status_code
        if 200 <= code < 300 or code == 404:
            return
        detail = _error_detail(response)
        if code in (401, 403):
            raise OtlpAuthError(self._clean(f"deleting trace {trace_id}: {url} refused (HTTP {code}): {detail}"))
        raise OtlpError(self._clean(f"deleting trace {trace_id}: {url} answered HTTP {code}: {detail}"))

    def _clean(self, text: str) -> str:
        """Error text as it may be shown and logged: scrubbed of every credential, then cut."""
        return scrub(text, self._secrets)[:500]

    def _log_partial(self, response: httpx.Response, sent: int) -> None:
        rejected, message = _partial_success(response)
        if rejected > 0:
            self.partial_rejected += rejected
            log.warning(
                "sink %s: %s accepted the batch but rejected %d of %d spans (not re-sent): %s",
                self.name,
                self._where,
                rejected,
                sent,
                self._clean(message or "no reason given"),
            )

    def close(self) -> None:
        self._client.close()


# --------------------------------------------------------------------------- protobuf


def encode_spans(spans: Sequence[CaptureSpan], service_name: str = "prompttap") -> bytes:
    """One ``ExportTraceServiceRequest`` (serialized) holding ``spans`` under one resource and scope."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(_kv(k, v) for k, v in resource_attributes(service_name).items())
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = SCOPE_NAME
    scope_spans.scope.version = SCOPE_VERSION
    for s in spans:
        p = scope_spans.spans.add()
        p.trace_id = bytes.fromhex(s.trace_id)
        p.span_id = bytes.fromhex(s.span_id)
        if s.parent_span_id:
            p.parent_span_id = bytes.fromhex(s.parent_span_id)
        p.trace_state = s.trace_state
        p.name = s.name
        p.kind = _KINDS.get(s.kind, Span.SPAN_KIND_UNSPECIFIED)
        p.start_time_unix_nano = s.start_ns
        p.end_time_unix_nano = s.end_ns
        p.attributes.extend(_kv(k, v) for k, v in s.attributes.items())
        for e in s.events:
            event = p.events.add()
            event.time_unix_nano = e.time_ns
            event.name = e.name
            event.attributes.extend(_kv(k, v) for k, v in e.attributes.items())
        p.status.code = _STATUS.get(s.status_code, Status.STATUS_CODE_UNSET)
        p.status.message = s.status_message
    return request.SerializeToString()


def _kv(key: str, value: AttrValue) -> KeyValue:
    return KeyValue(key=key, value=_any(value))


def _any(value: Any) -> AnyValue:
    if isinstance(value, bool):  # before int: bool is an int
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list | tuple):
        out = AnyValue()
        out.array_value.values.extend(_any(v) for v in value)
        return out
    return AnyValue(string_value=str(value))


def _partial_success(response: httpx.Response) -> tuple[int, str]:
    """(rejected spans, message) from a 2xx body: protobuf per OTLP, JSON from some receivers."""
    body = response.content
    if not body:
        return 0, ""
    try:
        if _PROTOBUF in response.headers.get("content-type", ""):
            parsed = ExportTraceServiceResponse.FromString(body)
            return parsed.partial_success.rejected_spans, parsed.partial_success.error_message
        data = json.loads(body)
        partial = (data.get("partialSuccess") or data.get("partial_success")) if isinstance(data, dict) else None
        if not isinstance(partial, dict):
            return 0, ""
        rejected = partial.get("rejectedSpans", partial.get("rejected_spans")) or 0
        return int(rejected), str(partial.get("errorMessage", partial.get("error_message")) or "")
    except Exception:  # Langfuse answers with its own JSON; an unreadable body is still a success
        return 0, ""


def _error_detail(response: httpx.Response) -> str:
    """The receiver's reason: a google.rpc.Status for protobuf per OTLP, else the text."""
    body = response.content[:4096]
    if _PROTOBUF in response.headers.get("content-type", ""):
        try:
            from google.rpc.status_pb2 import Status as RpcStatus

            return RpcStatus.FromString(response.content).message[:300] or "(no message)"
        except Exception:
            return "(unreadable protobuf status)"
    return body.decode("utf-8", "replace").strip()[:300] or "(empty body)"


def _header_secrets(headers: Mapping[str, str]) -> list[str]:
    """The credentials in configured headers: each secret header's value, and its token without the scheme."""
    values = [v for k, v in headers.items() if is_secret_name(k) and v]
    return [*values, *(v.split(" ", 1)[1] for v in values if " " in v)]


# --------------------------------------------------------------------------- configuration


def sinks_from_env(environ: Mapping[str, str]) -> list[OtlpSink]:
    """The OTLP sinks the environment asks for: Langfuse ("langfuse") and/or generic OTLP ("otlp").

    Raises ValueError for a configuration prompttap cannot honour (e.g. the grpc protocol).
    """
    sinks = []
    langfuse = langfuse_sink_from_env(environ)
    if langfuse is not None:
        sinks.append(langfuse)
    otlp = otlp_sink_from_env(environ)
    if otlp is not None:
        sinks.append(otlp)
    return sinks


def langfuse_sink_from_env(environ: Mapping[str, str]) -> OtlpSink | None:
    """Langfuse's OTLP endpoint, with the headers the langfuse SDK sends (auth, ingestion version 4)."""
    public_key = environ.get("LANGFUSE_PUBLIC_KEY", "").strip()
    secret_key = environ.get("LANGFUSE_SECRET_KEY", "").strip()
    base_url = (environ.get("LANGFUSE_BASE_URL") or environ.get("LANGFUSE_HOST") or "").strip().rstrip("/")
    if not (public_key and secret_key and base_url):
        if public_key or secret_key or base_url:
            missing = [
                name
                for name, value in (
                    ("LANGFUSE_PUBLIC_KEY", public_key),
                    ("LANGFUSE_SECRET_KEY", secret_key),
                    ("LANGFUSE_BASE_URL (or LANGFUSE_HOST)", base_url),
                )
                if not value
            ]
            log.warning("Langfuse export is off: %s not set", ", ".join(missing))
        return None
    path = environ.get("LANGFUSE_OTEL_TRACES_EXPORT_PATH", "").strip().strip("/") or "api/public/otel/v1/traces"
    token = base64.b64encode(f"{public_key}:{secret_key}".encode()).decode("ascii")
    headers = {
        "Authorization": f"Basic {token}",
        "x-langfuse-public-key": public_key,
        "x-langfuse-ingestion-version": "4",
    }
    timeout = _seconds(environ.get("LANGFUSE_TIMEOUT"), 10.0, "LANGFUSE_TIMEOUT")
    return OtlpSink(
        "langfuse",
        f"{base_url}/{path}",
        headers,
        timeout,
        _service_name(environ),
        secrets=[secret_key],
        recall_url=f"{base_url}/api/public/traces/{{trace_id}}",
    )


def otlp_sink_from_env(environ: Mapping[str, str]) -> OtlpSink | None:
    """A generic OTLP/HTTP sink from the standard ``OTEL_EXPORTER_OTLP_*`` variables, if an endpoint is set."""
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if not endpoint:
        base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        if not base:
            return None
        endpoint = f"{base.rstrip('/')}/v1/traces"
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    ).strip() or "http/protobuf"
    if protocol != "http/protobuf":
        raise ValueError(
            f"OTLP protocol {protocol!r} is not supported: prompttap exports OTLP over http/protobuf only "
            "(set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf and an http(s) endpoint, usually port 4318)"
        )
    if urlsplit(endpoint).scheme not in ("http", "https"):
        raise ValueError(f"OTLP endpoint {scrub(strip_userinfo(endpoint))!r} must be an http:// or https:// URL")
    # The signal-specific variable replaces the general one, as in the OTel SDKs.
    raw = environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or environ.get("OTEL_EXPORTER_OTLP_HEADERS") or ""
    raw_timeout = environ.get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") or environ.get("OTEL_EXPORTER_OTLP_TIMEOUT")
    return OtlpSink("otlp", endpoint, parse_headers(raw), _otlp_timeout(raw_timeout), _service_name(environ))


def parse_headers(raw: str) -> dict[str, str]:
    """``k=v,k2=v2`` with URL-encoded keys and values (the OTEL_EXPORTER_OTLP_HEADERS format)."""
    headers: dict[str, str] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = unquote(key).strip()
        if not sep or not key:
            log.warning("ignoring a malformed OTLP header entry (no key=value)")  # the entry may be a secret
            continue
        headers[key] = unquote(value).strip()
    return headers


def _otlp_timeout(raw: str | None) -> float:
    # The OTLP spec says milliseconds; the Python SDK reads seconds. Values under 100 can only
    # be meant as seconds (a 100 ms export timeout is not a real setting), so both work.
    value = _seconds(raw, 10_000.0, "OTEL_EXPORTER_OTLP_TIMEOUT")
    return value if value < 100 else value / 1000.0


def _seconds(raw: str | None, default: float, name: str) -> float:
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {raw!r}")
    return value


def _service_name(environ: Mapping[str, str]) -> str:
    return environ.get("OTEL_SERVICE_NAME", "").strip() or "prompttap"
