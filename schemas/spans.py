"""One capture, one OpenTelemetry span: the mapping, defined once.

``span_of(row)`` turns a capture row (``collector.enrich.Enricher`` output: the columns of
``schemas.capture``, JSON columns as Python objects) into a ``CaptureSpan`` carrying

- the OTel GenAI semantic conventions (v1.41.1 names; content as JSON strings in the
  conventions' message shape), read by Phoenix, Langfuse and any OTLP backend, and
- Langfuse's own attributes (names and value shapes of the langfuse SDK 5), so Langfuse shows
  a generation with input, output, model, parameters, usage, cost and time to first token.

The span and trace ids are the capture's own, so a replayed capture is the same span and
receivers dedup it. Headers never enter a span (they may carry credentials even redacted), nor
do bodies the proxy did not understand. Every string attribute is bounded to
``MAX_ATTR_BYTES``; JSON content is shortened so it stays valid JSON where possible.

``otel_row(span)`` gives one row of the OTel Collector clickhouseexporter's ``otel_traces``
(``otel_json`` the same as a JSONEachRow object).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import orjson

AttrValue = str | int | float | bool | list[str] | list[int] | list[float]

MAX_ATTR_BYTES = 64 * 1024  # per string attribute; OTLP receivers and Langfuse cope with this
MAX_LIST_ITEMS = 128
MAX_ITEM_BYTES = 1024  # per element of a string-list attribute (tags, stop sequences)
TRUNCATION_MARK = "…[truncated by prompttap]"
SCOPE_NAME = "prompttap"


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("prompttap")
    except Exception:  # running from a source tree without an install
        return "0.0.0"


SCOPE_VERSION = _package_version()


@dataclass(frozen=True, slots=True)
class SpanEvent:
    name: str
    time_ns: int
    attributes: dict[str, AttrValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CaptureSpan:
    """A finished span, independent of any exporter's types."""

    name: str
    trace_id: str  # 32 lowercase hex
    span_id: str  # 16 lowercase hex
    parent_span_id: str  # 16 lowercase hex or ""
    trace_state: str
    start_ns: int
    end_ns: int
    status_code: str  # "OK" | "ERROR" | "UNSET"
    status_message: str
    attributes: dict[str, AttrValue]
    events: tuple[SpanEvent, ...] = ()
    kind: str = "CLIENT"


def resource_attributes(service_name: str = "prompttap") -> dict[str, str]:
    """The resource every prompttap span is exported with."""
    return {"service.name": service_name}


# --------------------------------------------------------------------------- tables

_OPERATIONS = {
    "openai.chat": "chat",
    "openai.responses": "chat",
    "openai.completions": "text_completion",
    "openai.embeddings": "embeddings",
    "anthropic.messages": "chat",
    "ollama.chat": "chat",
    "ollama.generate": "text_completion",
    "ollama.embed": "embeddings",
    "gemini.generate": "generate_content",
}
_PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "ollama": "ollama", "gemini": "gcp.gemini"}
_OBSERVATION_TYPES = {
    "chat": "generation",
    "text_completion": "generation",
    "generate_content": "generation",
    "embeddings": "embedding",
}
# APIs whose system text came from system/developer messages in the history (the conventions
# keep those in gen_ai.input.messages); the others take instructions as a separate field.
_HISTORY_SYSTEM = frozenset({"openai.chat", "ollama.chat"})

# gen_ai.request.<name> <- first of these params keys (OpenAI, Anthropic, Ollama options, Gemini).
_FLOAT_PARAMS = {
    "temperature": ("temperature",),
    "top_p": ("top_p", "topP"),
    "top_k": ("top_k", "topK"),
    "frequency_penalty": ("frequency_penalty", "frequencyPenalty"),
    "presence_penalty": ("presence_penalty", "presencePenalty"),
}
_INT_PARAMS = {
    "max_tokens": ("max_completion_tokens", "max_tokens", "max_output_tokens", "maxOutputTokens", "num_predict"),
    "seed": ("seed",),
    "choice.count": ("n", "candidateCount"),
}
_STOP_PARAMS = ("stop", "stop_sequences", "stopSequences")

