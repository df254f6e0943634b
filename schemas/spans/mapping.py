"""The mapping itself: one capture row, one span (``span_of``), assembled from the GenAI and
Langfuse attribute modules, prompttap's own keys, bounded values and the capture's ids."""

from __future__ import annotations

from typing import Any

from prompttap.schemas.spans.bounds import bound, bounded_json, clip, put
from prompttap.schemas.spans.facts import Facts, read_facts, span_ids
from prompttap.schemas.spans.genai import content_attrs, genai_attrs, transport_attrs
from prompttap.schemas.spans.langfuse import langfuse_attrs
from prompttap.schemas.spans.model import CaptureSpan, SpanEvent
from prompttap.schemas.values import as_float, as_str


def span_of(row: dict[str, Any]) -> CaptureSpan:
    """The span for one capture row. Pure and deterministic: a replay maps to the same span."""
    f = read_facts(row)
    a: dict[str, Any] = {}
    truncated: list[str] = []

    def put_json(key: str, value: Any) -> None:
        a[key], cut = bounded_json(value)
        if cut:
            truncated.append(key)

    genai_attrs(f, a)
    if f.api != "unknown":  # content only from bodies prompttap understood (never raw bodies)
        content_attrs(f, put_json)
    transport_attrs(f, a)
    langfuse_attrs(f, a, put_json)
    _prompttap_attrs(f, a)
    attributes = bound(a, truncated)
    if truncated:
        attributes["prompttap.truncated_attributes"] = truncated

    events: tuple[SpanEvent, ...] = ()
    if f.stream and f.ttft_ms is not None:
        ttft = {"gen_ai.response.time_to_first_chunk": f.ttft_ms / 1000.0}
        events = (SpanEvent("prompttap.first_chunk", f.start_ns + round(f.ttft_ms * 1_000_000), ttft),)
    path = as_str(row.get("path")).split("?", 1)[0]  # no query: low cardinality, and it may hold credentials
    name = f"{f.op} {f.model}".strip() if f.op else f"{as_str(row.get('method')) or 'HTTP'} {path or '/'}"
    trace_id, span_id, parent_id = span_ids(row)
    duration_ns = max(0, round((as_float(row.get("duration_ms")) or 0.0) * 1_000_000))
    return CaptureSpan(
        name=clip(name, 256),
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_id,
        trace_state=as_str(row.get("tracestate")),  # not a capture column today: usually ""
        start_ns=f.start_ns,
        end_ns=f.start_ns + duration_ns,
        status_code="ERROR" if f.failed else "UNSET",  # instrumentations leave success Unset (OTel spec)
        status_message=clip(f.error_message, 1024),
        attributes=attributes,
        events=events,
    )


def _prompttap_attrs(f: Facts, a: dict[str, Any]) -> None:
    """prompttap's own keys, for joins with the captures table."""
    put(a, "prompttap.capture.id", as_str(f.row.get("id")))
    put(a, "prompttap.route", as_str(f.row.get("route")))
    put(a, "prompttap.outcome", f.outcome)
    put(a, "prompttap.thread.id", as_str(f.row.get("thread_id")))
    put(a, "prompttap.prompt_template.id", as_str(f.row.get("prompt_template_id")))
    put(a, "prompttap.replay_of", as_str(f.row.get("replay_of")))
