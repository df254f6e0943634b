"""A span as one row of the OTel Collector clickhouseexporter's ``otel_traces`` table:
``otel_row`` in the exporter's insert order, ``otel_json`` as a JSONEachRow object."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from prompttap.schemas.spans.model import SCOPE_NAME, SCOPE_VERSION, AttrValue, CaptureSpan, resource_attributes

_STATUS = {"OK": "Ok", "ERROR": "Error", "UNSET": "Unset"}
_KIND = {"CLIENT": "Client", "INTERNAL": "Internal", "SERVER": "Server", "PRODUCER": "Producer", "CONSUMER": "Consumer"}

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