_FINISH = {
    "stop": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "completed": "stop",
    "length": "length",
    "max_tokens": "length",
    "max_output_tokens": "length",
    "tool_calls": "tool_call",
    "function_call": "tool_call",
    "tool_use": "tool_call",
    "content_filter": "content_filter",
    "safety": "content_filter",
    "refusal": "content_filter",
}
_SEMCONV_PART_TYPES = frozenset(
    {"text", "reasoning", "tool_call", "tool_call_response", "server_tool_call", "server_tool_call_response"}
    | {"blob", "file", "uri"}
)
_MODALITY = {"image": "image", "audio": "audio", "video": "video", "file": "document"}
_STATUS = {"OK": "Ok", "ERROR": "Error", "UNSET": "Unset"}
_KIND = {"CLIENT": "Client", "INTERNAL": "Internal", "SERVER": "Server", "PRODUCER": "Producer", "CONSUMER": "Consumer"}


# --------------------------------------------------------------------------- the mapping


@dataclass(slots=True)
class _Facts:
    """What the mapping reads from a row, parsed and typed once."""

    row: dict[str, Any]
    api: str
    op: str
    model: str
    response_model: str
    params: dict[str, Any]
    response: Any
    status: int
    outcome: str
    failed: bool
    stream: bool
    ttft_ms: float | None
    start_ns: int
    messages: list[dict[str, Any]]
    system: str
    tools: list[dict[str, Any]]
    output_text: str
    output_calls: list[dict[str, Any]]
    finish: str
    cache_creation: int | None
    error_type: str = ""
    error_message: str = ""


def _facts(row: dict[str, Any]) -> _Facts:
    api = _s(row.get("api")) or "unknown"
    params, response = _obj(row.get("params")), _obj(row.get("response"))
    status, outcome = _int(row.get("status_code")) or 0, _s(row.get("outcome")) or "ok"
    f = _Facts(
        row=row,
        api=api,
        op=_OPERATIONS.get(api, ""),
        model=_s(row.get("model")),
        response_model=_s(row.get("response_model")),
        params=params if isinstance(params, dict) else {},
        response=response,
        status=status,
        outcome=outcome,
        failed=outcome != "ok" or status >= 400,
        stream=row.get("stream") is True,
        ttft_ms=_num(row.get("ttft_ms")),
        start_ns=_start_ns(row.get("started_at")),
        messages=_dicts(row.get("messages")),
        system=_s(row.get("system_prompt")),
        tools=_dicts(row.get("tools")),
        output_text=_s(row.get("output_text")),
        output_calls=_dicts(row.get("output_tool_calls")),
        finish=_s(row.get("finish_reason")),
        cache_creation=_cache_creation(api, response),
    )
    if f.failed:
        f.error_type, f.error_message = _error(row, outcome, status, response)
    return f


def span_of(row: dict[str, Any]) -> CaptureSpan:
    """The span for one capture row. Pure and deterministic: a replay maps to the same span."""
    f = _facts(row)
    a: dict[str, Any] = {}
    truncated: list[str] = []

    def put_json(key: str, value: Any) -> None:
        a[key], cut = _bounded_json(value)
        if cut:
            truncated.append(key)

    _genai_attrs(f, a)
    if f.api != "unknown":  # content only from bodies prompttap understood (never raw bodies)
        _content_attrs(f, put_json)
    _transport_attrs(f, a)
    _langfuse_attrs(f, a, put_json)
    _prompttap_attrs(f, a)
    attributes = _bound(a, truncated)
    if truncated:
        attributes["prompttap.truncated_attributes"] = truncated

    events: tuple[SpanEvent, ...] = ()
    if f.stream and f.ttft_ms is not None:
        ttft = {"gen_ai.response.time_to_first_chunk": f.ttft_ms / 1000.0}
        events = (SpanEvent("prompttap.first_chunk", f.start_ns + round(f.ttft_ms * 1_000_000), ttft),)
    path = _s(row.get("path")).split("?", 1)[0]  # no query: low cardinality, and it may hold credentials
    name = f"{f.op} {f.model}".strip() if f.op else f"{_s(row.get('method')) or 'HTTP'} {path or '/'}"
    trace_id, span_id, parent_id = _ids(row)
    duration_ns = max(0, round((_num(row.get("duration_ms")) or 0.0) * 1_000_000))
    return CaptureSpan(
        name=_clip(name, 256),
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_id,
        trace_state=_s(row.get("tracestate")),  # not a capture column today: usually ""
        start_ns=f.start_ns,
        end_ns=f.start_ns + duration_ns,
        status_code="ERROR" if f.failed else "UNSET",  # instrumentations leave success Unset (OTel spec)
        status_message=_clip(f.error_message, 1024),
        attributes=attributes,
        events=events,
    )


