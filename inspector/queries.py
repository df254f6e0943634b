"""Every read (and the one delete) the inspector makes, as named functions with bound parameters.

No SQL here is built from user input: filters choose among fixed fragments and their
values travel as ClickHouse query parameters.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

import orjson
from prompttap.schemas.capture import COLUMN_NAMES, JSON_COLUMNS

# The full-text index expression of migration 0003, verbatim: ClickHouse only uses a skip index
# when the query repeats its expression exactly.
SEARCH_EXPR = (
    r"lowerUTF8(concat(system_prompt, ' ', replaceRegexpAll(concat(messages, ' ', output_tool_calls), "
    r"'\\\\(?:u[0-9a-fA-F]{4}|.)|data:[a-zA-Z0-9.+/-]+\x3Bbase64,[A-Za-z0-9+/=]*', ' '), ' ', output_text))"
)
# The start of the last user message, for the list; parsed from `messages` only for the rows shown.
LAST_USER_EXPR = (
    "leftUTF8(JSONExtractString(arrayLast(m -> JSONExtractString(m, 'role') = 'user', "
    "JSONExtractArrayRaw(messages)), 'content'), 240)"
)
# A word is what splitByNonAlpha keeps: ASCII letters/digits and any non-ASCII character.
_WORD = re.compile(r"[0-9A-Za-z\u0080-\U0010ffff]")
# A live tail looks this far back in started_at for rows recorded since its cursor (a long stream
# is recorded long after it started); the bound keeps the read to the newest parts.
TAIL_WINDOW_HOURS = 6
# Full scans under FINAL skip merging across partitions: the partition key (toYYYYMM(started_at)) is a
# function of the sorting key, so two versions of a capture always share a partition. chDB's automatic
# decision does not take this; forcing it saves ~25% of a scan.
FINAL_SETTINGS = "SETTINGS do_not_merge_across_partitions_select_final = 1"

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


@dataclass(frozen=True, slots=True)
class CaptureFilter:
    route: str | None = None
    model: str | None = None
    status: int | None = None
    outcome: str | None = None
    api: str | None = None
    thread: str | None = None
    session: str | None = None
    template: str | None = None
    user: str | None = None
    tag: str | None = None
    q: str | None = None  # full-text: every word must occur in the prompt or the output
    since: datetime | None = None  # started_at >= since
    until: datetime | None = None  # started_at < until

    def where(self) -> tuple[str, dict[str, Any]]:
        clauses, params = self.conditions()
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def conditions(self) -> tuple[list[str], dict[str, Any]]:
        clauses: list[str] = []
        params: dict[str, Any] = {}
        for field_name, column, ch_type in (
            ("route", "route", "String"),
            ("model", "model", "String"),
            ("status", "status_code", "UInt16"),
            ("outcome", "outcome", "String"),
            ("api", "api", "String"),
            ("thread", "thread_id", "String"),
            ("session", "session_id", "String"),
            ("template", "prompt_template_id", "String"),
            ("user", "user_id", "String"),
        ):
            value = getattr(self, field_name)
            if value is not None and value != "":
                clauses.append(f"{column} = {{{field_name}:{ch_type}}}")
                params[field_name] = value
        if self.tag:
            clauses.append("has(tags, {tag:String})")
            params["tag"] = self.tag
        if self.q and _WORD.search(self.q):
            clauses.append(f"hasAllTokens({SEARCH_EXPR}, tokens(lowerUTF8({{q:String}}), 'splitByNonAlpha'))")
            params["q"] = self.q
        if self.since is not None:
            clauses.append("started_at >= {since:DateTime64(6, 'UTC')}")
            params["since"] = ch_time(self.since)
        if self.until is not None:
            clauses.append("started_at < {until:DateTime64(6, 'UTC')}")
            params["until"] = ch_time(self.until)
        return clauses, params

    def as_params(self) -> dict[str, str]:
        """The filter as query-string values (for links that keep the current filters)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or value == "":
                continue
            out[f.name] = value.isoformat() if isinstance(value, datetime) else str(value)
        return out


@dataclass(frozen=True, slots=True)
class Cursor:
    """A keyset position: (started_at, id) of the last row seen."""

    started_at: datetime
    id: uuid.UUID

    @classmethod
    def parse(cls, text: str) -> Cursor:
        ts, sep, cid = text.rpartition(",")
        if not sep:
            raise ValueError("cursor must be <started_at>,<id>")
        return cls(parse_time(ts), uuid.UUID(cid.strip()))

    def __str__(self) -> str:
        return f"{self.started_at.isoformat()},{self.id}"


