"""Payload encoders, one per sink kind; they run in the encoder process.

Each takes enriched capture rows (``collector.enrich``) and returns bytes ready to send.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
from prompttap.schemas.capture import COLUMN_NAMES, JSON_COLUMNS


def _json_text(value: Any) -> str:
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:  # lone surrogates (a client cut an emoji in half): escape them instead
        return json.dumps(value, default=str, ensure_ascii=True)


def capture_json(row: dict[str, Any]) -> dict[str, Any]:
    """One captures row as ClickHouse's JSONEachRow wants it."""
    out: dict[str, Any] = {}
    for name in COLUMN_NAMES:
        value = row.get(name)
        if name in JSON_COLUMNS:
            value = "" if value is None else _json_text(value)
        elif name == "stream_timing":
            value = [{"offset_ms": o, "size": s} for o, s in value or ()]
        elif value is None and name in _DEFAULTS:
            value = _DEFAULTS[name]
        out[name] = value
    return out


def encode_captures(rows: list[dict[str, Any]]) -> bytes:
    return b"\n".join(orjson.dumps(capture_json(r), default=str) for r in rows)


def encode_otel_traces(rows: list[dict[str, Any]], service_name: str = "prompttap") -> bytes:
    from prompttap.schemas.spans import otel_json, span_of

    return b"\n".join(orjson.dumps(otel_json(span_of(r), service_name), default=str) for r in rows)


def encode_otlp(rows: list[dict[str, Any]], service_name: str = "prompttap") -> bytes:
    from prompttap.collector.sinks.otlp import encode_spans
    from prompttap.schemas.spans import span_of

    return encode_spans([span_of(r) for r in rows], service_name)


ENCODERS: dict[str, Callable[..., bytes]] = {
    "captures": encode_captures,
    "otel_traces": encode_otel_traces,
    "otlp": encode_otlp,
}

_DEFAULTS: dict[str, Any] = {
    "duration_ms": 0.0,
    "status_code": 0,
    "request_size": 0,
    "response_size": 0,
    "truncated": False,
    "stream": False,
    "chunk_count": 0,
    "incomplete": False,
    "request_headers": {},
    "response_headers": {},
    "tags": [],
    "trace_id": "0" * 32,
    "span_id": "0" * 16,
}