def _genai_attrs(f: _Facts, a: dict[str, Any]) -> None:
    """Operation, model, request parameters, usage and response metadata (GenAI conventions)."""
    row, params = f.row, f.params
    _put(a, "gen_ai.operation.name", f.op)
    _put(a, "gen_ai.provider.name", _provider(f.api, _s(row.get("upstream_url"))))
    _put(a, "gen_ai.request.model", f.model)
    _put(a, "gen_ai.response.model", f.response_model)
    for name, keys in _FLOAT_PARAMS.items():
        _put(a, f"gen_ai.request.{name}", _first(params, keys, _num))
    for name, keys in _INT_PARAMS.items():
        value = _first(params, keys, _int)
        if value is not None and value >= 0 and not (name == "choice.count" and value == 1):
            a[f"gen_ai.request.{name}"] = value
    _put(a, "gen_ai.request.stop_sequences", _stop_sequences(params))
    _put(a, "gen_ai.output.type", _output_type(params))
    if f.stream:
        a["gen_ai.request.stream"] = True
    _put(a, "gen_ai.usage.input_tokens", _int(row.get("input_tokens")))
    _put(a, "gen_ai.usage.output_tokens", _int(row.get("output_tokens")))
    _put(a, "gen_ai.usage.cache_read.input_tokens", _int(row.get("cached_tokens")))
    _put(a, "gen_ai.usage.cache_creation.input_tokens", f.cache_creation)
    _put(a, "gen_ai.usage.reasoning.output_tokens", _int(row.get("reasoning_tokens")))
    _put(a, "gen_ai.response.finish_reasons", [f.finish] if f.finish else None)
    _put(a, "gen_ai.response.id", _s(row.get("response_id")))
    if f.stream and f.ttft_ms is not None:
        a["gen_ai.response.time_to_first_chunk"] = f.ttft_ms / 1000.0
    _put(a, "gen_ai.conversation.id", _s(row.get("session_id")))  # explicit ids only, never inferred
    if f.api.startswith("openai."):
        _openai_attrs(a, f.api, params, f.response)


def _content_attrs(f: _Facts, put_json: Callable[[str, Any], None]) -> None:
    """Messages, instructions, output and tools as JSON in the conventions' shapes."""
    semconv_in = [_semconv_message(m) for m in f.messages]
    if f.system and f.api in _HISTORY_SYSTEM:
        semconv_in.insert(0, {"role": "system", "parts": [{"type": "text", "content": f.system}]})
    elif f.system:
        put_json("gen_ai.system_instructions", [{"type": "text", "content": f.system}])
    if semconv_in:
        put_json("gen_ai.input.messages", semconv_in)
    if f.output_text or f.output_calls:
        parts = [{"type": "text", "content": f.output_text}] if f.output_text else []
        parts += [_tool_call_part(c) for c in f.output_calls]
        reason = _FINISH.get(f.finish.lower(), f.finish.lower())
        if f.failed or f.row.get("incomplete"):
            reason = "error"
        put_json("gen_ai.output.messages", [{"role": "assistant", "parts": parts, "finish_reason": reason}])
    if f.tools:
        put_json("gen_ai.tool.definitions", [_tool_definition(t) for t in f.tools])


