"""Every read the inspector makes, as named functions with bound parameters.

No SQL here is built from user input: filters choose among fixed fragments and their
values travel as ClickHouse query parameters.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from schemas.capture import COLUMN_NAMES, JSON_COLUMNS

LIST_COLUMNS = (
    "id",
    "started_at",
    "route",
    "method",
    "path",
    "api",
    "model",
    "status_code",
    "outcome",
    "duration_ms",
    "ttft_ms",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "stream",
    "thread_id",
    "prompt_template_id",
    "session_id",
    "user_id",
    "tags",
    "client",
    "error",
)


@dataclass(frozen=True, slots=True)
class CaptureFilter:
    route: str | None = None
    model: str | None = None
    status: int | None = None
    outcome: str | None = None
    api: str | None = None
    thread: str | None = None
    session: str | None = None

    def where(self) -> tuple[str, dict[str, Any]]:
        clauses, params = [], {}
        for field_name, column, ch_type in (
            ("route", "route", "String"),
            ("model", "model", "String"),
            ("status", "status_code", "UInt16"),
            ("outcome", "outcome", "String"),
            ("api", "api", "String"),
            ("thread", "thread_id", "String"),
            ("session", "session_id", "String"),
        ):
            value = getattr(self, field_name)
            if value is not None and value != "":
                clauses.append(f"{column} = {{{field_name}:{ch_type}}}")
                params[field_name] = value
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def list_captures(client: Any, flt: CaptureFilter, limit: int, offset: int) -> list[dict[str, Any]]:
    where, params = flt.where()
    sql = (
        f"SELECT {', '.join(LIST_COLUMNS)} FROM captures FINAL{where} "
        "ORDER BY started_at DESC, id DESC LIMIT {limit:UInt32} OFFSET {offset:UInt64}"
    )
    result = client.query(sql, parameters={**params, "limit": limit, "offset": offset})
    return [_decode(dict(zip(result.column_names, row, strict=True))) for row in result.result_rows]


def get_capture(client: Any, capture_id: uuid.UUID) -> dict[str, Any] | None:
    result = client.query(
        f"SELECT {', '.join(COLUMN_NAMES)} FROM captures FINAL WHERE id = {{id:UUID}} LIMIT 1",
        parameters={"id": str(capture_id)},
    )
    if not result.result_rows:
        return None
    row = _decode(dict(zip(result.column_names, result.result_rows[0], strict=True)))
    row["request"] = _json_or_none(row.get("request_body"), row.get("request_body_encoding"))
    return row


def count_captures(client: Any) -> int:
    return int(client.command("SELECT count() FROM captures FINAL"))


def _json_or_none(text: str | None, encoding: str | None) -> Any:
    if not text or encoding != "utf-8":
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for name, value in row.items():
        if name in JSON_COLUMNS:
            row[name] = _json_or_none(value, "utf-8")
        elif isinstance(value, uuid.UUID):
            row[name] = str(value)
        elif name == "stream_timing":
            row[name] = [t if isinstance(t, dict) else {"offset_ms": t[0], "size": t[1]} for t in value]
        elif name == "started_at" or name == "recorded_at":
            row[name] = value.isoformat()
    return row
