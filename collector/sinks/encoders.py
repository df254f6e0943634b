"""Payload encoders, one per sink kind; they run in the encoder process.

Each takes enriched capture rows (``collector.enrich``) and returns bytes ready to send.
"""

from __future__ import annotations

import json
import string
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from prompttap.schemas.capture import COLUMNS, JSON_COLUMNS


def _json_text(value: Any) -> str:
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:  # lone surrogates (a client cut an emoji in half): escape them instead
        return json.dumps(value, default=str, ensure_ascii=True)


def capture_json(row: dict[str, Any]) -> dict[str, Any]:
    """One captures row as ClickHouse's JSONEachRow wants it: every value fits its column's type, so the
    store never refuses a row for what a client sent (a value that cannot fit is stored as absent)."""
    out: dict[str, Any] = {}
    for name, fit in _COLUMN_FITS:
        value = row.get(name)
        if name in JSON_COLUMNS:
            value = "" if value is None else _json_text(value)
        elif name == "stream_timing":
            value = [{"offset_ms": o, "size": s} for o, s in value or ()]
        else:
            if fit is not None and value is not None:
                value = fit(value)
            if value is None and name in _DEFAULTS:
                value = _DEFAULTS[name]
        out[name] = value
    return out


def _uuid(value: Any) -> str | None:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:  # X-Prompttap-Replay-Of holds whatever a client put there
        return None


def _fixed_hex(size: int) -> Callable[[Any], str | None]:
    """Trace and span ids: hex of exactly ``size`` characters (FixedString refuses longer ones)."""
    return lambda v: v if isinstance(v, str) and len(v) == size and all(c in _HEX for c in v) else None


def _uint(limit: int) -> Callable[[Any], int | None]:
    return lambda v: v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= limit else None


def _fit(ch_type: str) -> Callable[[Any], Any] | None:
    """What makes a value fit a column of ``ch_type`` (None when the value cannot); None: any value does."""
    base = ch_type.removeprefix("Nullable(").removesuffix(")")
    if base == "UUID":
        return _uuid
    if base.startswith("FixedString("):
        return _fixed_hex(int(base[len("FixedString(") :]))
    if base.startswith("UInt"):
        return _uint(2 ** int(base[len("UInt") :]) - 1)
    return None


_HEX = frozenset(string.hexdigits)
_COLUMN_FITS = tuple((c.name, _fit(c.ch_type)) for c in COLUMNS)


def _escape_surrogates(value: Any) -> Any:
    """Text a client sent with lone surrogates (``"\\udc00"`` in its JSON, an emoji cut in half) cannot be
    UTF-8: each one is kept as its escape, the text ``\\udc00``, as the JSON columns keep it."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_escape_surrogates(k): _escape_surrogates(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_escape_surrogates(v) for v in value]
    return value


def _row_json(row: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(row, default=str)
    except TypeError:  # only a row with lone surrogates pays for the escaping
        return orjson.dumps(_escape_surrogates(row), default=str)


def encode_captures(rows: list[dict[str, Any]]) -> bytes:
    return b"\n".join(_row_json(capture_json(r)) for r in rows)


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