def _transport_attrs(f: _Facts, a: dict[str, Any]) -> None:
    url = urlsplit(_s(f.row.get("upstream_url")))
    try:
        port = url.port or {"https": 443, "http": 80}.get(url.scheme)
    except ValueError:
        port = None
    if url.hostname:
        a["server.address"] = url.hostname
        _put(a, "server.port", port)
    _put(a, "http.request.method", _s(f.row.get("method")))
    _put(a, "http.response.status_code", f.status or None)
    _put(a, "user_agent.original", _s(f.row.get("client")))
    _put(a, "error.type", f.error_type)


def _langfuse_attrs(f: _Facts, a: dict[str, Any], put_json: Callable[[str, Any], None]) -> None:
    """Langfuse's own attributes (the langfuse SDK's names and value shapes): a generation."""
    row = f.row
    _put(a, "langfuse.observation.type", _OBSERVATION_TYPES.get(f.op, "span"))
    if f.api != "unknown":
        lf_input: Any = [{"role": "system", "content": f.system}] if f.system else []
        lf_input += [_chatml(m) for m in f.messages]
        if f.tools:  # beside the messages, as the langfuse OpenAI integration sends them
            lf_input = {"messages": lf_input, "tools": [_openai_tool(t) for t in f.tools]}
        if f.messages or f.system:
            put_json("langfuse.observation.input", lf_input)
        output = _langfuse_output(f)
        if output is not None:
            put_json("langfuse.observation.output", output)
    _put(a, "langfuse.observation.model.name", f.response_model or f.model)
    if f.params:
        put_json("langfuse.observation.model.parameters", {k: _scalar(v) for k, v in f.params.items()})
    usage = _usage_details(row, f.cache_creation)
    if usage:
        a["langfuse.observation.usage_details"] = _dumps(usage)
    cost = _num(row.get("cost_usd"))
    if cost is not None:
        a["langfuse.observation.cost_details"] = _dumps({"total": cost})
    if f.ttft_ms is not None and not f.failed:  # an error's first byte is not a completion start
        a["langfuse.observation.completion_start_time"] = _iso(f.start_ns + round(f.ttft_ms * 1_000_000))
    if f.failed:
        a["langfuse.observation.level"] = "WARNING" if f.outcome == "client_cancelled" else "ERROR"
        _put(a, "langfuse.observation.status_message", f.error_message)
    elif row.get("incomplete"):
        a["langfuse.observation.level"] = "WARNING"
        a["langfuse.observation.status_message"] = "the stream ended before its final event"
    _put(a, "langfuse.trace.name", _s(row.get("route")))
    session = _s(row.get("session_id")) or _s(row.get("thread_id"))
    for key in ("session.id", "langfuse.session.id"):  # the SDK's name, then Langfuse's own
        _put(a, key, session)
    for key in ("user.id", "langfuse.user.id"):
        _put(a, key, _s(row.get("user_id")))
    tags = row.get("tags")
    _put(a, "langfuse.trace.tags", [str(t) for t in tags if t] if isinstance(tags, list | tuple) else None)
    # Plain strings, not the SDK's JSON-encoded values: the server only decodes those for its SDKs.
    for key, value in (
        ("capture_id", _s(row.get("id"))),
        ("api", f.api),
        ("outcome", f.outcome),
        ("client", _s(row.get("client"))),
        ("prompt_template_id", _s(row.get("prompt_template_id"))),
        ("replay_of", _s(row.get("replay_of"))),
    ):
        _put(a, f"langfuse.observation.metadata.{key}", value)
    _put(a, "langfuse.trace.metadata.route", _s(row.get("route")))
    _put(a, "langfuse.trace.metadata.thread_id", _s(row.get("thread_id")))


def _prompttap_attrs(f: _Facts, a: dict[str, Any]) -> None:
    """prompttap's own keys, for joins with the captures table."""
    _put(a, "prompttap.capture.id", _s(f.row.get("id")))
    _put(a, "prompttap.route", _s(f.row.get("route")))
    _put(a, "prompttap.outcome", f.outcome)
    _put(a, "prompttap.thread.id", _s(f.row.get("thread_id")))
    _put(a, "prompttap.prompt_template.id", _s(f.row.get("prompt_template_id")))
    _put(a, "prompttap.replay_of", _s(f.row.get("replay_of")))


