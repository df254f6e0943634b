"""Which captures an export reads, selected in ClickHouse with bound parameters.

The filters (``Selection``), then one capture per thread (the one with the most messages:
a conversation is exported once, as its longest capture, unless ``per_capture``), then
identical prompt+answer pairs collapsed to the earliest (unless ``dedupe`` is off), then
the train/validation part (a hash of the thread, so a thread never straddles the split).
Rows stream in ClickHouse blocks, read in table order (``ORDER BY started_at, id`` is the
sorting key, so nothing is sorted in memory).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from prompttap.schemas.capture import CONVERSATION_APIS

# finish reasons (lower-cased) of an answer that stopped before it was done.
CUT_FINISH_REASONS: tuple[str, ...] = (
    "length",
    "max_tokens",
    "max_output_tokens",
    "content_filter",
    "incomplete",
    "safety",
    "recitation",
)
SPLIT_BUCKETS = 1_000_000
BLOCK_ROWS = 2048  # rows per streamed ClickHouse block: bounded memory per step
# Output columns are named like the table's (``messages``, ``id``): WHERE and ORDER BY must
# still mean the stored columns (and ORDER BY the sorting key, so rows are read in order).
SELECT_SETTINGS = {"prefer_column_name_to_alias": 1}

THREAD_KEY = "if(thread_id = '', toString(id), thread_id)"
DEDUPE_KEY = "cityHash64(system_prompt, messages, tools, output_text, output_tool_calls)"


@dataclass(frozen=True, slots=True)
class Selection:
    """Which captures to export and how to turn them into conversations."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    route: str | None = None
    model: str | None = None
    api: str | None = None
    status: int | None = None
    outcomes: tuple[str, ...] | None = ("ok",)  # None: any outcome
    template: str | None = None
    thread: str | None = None
    session: str | None = None
    user: str | None = None
    tag: str | None = None
    min_output_tokens: int | None = None
    ids: tuple[str, ...] = ()
    complete_only: bool = True  # 2xx, not truncated/incomplete/cut at max tokens, has an answer
    per_capture: bool = False
    dedupe: bool = True

    def where(self) -> tuple[str, dict[str, Any]]:
        clauses = ["api IN {x_chat_apis:Array(String)}", "messages NOT IN ('', '[]')"]
        params: dict[str, Any] = {"x_chat_apis": list(CONVERSATION_APIS)}
        if self.since is not None:
            clauses.append("started_at >= toDateTime64({x_since:String}, 6, 'UTC')")
            params["x_since"] = _ch_time(self.since)
        if self.until is not None:
            clauses.append("started_at < toDateTime64({x_until:String}, 6, 'UTC')")
            params["x_until"] = _ch_time(self.until)
        for name, column, ch_type in (
            ("route", "route", "String"),
            ("model", "model", "String"),
            ("api", "api", "String"),
            ("status", "status_code", "UInt16"),
            ("template", "prompt_template_id", "String"),
            ("thread", "thread_id", "String"),
            ("session", "session_id", "String"),
            ("user", "user_id", "String"),
        ):
            value = getattr(self, name)
            if value is not None and value != "":
                clauses.append(f"{column} = {{x_{name}:{ch_type}}}")
                params[f"x_{name}"] = value
        if self.tag:
            clauses.append("has(tags, {x_tag:String})")
            params["x_tag"] = self.tag
        if self.outcomes is not None:
            clauses.append("outcome IN {x_outcomes:Array(String)}")
            params["x_outcomes"] = list(self.outcomes)
        if self.min_output_tokens:
            clauses.append("ifNull(output_tokens, 0) >= {x_min_out:UInt32}")
            params["x_min_out"] = self.min_output_tokens
        if self.ids:
            clauses.append("id IN {x_ids:Array(UUID)}")
            params["x_ids"] = list(self.ids)
        if self.complete_only:
            clauses += [
                "status_code BETWEEN 200 AND 299",
                "NOT truncated",
                "NOT incomplete",
                "lower(toString(finish_reason)) NOT IN {x_cut_reasons:Array(String)}",
                "(output_text != '' OR output_tool_calls NOT IN ('', '[]'))",
            ]
            params["x_cut_reasons"] = list(CUT_FINISH_REASONS)
        return " WHERE " + " AND ".join(clauses), params


@dataclass(frozen=True, slots=True)
class Options:
    """What to write: the format and the dataset-quality switches that do not select."""

    format: str = "openai-chat"
    redact: bool = False
    split: float | None = None  # fraction of threads in "train"
    part: str | None = None  # only this part of the split (HTTP: one request per part)
    dataset: str = ""  # langfuse dataset name (item ids derive from it)

    @property
    def cut(self) -> int:
        return round((self.split or 1.0) * SPLIT_BUCKETS)


