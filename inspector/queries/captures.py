"""Reads of captures: the list, one capture, its neighbours (thread, replays), and the one delete."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from prompttap.inspector.queries.filters import (
    LAST_USER_EXPR,
    TAIL_WINDOW_HOURS,
    CaptureFilter,
    Cursor,
    ch_time,
    parse_time,
)
from prompttap.inspector.queries.rows import decode, decoded_rows, json_or_none
from prompttap.schemas.capture import COLUMN_NAMES

LIST_COLUMNS = (
    "id",
    "started_at",
    "recorded_at",
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
    "replay_of",
)


def list_captures(
    client: Any,
    flt: CaptureFilter,
    limit: int,
    offset: int = 0,
    *,
    before: Cursor | None = None,
    after: Cursor | None = None,
    recorded_after: datetime | None = None,
) -> list[dict[str, Any]]:
    """Captures newest first. ``before``/``after`` are keyset cursors (older/newer page);
    ``recorded_after`` returns what was stored since a live tail's last poll."""
    clauses, params = flt.conditions()
    ascending = False
    if before is not None:
        clauses.append(
            "started_at <= {b_ts:DateTime64(6, 'UTC')} AND "
            "(started_at < {b_ts:DateTime64(6, 'UTC')} OR id < {b_id:UUID})"
        )
        params.update(b_ts=ch_time(before.started_at), b_id=str(before.id))
    if after is not None:
        clauses.append(
            "started_at >= {a_ts:DateTime64(6, 'UTC')} AND "
            "(started_at > {a_ts:DateTime64(6, 'UTC')} OR id > {a_id:UUID})"
        )
        params.update(a_ts=ch_time(after.started_at), a_id=str(after.id))
        ascending = True
    if recorded_after is not None:
        clauses.append(
            "recorded_at > {r_ts:DateTime64(6, 'UTC')} AND "
            f"started_at >= {{r_ts:DateTime64(6, 'UTC')}} - INTERVAL {TAIL_WINDOW_HOURS} HOUR"
        )
        params["r_ts"] = ch_time(recorded_after)
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    order = "ASC" if ascending else "DESC"
    sql = (
        f"SELECT {', '.join(LIST_COLUMNS)}, {LAST_USER_EXPR} AS last_user_message FROM captures FINAL{where} "
        f"ORDER BY started_at {order}, id {order} LIMIT {{limit:UInt32}} OFFSET {{offset:UInt64}}"
    )
    rows = decoded_rows(client.query(sql, parameters={**params, "limit": limit, "offset": offset}))
    return rows[::-1] if ascending else rows


def explain_search(client: Any, flt: CaptureFilter, limit: int = 50) -> str:
    """EXPLAIN indexes = 1 of the list query for ``flt`` (evidence that search prunes)."""
    where, params = flt.where()
    sql = (
        f"EXPLAIN indexes = 1 SELECT {', '.join(LIST_COLUMNS)} FROM captures FINAL{where} "
        "ORDER BY started_at DESC, id DESC LIMIT {limit:UInt32}"
    )
    return "\n".join(r[0] for r in client.query(sql, parameters={**params, "limit": limit}).result_rows)


def get_capture(client: Any, capture_id: uuid.UUID) -> dict[str, Any] | None:
    result = client.query(
        f"SELECT {', '.join(COLUMN_NAMES)} FROM captures FINAL WHERE id = {{id:UUID}} LIMIT 1",
        parameters={"id": str(capture_id)},
    )
    if not result.result_rows:
        return None
    row = decode(dict(zip(result.column_names, result.result_rows[0], strict=True)))
    row["request"] = json_or_none(row.get("request_body"), row.get("request_body_encoding"))
    return row


def count_captures(client: Any) -> int:
    return int(client.command("SELECT count() FROM captures FINAL"))


def filter_options(client: Any) -> dict[str, list[str]]:
    """Values seen, for the filter pickers (LowCardinality columns: a dictionary read, cheap)."""
    out: dict[str, list[str]] = {}
    for column in ("route", "model", "api", "outcome"):
        result = client.query(
            f"SELECT DISTINCT {column} FROM captures WHERE {column} != '' ORDER BY {column} LIMIT 500"
        )
        out[column] = [r[0] for r in result.result_rows]
    return out


# --- one capture's neighbours ------------------------------------------------------------------


def previous_in_thread(client: Any, row: dict[str, Any]) -> str | None:
    if not row.get("thread_id"):
        return None
    result = client.query(
        "SELECT id FROM captures FINAL WHERE thread_id = {t:String} AND "
        "(started_at < {ts:DateTime64(6, 'UTC')} OR (started_at = {ts:DateTime64(6, 'UTC')} AND id < {id:UUID})) "
        "ORDER BY started_at DESC, id DESC LIMIT 1",
        parameters={"t": row["thread_id"], "ts": ch_time(parse_time(row["started_at"])), "id": row["id"]},
    )
    return str(result.result_rows[0][0]) if result.result_rows else None


def replays_of(client: Any, capture_id: str, limit: int = 50) -> list[dict[str, Any]]:
    result = client.query(
        "SELECT id, started_at, model, status_code, outcome FROM captures FINAL "
        "WHERE replay_of = {id:UUID} ORDER BY started_at DESC LIMIT {limit:UInt32}",
        parameters={"id": capture_id, "limit": limit},
    )
    return decoded_rows(result)


def find_replay(client: Any, original: str, request_sha256: str, since: datetime) -> str | None:
    """The capture of a replay we sent: same original, same body, started after we sent it."""
    result = client.query(
        "SELECT id FROM captures FINAL WHERE replay_of = {id:UUID} AND request_sha256 = {sha:String} "
        "AND started_at >= {since:DateTime64(6, 'UTC')} ORDER BY started_at DESC LIMIT 1",
        parameters={"id": original, "sha": request_sha256, "since": ch_time(since)},
    )
    return str(result.result_rows[0][0]) if result.result_rows else None


def delete_capture(client: Any, capture_id: uuid.UUID) -> bool:
    """Lightweight-delete a capture (and its span in otel_traces); False if it did not exist."""
    found = client.query(
        "SELECT span_id FROM captures WHERE id = {id:UUID} LIMIT 1", parameters={"id": str(capture_id)}
    ).result_rows
    if not found:
        return False
    client.command("DELETE FROM captures WHERE id = {id:UUID}", parameters={"id": str(capture_id)})
    if int(client.command("EXISTS TABLE otel_traces")):
        client.command("DELETE FROM otel_traces WHERE SpanId = {span:String}", parameters={"span": found[0][0]})
    return True