def parse_time(text: str) -> datetime:
    """An ISO 8601 instant (naive means UTC)."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace(" ", "T", 1))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def ch_time(value: datetime) -> str:
    """A DateTime64(6, 'UTC') parameter value."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


def cursor_of(row: dict[str, Any]) -> str:
    return str(Cursor(parse_time(row["started_at"]), uuid.UUID(row["id"])))


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
    rows = _rows(client.query(sql, parameters={**params, "limit": limit, "offset": offset}))
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
    row = _decode(dict(zip(result.column_names, result.result_rows[0], strict=True)))
    row["request"] = _json_or_none(row.get("request_body"), row.get("request_body_encoding"))
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
    return _rows(result)


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


# --- threads and templates ---------------------------------------------------------------------

THREAD_COLUMNS = (
    "id",
    "started_at",
    "route",
    "api",
    "model",
    "status_code",
    "outcome",
    "duration_ms",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "prompt_template_id",
    "system_prompt",
    "messages",
    "output_text",
    "output_tool_calls",
)


def thread_captures(client: Any, thread_id: str, limit: int = 500) -> list[dict[str, Any]]:
    result = client.query(
        f"SELECT {', '.join(THREAD_COLUMNS)} FROM captures FINAL WHERE thread_id = {{t:String}} "
        "ORDER BY started_at, id LIMIT {limit:UInt32}",
        parameters={"t": thread_id, "limit": limit},
    )
    return _rows(result)


def template_groups(client: Any, flt: CaptureFilter, limit: int = 200) -> list[dict[str, Any]]:
    clauses, params = flt.conditions()
    clauses.append("prompt_template_id != ''")
    # The newest member's prompt is read afterwards by primary key: argMax(system_prompt, ...) here
    # would decompress every system prompt in the store (0.7 s at a million captures). Threads are
    # counted on 64-bit hashes (exact but for collisions; 2.5x cheaper than on the strings).
    sql = (
        "SELECT prompt_template_id, count() AS captures, groupUniqArray(20)(route) AS routes, "
        "groupUniqArray(20)(model) AS models, min(started_at) AS first_seen, max(started_at) AS last_seen, "
        "uniqExact(cityHash64(thread_id)) AS threads, argMax(id, started_at) AS sample_id "
        f"FROM captures FINAL WHERE {' AND '.join(clauses)} "
        f"GROUP BY prompt_template_id ORDER BY last_seen DESC LIMIT {{limit:UInt32}} {FINAL_SETTINGS}"
    )
    groups = _rows(client.query(sql, parameters={**params, "limit": limit}))
    prompts = _prompts_by_key(client, [(g["last_seen"], g["sample_id"]) for g in groups])
    rows = []
    for g in groups:
        sample_id = g.pop("sample_id")
        rows.append({"id": g.pop("prompt_template_id"), **g, "sample_system_prompt": prompts.get(sample_id, "")})
    for row in rows:
        row["routes"] = sorted(row["routes"])
        row["models"] = sorted(m for m in row["models"] if m)
    return rows


def _prompts_by_key(client: Any, keys: list[tuple[str, str]]) -> dict[str, str]:
    """System prompts of the captures with these (started_at, id): a primary-key read of a few granules."""
    if not keys:
        return {}
    result = client.query(
        "SELECT id, system_prompt FROM captures "
        "WHERE started_at IN {ts:Array(DateTime64(6, 'UTC'))} AND id IN {ids:Array(UUID)}",
        parameters={"ts": [ch_time(parse_time(ts)) for ts, _ in keys], "ids": [cid for _, cid in keys]},
    )
    return {str(cid): prompt for cid, prompt in result.result_rows}


def template_members(client: Any, template_id: str, limit: int = 200) -> list[dict[str, Any]]:
    result = client.query(
        "SELECT id, started_at, route, model, thread_id, outcome, system_prompt FROM captures FINAL "
        "WHERE prompt_template_id = {t:String} ORDER BY started_at DESC, id DESC LIMIT {limit:UInt32}",
        parameters={"t": template_id, "limit": limit},
    )
    return _rows(result)


# --- stats -------------------------------------------------------------------------------------

_BUCKETS = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400)