def _ch_time(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _chosen_sql(sel: Selection, where: str) -> str | None:
    """Rows (id, b) of the captures to export: one per thread (the longest), duplicates
    removed; b is the split bucket of the capture's thread. None when every capture
    matching ``where`` is exported."""
    if sel.per_capture and not sel.dedupe:
        return None
    # Inner names differ from the outer aliases: ClickHouse resolves an alias before a column.
    base = f"SELECT id AS c_id, started_at AS c_ts, {THREAD_KEY} AS c_tk"
    if sel.dedupe:
        base += f", {DEDUPE_KEY} AS c_key"
    if not sel.per_capture:
        base += ", JSONLength(messages) AS c_len"
    base += f" FROM captures FINAL{where}"
    if sel.per_capture:
        rows = f"SELECT c_id AS id, c_ts AS ts, c_tk AS tk, c_key AS key FROM ({base})"
    else:
        pick = "(c_len, c_ts)"
        key = f", argMax(c_key, {pick}) AS key" if sel.dedupe else ""
        rows = (
            f"SELECT argMax(c_id, {pick}) AS id, argMax(c_ts, {pick}) AS ts, c_tk AS tk{key} "
            f"FROM ({base}) GROUP BY c_tk"
        )
    if sel.dedupe:
        rows = f"SELECT id, tk FROM ({rows}) ORDER BY ts, id LIMIT 1 BY key"
    return f"SELECT id, cityHash64(tk) % {SPLIT_BUCKETS} AS b FROM ({rows})"


def selection_sql(sel: Selection, opts: Options, columns: str) -> tuple[str, dict[str, Any]]:
    """The query for the rows to export, in table order, with its bound parameters."""
    where, params = sel.where()
    chosen = _chosen_sql(sel, where)
    side = ""
    if opts.part is not None:
        side = "< {x_cut:UInt32}" if opts.part == "train" else ">= {x_cut:UInt32}"
        params["x_cut"] = opts.cut
    if chosen is not None:
        where += f" AND id IN (SELECT id FROM ({chosen}){' WHERE b ' + side if side else ''})"
    elif side:
        where += f" AND cityHash64({THREAD_KEY}) % {SPLIT_BUCKETS} {side}"
    return f"SELECT {columns} FROM captures FINAL{where} ORDER BY started_at, id", params


@dataclass(slots=True)
class Counts:
    captures: int  # captures matching the filters
    conversations: int  # after one capture per thread
    rows: int  # after de-duplication: what will be formatted
    train: int  # rows in the train part (== rows without a split)

    @property
    def duplicates(self) -> int:
        return self.conversations - self.rows


def count(client: Any, sel: Selection, opts: Options, settings: dict[str, Any] | None = None) -> Counts:
    """How many captures, conversations and rows an export will read (one extra pass, so
    the progress bar has a total and the report the number of duplicates)."""
    where, params = sel.where()
    params["x_cut"] = opts.cut
    if sel.per_capture:
        grouped = f"SELECT 1 AS n FROM captures FINAL{where}"
    else:
        grouped = f"SELECT count() AS n FROM captures FINAL{where} GROUP BY {THREAD_KEY}"
    chosen = _chosen_sql(sel, where) or (
        f"SELECT id, cityHash64({THREAD_KEY}) % {SPLIT_BUCKETS} AS b FROM captures FINAL{where}"
    )
    sql = (
        f"SELECT (SELECT sum(n) FROM ({grouped})), (SELECT count() FROM ({grouped})), c, t "
        f"FROM (SELECT count() AS c, countIf(b < {{x_cut:UInt32}}) AS t FROM ({chosen}))"
    )
    row = client.query(sql, parameters=params, settings=settings).result_rows[0]
    return Counts(int(row[0] or 0), int(row[1] or 0), int(row[2] or 0), int(row[3] or 0))


# ------------------------------------------------------------------------------------ rows

ROW_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "toString(id)"),
    ("trace_id", "toString(trace_id)"),
    ("span_id", "toString(span_id)"),
    ("thread", THREAD_KEY),
    ("started_at", "started_at"),
    ("route", "toString(route)"),
    ("api", "toString(api)"),
    ("model", "toString(model)"),
    ("response_model", "toString(response_model)"),
    ("session_id", "session_id"),
    ("user_id", "user_id"),
    ("tags", "CAST(tags, 'Array(String)')"),
    ("prompt_template_id", "prompt_template_id"),
    ("system_prompt", "system_prompt"),
    ("messages", "messages"),
    ("tools", "tools"),
    ("output_text", "output_text"),
    ("output_tool_calls", "output_tool_calls"),
    ("finish_reason", "toString(finish_reason)"),
    ("input_tokens", "input_tokens"),
    ("output_tokens", "output_tokens"),
    ("bucket", f"cityHash64({THREAD_KEY}) % {SPLIT_BUCKETS}"),
)
_ROW_NAMES = tuple(name for name, _ in ROW_COLUMNS)


def stream_rows(client: Any, sel: Selection, opts: Options, settings: dict[str, Any] | None = None) -> Iterator[dict]:
    """Normalized rows (JSON columns parsed), streamed block by block."""
    sql, params = selection_sql(sel, opts, ", ".join(f"{expr} AS {name}" for name, expr in ROW_COLUMNS))
    settings = {**SELECT_SETTINGS, "max_block_size": BLOCK_ROWS, **(settings or {})}
    with client.query_row_block_stream(sql, parameters=params, settings=settings) as blocks:
        for block in blocks:
            for values in block:
                row = dict(zip(_ROW_NAMES, values, strict=True))
                for name in ("messages", "tools", "output_tool_calls"):
                    row[name] = _json_list(row[name])
                yield row


def _json_list(text: str) -> list[Any]:
    if not text:
        return []
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return []
    return value if isinstance(value, list) else []
