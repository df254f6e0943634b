"""Store rows as the inspector's code and templates use them: JSON columns parsed, ids and
times as strings (ISO 8601, UTC)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from prompttap.schemas.capture import JSON_COLUMNS


def decoded_rows(result: Any) -> list[dict[str, Any]]:
    return [decode(dict(zip(result.column_names, row, strict=True))) for row in result.result_rows]


def json_or_none(text: str | None, encoding: str | None) -> Any:
    if not text or encoding != "utf-8":
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def decode(row: dict[str, Any]) -> dict[str, Any]:
    for name, value in row.items():
        if name in JSON_COLUMNS:
            row[name] = json_or_none(value, "utf-8")
        elif isinstance(value, uuid.UUID):
            row[name] = str(value)
        elif name == "stream_timing":
            row[name] = [t if isinstance(t, dict) else {"offset_ms": t[0], "size": t[1]} for t in value]
        elif isinstance(value, datetime):
            row[name] = _utc(value).isoformat()
        elif isinstance(value, bytes):  # FixedString (trace_id, span_id) comes back as bytes
            row[name] = value.decode("utf-8", "replace")
    return row


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