def stats(client: Any, flt: CaptureFilter, max_buckets: int = 60) -> dict[str, Any]:
    """Requests, errors, latency/TTFT percentiles over time; tokens and cost by model and route."""
    where, params = flt.where()
    span_sql = (
        "SELECT count() AS requests, min(started_at) AS first, max(started_at) AS last "
        f"FROM captures FINAL{where} {FINAL_SETTINGS}"
    )
    span_row = _rows(client.query(span_sql, parameters=params))[0]
    if not span_row["requests"]:
        empty = {"p50": None, "p95": None}
        return {
            **{"requests": 0, "errors": 0, "error_rate": 0.0, "latency_ms": empty, "ttft_ms": empty},
            **{"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "first": None, "last": None},
            **{"bucket_seconds": 0, "over_time": [], "by_model": [], "by_route": [], "by_outcome": []},
        }
    span = (parse_time(span_row["last"]) - parse_time(span_row["first"])).total_seconds()
    bucket = next((b for b in _BUCKETS if span / b <= max_buckets), _BUCKETS[-1])
    # Totals, the series and the three breakdowns in one scan (GROUPING SETS), not five scans in a row:
    # at a million captures each scan costs ~60 ms and the embedded store runs them one at a time.
    error = "outcome != 'ok'"
    sql = (
        "SELECT grouping(t, model, route, outcome) AS grouping_set, "
        "toStartOfInterval(started_at, toIntervalSecond({bucket:UInt32})) AS t, model, route, outcome, "
        f"count() AS requests, countIf({error}) AS errors, quantilesExact(0.5, 0.95)(duration_ms) AS latency, "
        "quantilesExactIf(0.5, 0.95)(assumeNotNull(ttft_ms), ttft_ms IS NOT NULL) AS ttft, "
        "countIf(ttft_ms IS NOT NULL) AS with_ttft, sum(ifNull(input_tokens, 0)) AS input_tokens, "
        "sum(ifNull(output_tokens, 0)) AS output_tokens, sum(ifNull(cost_usd, 0)) AS cost_usd "
        f"FROM captures FINAL{where} GROUP BY GROUPING SETS ((), (t), (model), (route), (outcome)) "
        f"{FINAL_SETTINGS}, force_grouping_standard_compatibility = 1"
    )
    sets: dict[int, list[dict[str, Any]]] = {}
    for row in _rows(client.query(sql, parameters={**params, "bucket": bucket})):
        sets.setdefault(int(row["grouping_set"]), []).append(row)
    # grouping() has a 1 bit for each key a set does not group by, first argument highest: () = 1111.
    totals = sets[0b1111][0]
    out: dict[str, Any] = {
        "requests": int(totals["requests"]),
        "errors": int(totals["errors"]),
        "error_rate": totals["errors"] / totals["requests"],
        "latency_ms": _quantiles(totals["latency"], totals["requests"]),
        "ttft_ms": _quantiles(totals["ttft"], totals["requests"]),
        "input_tokens": int(totals["input_tokens"]),
        "output_tokens": int(totals["output_tokens"]),
        "cost_usd": float(totals["cost_usd"]),
        "first": span_row["first"],
        "last": span_row["last"],
        "bucket_seconds": bucket,
        "over_time": [
            {
                "t": row["t"],
                "requests": int(row["requests"]),
                "errors": int(row["errors"]),
                "latency_ms": _quantiles(row["latency"], row["requests"]),
                "ttft_ms": _quantiles(row["ttft"], row["with_ttft"]),
            }
            for row in sorted(sets.get(0b0111, []), key=lambda r: r["t"])
        ],
    }
    for key, column, mask in (
        ("by_model", "model", 0b1011),
        ("by_route", "route", 0b1101),
        ("by_outcome", "outcome", 0b1110),
    ):
        ranked = sorted(sets.get(mask, []), key=lambda r, c=column: (-int(r["requests"]), r[c]))[:50]
        out[key] = [
            {
                "name": r[column],
                "requests": int(r["requests"]),
                "errors": int(r["errors"]),
                "input_tokens": int(r["input_tokens"]),
                "output_tokens": int(r["output_tokens"]),
                "cost_usd": float(r["cost_usd"]),
                "latency_ms": _quantiles(r["latency"], r["requests"]),
            }
            for r in ranked
        ]
    return out


def _quantiles(values: list[float], n: int) -> dict[str, float | None]:
    if not n or not values:
        return {"p50": None, "p95": None}
    return {"p50": float(values[0]), "p95": float(values[1])}


# --- decoding ----------------------------------------------------------------------------------


def _rows(result: Any) -> list[dict[str, Any]]:
    return [_decode(dict(zip(result.column_names, row, strict=True))) for row in result.result_rows]


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
        elif isinstance(value, datetime):
            row[name] = _utc(value).isoformat()
        elif isinstance(value, bytes):  # FixedString (trace_id, span_id) comes back as bytes
            row[name] = value.decode("utf-8", "replace")
    return row


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