def otel_row(span: CaptureSpan, service_name: str = "prompttap") -> list[Any]:
    """Values for one ``otel_traces`` row, in ``OTEL_COLUMNS`` order (the exporter's insert order)."""
    return [
        span.start_ns,  # DateTime64(9) takes integer nanoseconds
        span.trace_id,
        span.span_id,
        span.parent_span_id,
        span.trace_state,
        span.name,
        _KIND.get(span.kind, "Unspecified"),
        service_name,
        resource_attributes(service_name),
        SCOPE_NAME,
        SCOPE_VERSION,
        {k: attr_text(v) for k, v in span.attributes.items()},
        span.end_ns - span.start_ns,
        _STATUS.get(span.status_code, "Unset"),
        span.status_message,
        [e.time_ns for e in span.events],
        [e.name for e in span.events],
        [{k: attr_text(v) for k, v in e.attributes.items()} for e in span.events],
        [],
        [],
        [],
        [],
    ]


def otel_json(span: CaptureSpan, service_name: str = "prompttap") -> dict[str, Any]:
    """One ``otel_traces`` row as a JSONEachRow object (column name -> value).

    Times are unix seconds with nine decimals: exact, and read the same whatever the
    server's timezone (a DateTime64 without a zone would otherwise take the server's).
    """
    row = dict(zip(OTEL_COLUMNS, otel_row(span, service_name), strict=True))
    row["Timestamp"] = _unix_text(span.start_ns)
    row["Events.Timestamp"] = [_unix_text(ns) for ns in row["Events.Timestamp"]]
    return row


def _unix_text(ns: int) -> str:
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


OTEL_COLUMNS: tuple[str, ...] = (
    "Timestamp",
    "TraceId",
    "SpanId",
    "ParentSpanId",
    "TraceState",
    "SpanName",
    "SpanKind",
    "ServiceName",
    "ResourceAttributes",
    "ScopeName",
    "ScopeVersion",
    "SpanAttributes",
    "Duration",
    "StatusCode",
    "StatusMessage",
    "Events.Timestamp",
    "Events.Name",
    "Events.Attributes",
    "Links.TraceId",
    "Links.SpanId",
    "Links.TraceState",
    "Links.Attributes",
)


def attr_text(value: AttrValue) -> str:
    """An attribute as the exporter stringifies it (pcommon ``Value.AsString``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf"}[repr(value)]
        return format(Decimal(repr(value)).normalize(), "f")  # Go's FormatFloat(v, 'f', -1, 64)
    if isinstance(value, list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


# --------------------------------------------------------------------------- pieces


def _ids(row: dict[str, Any]) -> tuple[str, str, str]:
    """The capture's ids; invalid ones are derived from the capture id (receivers 400 a batch on them)."""
    cid = _s(row.get("id"))
    digest = hashlib.sha256(cid.encode()).hexdigest()
    try:
        fallback_trace = uuid.UUID(cid).hex
    except ValueError:
        fallback_trace = digest[:32]
    trace = _hex(row.get("trace_id"), 32) or fallback_trace
    span = _hex(row.get("span_id"), 16) or digest[32:48]
    return trace, span, _hex(row.get("parent_span_id"), 16)


def _hex(value: Any, size: int) -> str:
    text = _s(value).strip().lower()
    if len(text) != size or text.strip("0") == "":
        return ""
    try:
        int(text, 16)
    except ValueError:
        return ""
    return text


def _start_ns(started_at: Any) -> int:
    # Microseconds, rounded exactly as the captures table stores them (datetime.fromtimestamp),
    # so a span built from a stored row and one built from the spool agree.
    if isinstance(started_at, datetime):
        dt = started_at if started_at.tzinfo else started_at.replace(tzinfo=UTC)
    else:
        dt = datetime.fromtimestamp(_num(started_at) or 0.0, UTC)
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


def _iso(ns: int) -> str:
    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ns // 1000)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _provider(api: str, upstream_url: str) -> str:
    host = (urlsplit(upstream_url).hostname or "").lower()
    if host.endswith(".openai.azure.com"):
        return "azure.ai.openai"
    if host.endswith("aiplatform.googleapis.com"):
        return "gcp.vertex_ai"
    return _PROVIDERS.get(api.split(".", 1)[0], "")


def _openai_attrs(a: dict[str, Any], api: str, params: dict[str, Any], response: Any) -> None:
    _put(a, "openai.api.type", {"openai.chat": "chat_completions", "openai.responses": "responses"}.get(api))
    tier = params.get("service_tier")
    if isinstance(tier, str) and tier != "auto":
        a["openai.request.service_tier"] = tier
    if isinstance(response, dict):
        _put(a, "openai.response.service_tier", _str_or_none(response.get("service_tier")))
        _put(a, "openai.response.system_fingerprint", _str_or_none(response.get("system_fingerprint")))


def _stop_sequences(params: dict[str, Any]) -> list[str] | None:
    for key in _STOP_PARAMS:
        value = params.get(key)
        if isinstance(value, str) and value:
            return [value]
        if isinstance(value, list):
            return [v for v in value if isinstance(v, str)] or None
    return None


def _output_type(params: dict[str, Any]) -> str:
    fmt = params.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in ("json_object", "json_schema") or params.get("responseMimeType") == "application/json":
        return "json"
    if kind == "text":
        return "text"
    ollama = params.get("format")
    return "json" if ollama == "json" or isinstance(ollama, dict) else ""


def _cache_creation(api: str, response: Any) -> int | None:
    # Not a capture column: Anthropic reports it in usage, and Langfuse prices it separately.
    if api != "anthropic.messages" or not isinstance(response, dict):
        return None
    usage = response.get("usage")
    return _int(usage.get("cache_creation_input_tokens")) if isinstance(usage, dict) else None


def _usage_details(row: dict[str, Any], cache_creation: int | None) -> dict[str, int]:
    """Langfuse's disjoint buckets (what its UI and pricing expect) plus the total."""
    inp, out = _int(row.get("input_tokens")), _int(row.get("output_tokens"))
    cached, reasoning = _int(row.get("cached_tokens")), _int(row.get("reasoning_tokens"))
    usage: dict[str, int] = {}
    if inp is not None:
        usage["input"] = max(0, inp - (cached or 0) - (cache_creation or 0))
    if out is not None:
        usage["output"] = max(0, out - (reasoning or 0))
    if cached:
        usage["input_cached_tokens"] = cached
    if cache_creation:
        usage["input_cache_creation"] = cache_creation
    if reasoning:
        usage["output_reasoning_tokens"] = reasoning
    if inp is not None or out is not None:
        usage["total"] = (inp or 0) + (out or 0)
    return usage


def _error(row: dict[str, Any], outcome: str, status: int, response: Any) -> tuple[str, str]:
    """(error.type, message): the provider's error code when it sent one, else the status/outcome."""
    message = _s(row.get("error"))
    code = ""
    if isinstance(response, dict):
        err = response.get("error")
        if isinstance(err, dict):
            code = _s(err.get("code")) or _s(err.get("type")) or _s(err.get("status"))
            message = message or _s(err.get("message"))
        elif isinstance(err, str):
            message = message or err
    if outcome == "upstream_error" or (outcome == "ok" and status >= 400):
        return code or str(status), message or f"upstream answered HTTP {status}"
    return outcome, message or outcome.replace("_", " ")


def _semconv_message(m: dict[str, Any]) -> dict[str, Any]:
    """A normalized message in the conventions' ChatMessage shape ({role, parts[], name?})."""
    role = _s(m.get("role")) or "user"
    text = _s(m.get("content"))
    parts_in = [p for p in m.get("parts") or [] if isinstance(p, dict)]
    if role == "tool":
        parts: list[dict[str, Any]] = [
            {"type": "tool_call_response", "id": _s(m.get("tool_call_id")), "response": text}
        ]
        parts += [_semconv_part(p) for p in parts_in if p.get("type") not in ("text", "tool_result")]
    elif parts_in:
        parts = [_semconv_part(p) for p in parts_in]
    else:
        parts = [{"type": "text", "content": text}] if text else []
    parts += [_tool_call_part(c) for c in m.get("tool_calls") or [] if isinstance(c, dict)]
    out: dict[str, Any] = {"role": role, "parts": parts}
    if m.get("name"):
        out["name"] = _s(m.get("name"))
    return out


def _semconv_part(p: dict[str, Any]) -> dict[str, Any]:
    kind = _s(p.get("type")) or "unknown"
    if kind in ("text", "refusal"):
        return {"type": "text", "content": _s(p.get("text"))}
    if kind == "thinking":
        return {"type": "reasoning", "content": _s(p.get("text"))}
    modality = _MODALITY.get(kind)
    url = _s(p.get("url")) or _s(p.get("file_url"))
    if modality and url.startswith("data:") and "," in url:
        head, data = url[5:].split(",", 1)
        blob = {"type": "blob", "modality": modality, "content": data}
        mime = head.split(";", 1)[0]
        return {**blob, "mime_type": mime} if mime else blob
    if modality and url:
        return {"type": "uri", "modality": modality, "uri": url}
    if modality and p.get("file_id"):
        return {"type": "file", "modality": modality, "file_id": _s(p.get("file_id"))}
    rest = {k: v for k, v in p.items() if k != "type"}
    if kind in _SEMCONV_PART_TYPES:  # would fail the schema's required fields: keep it as a generic part
        return {"type": "unsupported", "original_type": kind, **rest}
    return {"type": kind, **rest}


def _tool_call_part(c: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_call", "id": _s(c.get("id")), "name": _s(c.get("name")), "arguments": _json_or(c)}


def _json_or(c: dict[str, Any]) -> Any:
    args = c.get("arguments")
    if isinstance(args, str):
        try:
            return json.loads(args)
        except ValueError:
            return args
    return args


def _tool_definition(t: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": _s(t.get("type")) or "function", "name": _s(t.get("name"))}
    if t.get("description"):
        out["description"] = _s(t.get("description"))
    if isinstance(t.get("parameters"), dict):
        out["parameters"] = t["parameters"]
    return out


def _openai_tool(t: dict[str, Any]) -> dict[str, Any]:
    fn = {k: v for k, v in _tool_definition(t).items() if k != "type"}
    return {"type": "function", "function": fn}


def _chatml(m: dict[str, Any]) -> dict[str, Any]:
    """A normalized message in OpenAI's chat shape, which Langfuse's UI renders best."""
    out: dict[str, Any] = {"role": _s(m.get("role")) or "user"}
    parts = [p for p in m.get("parts") or [] if isinstance(p, dict)]
    if parts:
        out["content"] = [_chatml_part(p) for p in parts]
    else:
        out["content"] = _s(m.get("content"))
    calls = [c for c in m.get("tool_calls") or [] if isinstance(c, dict)]
    if calls:
        out["tool_calls"] = [_openai_call(c) for c in calls]
    if m.get("tool_call_id"):
        out["tool_call_id"] = _s(m.get("tool_call_id"))
    if m.get("name"):
        out["name"] = _s(m.get("name"))
    return out


def _chatml_part(p: dict[str, Any]) -> dict[str, Any]:
    if p.get("type") == "text":
        return {"type": "text", "text": _s(p.get("text"))}
    if p.get("type") == "image" and p.get("url"):
        return {"type": "image_url", "image_url": {"url": _s(p.get("url"))}}
    return dict(p)


def _openai_call(c: dict[str, Any]) -> dict[str, Any]:
    args = c.get("arguments")
    return {
        "id": _s(c.get("id")),
        "type": "function",
        "function": {"name": _s(c.get("name")), "arguments": args if isinstance(args, str) else _dumps(args)},
    }


def _langfuse_output(f: _Facts) -> Any:
    if f.output_text or f.output_calls:
        out: dict[str, Any] = {"role": "assistant"}
        if f.output_text or not f.output_calls:
            out["content"] = f.output_text
        if f.output_calls:
            out["tool_calls"] = [_openai_call(c) for c in f.output_calls]
        return out
    if (f.op == "embeddings" or f.failed) and f.response is not None:
        return f.response  # vectors are already dropped from embedding responses
    if f.failed and _s(f.row.get("error")):
        return {"error": _s(f.row.get("error"))}
    return None


# --------------------------------------------------------------------------- values and bounds


def _put(a: dict[str, Any], key: str, value: Any) -> None:
    """Set an attribute unless it is empty: absent beats a misleading ''/0-length value."""
    if value is None or value == "" or (isinstance(value, list) and not value):
        return
    a[key] = value


def _s(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else str(value)


def _obj(value: Any) -> Any:
    """A JSON column's value: rows from the enricher hold objects, rows from the store text."""
    if isinstance(value, str):
        if not value:
            return None
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def _dicts(value: Any) -> list[dict[str, Any]]:
    value = _obj(value)
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _first(params: dict[str, Any], keys: tuple[str, ...], convert: Any) -> Any:
    for key in keys:
        if key in params:
            value = convert(params[key])
            if value is not None:
                return value
    return None


def _scalar(value: Any) -> Any:
    """A model parameter as Langfuse stores it: scalars as is, anything else as JSON text."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return _dumps(value)


def _dumps(value: Any) -> str:
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # lone surrogates, or an int too big for orjson: the slow, forgiving way
        return _clean(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str))


def _clean(text: str) -> str:
    # Lone surrogates (a client cut an emoji in half) cannot be encoded as OTLP's UTF-8 strings.
    if text.isascii():
        return text
    return text.encode("utf-8", "replace").decode("utf-8")


def _clip(text: str, limit: int = MAX_ATTR_BYTES) -> str:
    if text.isascii():  # the common case: one byte per character, nothing to clean
        if len(text) <= limit:
            return text
        data = text.encode("ascii")
    else:
        data = text.encode("utf-8", "replace")
        if len(data) <= limit:
            return data.decode("utf-8")
    keep = limit - len(TRUNCATION_MARK.encode("utf-8"))
    return data[: max(0, keep)].decode("utf-8", "ignore") + TRUNCATION_MARK


def _cap_strings(value: Any, cap: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= cap else value[:cap] + TRUNCATION_MARK
    if isinstance(value, list):
        return [_cap_strings(v, cap) for v in value]
    if isinstance(value, dict):
        return {k: _cap_strings(v, cap) for k, v in value.items()}
    return value


def _bounded_json(value: Any, limit: int = MAX_ATTR_BYTES) -> tuple[str, bool]:
    """JSON text within ``limit`` bytes, still valid JSON where possible; (text, was_cut).

    Long strings are shortened first (keeping every message), then the oldest list items
    are dropped (the latest turn matters most); only then is the text itself cut.
    """
    text = _dumps(value)
    if len(text.encode("utf-8")) <= limit:
        return text, False
    for cap in (8192, 2048, 512, 128):
        text = _dumps(_cap_strings(value, cap))
        if len(text.encode("utf-8")) <= limit:
            return text, True
    if isinstance(value, list):
        items = _cap_strings(value, 128)
        lo, hi = 1, len(items)  # smallest number of leading items to drop so the rest fits
        while lo < hi:
            mid = (lo + hi) // 2
            if len(_dumps(items[mid:]).encode("utf-8")) <= limit:
                hi = mid
            else:
                lo = mid + 1
        text = _dumps(items[lo:])
        if len(text.encode("utf-8")) <= limit:
            return text, True
    return _clip(text, limit), True


def _bound(a: dict[str, Any], truncated: list[str]) -> dict[str, AttrValue]:
    out: dict[str, AttrValue] = {}
    for key, value in a.items():
        if isinstance(value, str):
            clipped = _clip(value)
            if clipped != value and key not in truncated and len(value.encode("utf-8", "replace")) > MAX_ATTR_BYTES:
                truncated.append(key)
            out[key] = clipped
        elif isinstance(value, list):
            items = value[:MAX_LIST_ITEMS]
            out[key] = [_clip(v, MAX_ITEM_BYTES) if isinstance(v, str) else v for v in items]
        else:
            out[key] = value
    return out
