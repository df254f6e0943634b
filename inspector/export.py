"""Export captured conversations as fine-tuning data (issue #6).

One engine serves ``prompttap export`` (which reads the store itself when no server owns
it) and ``GET/POST /api/export`` (the inspector streaming the same file):

- Selection, in ClickHouse, with bound parameters: the filters, then one capture per
  thread (the one with the most messages: a conversation is exported once, as its
  longest capture, unless ``per_capture``), then identical prompt+answer pairs collapsed
  to the earliest (unless ``dedupe`` is off), then the train/validation part (a hash of
  the thread, so a thread never straddles the split). Rows stream in ClickHouse blocks,
  read in table order (``ORDER BY started_at, id`` is the sorting key, so nothing is
  sorted in memory).
- Formatting, validation and redaction in Python for the JSONL formats (``openai-chat``,
  ``anthropic``, ``sharegpt``, ``langfuse`` items); a line that breaks its format's rules
  is skipped and counted with the reason.
- ``parquet`` is written by ClickHouse itself (``FORMAT Parquet``; redaction in SQL with
  the same patterns), one row per conversation with the normalized columns.

Over HTTP a split is one request per part (``split=0.9&part=train``); the CLI makes both.
The final report (exported, skipped with reasons, duplicates, redactions) of an HTTP
export is kept for ``GET /api/export/reports/{id}`` (id in ``X-Prompttap-Export-Id``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import queue
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Body, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from inspector.web import store, templates

FORMATS: tuple[str, ...] = ("openai-chat", "anthropic", "sharegpt", "parquet", "langfuse")
JSONL_FORMATS = frozenset({"openai-chat", "anthropic", "sharegpt", "langfuse"})
PARTS = ("train", "validation")
# APIs whose captures are conversations (embeddings, model listings and unknown traffic are not).
CHAT_APIS: tuple[str, ...] = (
    "openai.chat",
    "openai.responses",
    "openai.completions",
    "anthropic.messages",
    "ollama.chat",
    "ollama.generate",
    "gemini.generate",
)
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
# Small blocks and row groups, and no bloom filters: ClickHouse keeps those for the whole
# file until its end (memory grows with the row count) and a training set has no use for them.
PARQUET_SETTINGS = {
    "output_format_parquet_row_group_size": 10_000,
    "output_format_parquet_string_as_string": 1,
    "output_format_parquet_write_bloom_filter": 0,
    "max_block_size": 8192,  # default 65k rows of wide nested columns: hundreds of MB per block
}
# Output columns are named like the table's (``messages``, ``id``): WHERE and ORDER BY must
# still mean the stored columns (and ORDER BY the sorting key, so rows are read in order).
SELECT_SETTINGS = {"prefer_column_name_to_alias": 1}

THREAD_KEY = "if(thread_id = '', toString(id), thread_id)"
DEDUPE_KEY = "cityHash64(system_prompt, messages, tools, output_text, output_tool_calls)"


class ExportError(ValueError):
    """A bad export request; the message is shown to the user as is."""


# ------------------------------------------------------------------------------------ selection


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
        params: dict[str, Any] = {"x_chat_apis": list(CHAT_APIS)}
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


def parse_when(value: str, now: dt.datetime | None = None) -> dt.datetime:
    """An ISO 8601 time (UTC unless it says otherwise) or an age: ``30m``, ``24h``, ``7d``, ``2w``."""
    text = value.strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", text)
    if m:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
        return (now or dt.datetime.now(dt.UTC)) - dt.timedelta(seconds=float(m.group(1)) * unit)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ExportError(f"not a time: {value!r} (use ISO 8601 like 2026-01-31T12:00, or an age: 24h, 7d)") from None
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


def parse_request(params: Mapping[str, Any]) -> tuple[Selection, Options]:
    """Selection and options from query parameters or a JSON body (same names as the CLI
    flags, with underscores). Raises ExportError with a one-line reason."""

    def text(name: str) -> str | None:
        value = params.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, list | tuple):
            value = value[-1]
        return str(value)

    def flag(name: str, default: bool) -> bool:
        value = params.get(name)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return value
        lowered = str(value).strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ExportError(f"{name} must be true or false, got {value!r}")

    def integer(name: str) -> int | None:
        value = text(name)
        if value is None:
            return None
        try:
            number = int(value)
        except ValueError:
            raise ExportError(f"{name} must be an integer, got {value!r}") from None
        if number < 0:
            raise ExportError(f"{name} must not be negative")
        return number

    fmt = text("format") or "openai-chat"
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    outcome = text("outcome")
    outcomes: tuple[str, ...] | None = ("ok",)
    if outcome is not None:
        outcomes = None if outcome == "any" else tuple(o.strip() for o in outcome.split(",") if o.strip())
    ids_raw = params.get("ids") or ()
    if isinstance(ids_raw, str):
        ids_raw = [ids_raw]
    ids: list[str] = []
    for chunk in ids_raw:
        for item in str(chunk).replace(",", " ").split():
            try:
                ids.append(str(uuid.UUID(item)))
            except ValueError:
                raise ExportError(f"not a capture id: {item!r}") from None
    split = text("split")
    split_value: float | None = None
    if split is not None:
        try:
            split_value = float(split)
        except ValueError:
            raise ExportError(f"split must be a fraction like 0.9, got {split!r}") from None
        if not 0 < split_value < 1:
            raise ExportError("split must be between 0 and 1 (the share of threads in the train file)")
    part = text("part")
    if part is not None and (part not in PARTS or split_value is None):
        raise ExportError("part must be train or validation, together with split")
    since, until = text("since"), text("until")
    selection = Selection(
        since=parse_when(since) if since else None,
        until=parse_when(until) if until else None,
        route=text("route"),
        model=text("model"),
        api=text("api"),
        status=integer("status"),
        outcomes=outcomes,
        template=text("template"),
        thread=text("thread"),
        session=text("session"),
        user=text("user"),
        tag=text("tag"),
        min_output_tokens=integer("min_output_tokens"),
        ids=tuple(ids),
        complete_only=not flag("include_incomplete", False),
        per_capture=flag("per_capture", False),
        dedupe=flag("dedupe", True),
    )
    dataset = text("dataset") or ""
    options = Options(format=fmt, redact=flag("redact", False), split=split_value, part=part, dataset=dataset)
    return selection, options


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


# ------------------------------------------------------------------------------------ redaction

# Applied in this order (a key can hold digits that look like a phone number). Written for
# both Python's ``re`` (ASCII mode) and ClickHouse's RE2: no look-around, no back-references.
REDACTIONS: tuple[tuple[str, str, str], ...] = (
    (
        "secret",
        r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{20,}"
        r"|\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"
        r"|\bAKIA[0-9A-Z]{16}\b"
        r"|\bAIza[0-9A-Za-z_-]{35}"
        r"|\bgh[pousr]_[A-Za-z0-9]{36,}"
        r"|\bgithub_pat_[A-Za-z0-9_]{22,}"
        r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"
        r"|\bhf_[A-Za-z0-9]{30,}"
        r"|\bglpat-[A-Za-z0-9_-]{20,}"
        r"|\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"
        r"|(?i:bearer)[ \t]+[A-Za-z0-9._~+/=-]{20,}",
        "[SECRET]",
    ),
    ("email", r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}", "[EMAIL]"),
    (
        "ip",
        r"\b(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\b"
        r"|\b(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}\b"
        r"|\b(?:[0-9A-Fa-f]{1,4}:){1,6}:(?:[0-9A-Fa-f]{1,4}:){0,5}[0-9A-Fa-f]{1,4}\b",
        "[IP]",
    ),
    (
        "phone",
        r"(?:\+[0-9]{1,3}[ .-]?)?(?:\([0-9]{2,4}\)[ .-]?|\b[0-9]{2,4}[ .-])[0-9]{3,4}[ .-][0-9]{3,4}\b"
        r"|\+[0-9]{8,15}\b",
        "[PHONE]",
    ),
)
REDACTION_KINDS = tuple(kind for kind, _, _ in REDACTIONS)
_RULES = [(kind, re.compile(pattern, re.ASCII), token) for kind, pattern, token in REDACTIONS]

# JSON text (tool-call arguments) is redacted with its escapes swapped for control
# characters that no pattern matches (raw control characters cannot occur in JSON text),
# so ``\nbob@x.io`` loses the address and keeps a valid ``\n``.
_ESCAPES = (("\\\\", "\x05"), ('\\"', "\x04"), ("\\/", "\x06"), ("\\n", "\x01"), ("\\t", "\x02"), ("\\r", "\x03"))
_ESCAPES += (("\\b", "\x0e"), ("\\f", "\x0f"))
_UNICODE_ESCAPE = re.compile(r"\\u([0-9A-Fa-f]{4})")
_UNICODE_MARK = re.compile("\x07([0-9A-Fa-f]{4})\x07")


def protect_json(text: str) -> str:
    for escape, mark in _ESCAPES:
        text = text.replace(escape, mark)
    return _UNICODE_ESCAPE.sub("\x07\\1\x07", text)


def unprotect_json(text: str) -> str:
    text = _UNICODE_MARK.sub(r"\\u\1", text)
    for escape, mark in _ESCAPES:
        text = text.replace(mark, escape)
    return text


class Redactor:
    """Scrubs e-mail addresses, phone numbers, IP addresses and API-key-like secrets, and
    counts what it replaced per kind."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def text(self, value: str, count: bool = True) -> str:
        if not value:
            return value
        for kind, rx, token in _RULES:
            value, n = rx.subn(token, value)
            if n and count:
                self.counts[kind] += n
        return value

    def json_text(self, value: str, count: bool = True) -> str:
        if not value or ("\\" not in value):
            return self.text(value, count)
        return unprotect_json(self.text(protect_json(value), count))

    def row(self, row: dict[str, Any], identity: bool = False) -> None:
        """Redact a normalized row in place: instructions, message text, tool-call
        arguments, the answer (and the session/user labels when ``identity``)."""
        row["system_prompt"] = self.text(row["system_prompt"])
        for m in row["messages"]:
            if isinstance(m.get("content"), str):
                m["content"] = self.text(m["content"])
            for p in m.get("parts") or ():
                if isinstance(p, dict) and isinstance(p.get("text"), str):
                    # text parts repeat ``content``: scrub them, count them once
                    p["text"] = self.text(p["text"], count=p.get("type") != "text")
            self.calls(m.get("tool_calls") or ())
        row["output_text"] = self.text(row["output_text"])
        self.calls(row["output_tool_calls"])
        if identity:
            row["session_id"] = self.text(row["session_id"])
            row["user_id"] = self.text(row["user_id"])

    def calls(self, calls: Any) -> None:
        for c in calls:
            if isinstance(c, dict) and isinstance(c.get("arguments"), str):
                c["arguments"] = self.json_text(c["arguments"])


def _lit_params(prefix: str) -> dict[str, str]:
    """The redaction patterns and tokens as bound parameters for SQL."""
    params = {f"{prefix}{i}p": pattern for i, (_, pattern, _) in enumerate(REDACTIONS)}
    params.update({f"{prefix}{i}t": token for i, (_, _, token) in enumerate(REDACTIONS)})
    params.update({f"{prefix}e{i}": escape for i, (escape, _) in enumerate(_ESCAPES)})
    params.update({f"{prefix}m{i}": mark for i, (_, mark) in enumerate(_ESCAPES)})
    params.update({f"{prefix}ue": r"\\u([0-9A-Fa-f]{4})", f"{prefix}um": "\x07([0-9A-Fa-f]{4})\x07"})
    params.update({f"{prefix}ur": "\x07\\1\x07", f"{prefix}uu": "\\\\u\\1"})
    return params


def _sql_redact(expr: str, p: str = "r") -> str:
    for i in range(len(REDACTIONS)):
        expr = f"replaceRegexpAll({expr}, {{{p}{i}p:String}}, {{{p}{i}t:String}})"
    return expr


def _sql_protect(expr: str, p: str = "r") -> str:
    for i in range(len(_ESCAPES)):
        expr = f"replaceAll({expr}, {{{p}e{i}:String}}, {{{p}m{i}:String}})"
    return f"replaceRegexpAll({expr}, {{{p}ue:String}}, {{{p}ur:String}})"


def _sql_unprotect(expr: str, p: str = "r") -> str:
    expr = f"replaceRegexpAll({expr}, {{{p}um:String}}, {{{p}uu:String}})"
    for i in range(len(_ESCAPES)):
        expr = f"replaceAll({expr}, {{{p}m{i}:String}}, {{{p}e{i}:String}})"
    return expr


def _sql_redact_json(expr: str) -> str:
    return _sql_unprotect(_sql_redact(_sql_protect(expr)))


def redaction_counts(
    client: Any, sel: Selection, opts: Options, settings: dict[str, Any] | None = None
) -> Counter[str]:
    """What the parquet export's SQL redaction replaces, per kind (counted the way
    ``Redactor.row(identity=True)`` counts)."""
    msgs = "JSONExtractArrayRaw(messages)"
    arguments = _sql_protect("JSONExtractString(c, 'arguments')")
    texts = (
        "arrayConcat([system_prompt, output_text, session_id, user_id], "
        f"arrayMap(m -> JSONExtractString(m, 'content'), {msgs}), "
        "arrayFlatten(arrayMap(m -> arrayMap(q -> JSONExtractString(q, 'text'), arrayFilter(q -> "
        f"JSONExtractString(q, 'type') != 'text', JSONExtractArrayRaw(m, 'parts'))), {msgs})), "
        f"arrayFlatten(arrayMap(m -> arrayMap(c -> {arguments}, JSONExtractArrayRaw(m, 'tool_calls')), {msgs})), "
        f"arrayMap(c -> {arguments}, JSONExtractArrayRaw(output_tool_calls)))"
    )
    steps = [f"arrayStringConcat({texts}, '\\0') AS t0"]
    sums = []
    for i in range(len(REDACTIONS)):
        steps.append(f"replaceRegexpAll(t{i}, {{r{i}p:String}}, {{r{i}t:String}}) AS t{i + 1}")
        sums.append(f"sum(countMatches(t{i}, {{r{i}p:String}}))")
    inner, params = selection_sql(sel, opts, ", ".join(steps))
    params.update(_lit_params("r"))
    settings = {**SELECT_SETTINGS, **(settings or {})}
    row = client.query(f"SELECT {', '.join(sums)} FROM ({inner})", parameters=params, settings=settings).result_rows[0]
    return Counter({kind: int(n) for kind, n in zip(REDACTION_KINDS, row, strict=True) if n})


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


# ------------------------------------------------------------------------------------ formats


def answer_message(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The captured answer as a normalized assistant message; none when there was no
    answer (a failed or cancelled capture must not teach an empty reply)."""
    calls = [c for c in row.get("output_tool_calls") or () if isinstance(c, dict)]
    if not row.get("output_text") and not calls:
        return []
    message = {
        "role": "assistant",
        "content": row.get("output_text") or "",
        "parts": [],
        "tool_calls": calls,
        "tool_call_id": None,
        "name": None,
    }
    return [message]


class _CallIds:
    """Tool-call ids as the chat formats need them: synthesized where the API had none
    (Gemini, legacy function calls), and tool results paired with the call they answer
    (by id, else by tool name, else the oldest unanswered call)."""

    def __init__(self) -> None:
        self.n = 0
        self.pending: list[tuple[str, str]] = []  # (id, name) awaiting a result

    def call(self, call: Mapping[str, Any]) -> str:
        call_id = str(call.get("id") or "")
        if not call_id:
            self.n += 1
            call_id = f"call_{self.n}"
        self.pending.append((call_id, str(call.get("name") or "")))
        return call_id

    def result(self, message: Mapping[str, Any]) -> str:
        call_id = str(message.get("tool_call_id") or "")
        name = str(message.get("name") or "")
        for i, (pid, _) in enumerate(self.pending):
            if pid == call_id:
                del self.pending[i]
                return pid
        for i, (pid, pname) in enumerate(self.pending):
            if pname and pname in (name, call_id):
                del self.pending[i]
                return pid
        if self.pending and not call_id:
            return self.pending.pop(0)[0]
        return call_id


def _text_of(m: Mapping[str, Any]) -> str:
    content = m.get("content")
    return content if isinstance(content, str) else ""


def _image_url(part: Mapping[str, Any]) -> str:
    url = part.get("url")
    return url if isinstance(url, str) else ""


class Formatter:
    """Turns normalized rows into one format's records; counts parts it had to drop."""

    def __init__(self, fmt: str, dataset: str = "") -> None:
        self.fmt = fmt
        self.dataset = dataset
        self.dropped_parts: Counter[str] = Counter()

    def __call__(self, row: Mapping[str, Any]) -> dict[str, Any]:
        if self.fmt == "openai-chat":
            return self.openai_chat(row)
        if self.fmt == "anthropic":
            return self.anthropic(row)
        if self.fmt == "sharegpt":
            return self.sharegpt(row)
        if self.fmt == "langfuse":
            return self.langfuse(row)
        raise ExportError(f"no line format for {self.fmt}")

    # --- openai-chat -----------------------------------------------------------------------

    def openai_chat(self, row: Mapping[str, Any]) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        if row.get("system_prompt"):
            messages.append({"role": "system", "content": row["system_prompt"]})
        ids = _CallIds()
        for m in [*row.get("messages", ()), *answer_message(row)]:
            messages.append(self._openai_message(m, ids))
        out: dict[str, Any] = {"messages": messages}
        tools = self._openai_tools(row.get("tools") or ())
        if tools:
            out["tools"] = tools
        return out

    def _openai_message(self, m: Mapping[str, Any], ids: _CallIds) -> dict[str, Any]:
        role = str(m.get("role") or "")
        text = _text_of(m)
        if role == "user":
            return {"role": "user", "content": self._openai_user_content(m, text)}
        if role == "assistant":
            out: dict[str, Any] = {"role": "assistant"}
            calls = [
                {
                    "id": ids.call(c),
                    "type": "function",
                    "function": {"name": str(c.get("name") or ""), "arguments": str(c.get("arguments") or "{}")},
                }
                for c in m.get("tool_calls") or ()
                if isinstance(c, dict)
            ]
            self._drop_parts(m, keep=("text",))
            if text or not calls:
                out["content"] = text
            if calls:
                out["tool_calls"] = calls
            return out
        if role == "tool":
            return {"role": "tool", "tool_call_id": ids.result(m), "content": text}
        if role in ("system", "developer"):
            return {"role": "system", "content": text}
        return {"role": role, "content": text}  # the validator says why it cannot stay

    def _openai_user_content(self, m: Mapping[str, Any], text: str) -> str | list[dict[str, Any]]:
        parts = [p for p in m.get("parts") or () if isinstance(p, dict)]
        if not any(p.get("type") == "image" for p in parts):
            self._drop_parts(m, keep=("text",))
            return text
        out: list[dict[str, Any]] = []
        for p in parts:
            if p.get("type") == "text":
                out.append({"type": "text", "text": str(p.get("text") or "")})
            elif p.get("type") == "image" and _image_url(p):
                image: dict[str, Any] = {"url": _image_url(p)}
                if p.get("detail") in ("low", "high", "auto"):
                    image["detail"] = p["detail"]
                out.append({"type": "image_url", "image_url": image})
            else:
                self.dropped_parts[str(p.get("type"))] += 1
        return out

    def _drop_parts(self, m: Mapping[str, Any], keep: tuple[str, ...]) -> None:
        for p in m.get("parts") or ():
            if isinstance(p, dict) and p.get("type") not in keep:
                self.dropped_parts[str(p.get("type"))] += 1

    @staticmethod
    def _openai_tools(tools: Any) -> list[dict[str, Any]]:
        out = []
        for t in tools:
            if not isinstance(t, dict) or t.get("type"):  # provider-side tools have no function schema
                continue
            fn: dict[str, Any] = {"name": str(t.get("name") or "")}
            if t.get("description"):
                fn["description"] = str(t["description"])
            params = t.get("parameters")
            fn["parameters"] = params if isinstance(params, dict) and params else {"type": "object", "properties": {}}
            out.append({"type": "function", "function": fn})
        return out

    # --- anthropic -------------------------------------------------------------------------

    def anthropic(self, row: Mapping[str, Any]) -> dict[str, Any]:
        system = [row["system_prompt"]] if row.get("system_prompt") else []
        messages: list[dict[str, Any]] = []
        ids = _CallIds()

        def push(role: str, blocks: list[dict[str, Any]]) -> None:
            if messages and messages[-1]["role"] == role:
                messages[-1]["content"].extend(blocks)
            else:
                messages.append({"role": role, "content": blocks})

        for m in [*row.get("messages", ()), *answer_message(row)]:
            role = str(m.get("role") or "")
            text = _text_of(m)
            if role in ("system", "developer"):
                system.append(text)
            elif role == "user":
                push("user", self._anthropic_user_blocks(m, text))
            elif role == "assistant":
                blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
                self._drop_parts(m, keep=("text",))
                for c in m.get("tool_calls") or ():
                    if isinstance(c, dict):
                        block_id = ids.call(c)
                        blocks.append(
                            {
                                "type": "tool_use",
                                "id": block_id,
                                "name": str(c.get("name") or ""),
                                "input": _json_object(c.get("arguments")),
                            }
                        )
                push("assistant", blocks)
            elif role == "tool":
                result: dict[str, Any] = {"type": "tool_result", "tool_use_id": ids.result(m), "content": text}
                if any(isinstance(p, dict) and p.get("is_error") for p in m.get("parts") or ()):
                    result["is_error"] = True
                push("user", [result])
            else:
                push(role, [{"type": "text", "text": text}])
        for msg in messages:  # one text block reads better as a plain string
            if len(msg["content"]) == 1 and msg["content"][0].get("type") == "text":
                msg["content"] = msg["content"][0]["text"]
        out: dict[str, Any] = {}
        if any(system):
            out["system"] = "\n\n".join(s for s in system if s)
        out["messages"] = messages
        tools = [
            {
                "name": str(t.get("name") or ""),
                **({"description": str(t["description"])} if t.get("description") else {}),
                "input_schema": t["parameters"]
                if isinstance(t.get("parameters"), dict) and t["parameters"]
                else {"type": "object", "properties": {}},
            }
            for t in row.get("tools") or ()
            if isinstance(t, dict) and not t.get("type")
        ]
        if tools:
            out["tools"] = tools
        return out

    def _anthropic_user_blocks(self, m: Mapping[str, Any], text: str) -> list[dict[str, Any]]:
        parts = [p for p in m.get("parts") or () if isinstance(p, dict)]
        if not parts:
            return [{"type": "text", "text": text}] if text else []
        blocks: list[dict[str, Any]] = []
        for p in parts:
            kind = p.get("type")
            if kind == "text" and p.get("text"):
                blocks.append({"type": "text", "text": str(p["text"])})
            elif kind == "image" and _image_url(p):
                url = _image_url(p)
                data = re.match(r"data:([^;,]+);base64,(.*)", url, re.S)
                source = (
                    {"type": "base64", "media_type": data.group(1), "data": data.group(2)}
                    if data
                    else {"type": "url", "url": url}
                )
                blocks.append({"type": "image", "source": source})
            elif kind != "text":
                self.dropped_parts[str(kind)] += 1
        return blocks

    # --- sharegpt --------------------------------------------------------------------------

    def sharegpt(self, row: Mapping[str, Any]) -> dict[str, Any]:
        turns: list[dict[str, str]] = []
        system = [row["system_prompt"]] if row.get("system_prompt") else []
        observations: list[str] = []

        def flush() -> None:
            if observations:
                value = observations[0] if len(observations) == 1 else _dumps(observations)
                turns.append({"from": "observation", "value": value})
                observations.clear()

        for m in [*row.get("messages", ()), *answer_message(row)]:
            role = str(m.get("role") or "")
            text = _text_of(m)
            if role == "tool":
                observations.append(text)
                continue
            flush()
            if role in ("system", "developer"):
                system.append(text)
            elif role == "user":
                self._drop_parts(m, keep=("text",))
                if turns and turns[-1]["from"] == "human":  # ShareGPT alternates: merge
                    turns[-1]["value"] += "\n\n" + text
                else:
                    turns.append({"from": "human", "value": text})
            elif role == "assistant":
                self._drop_parts(m, keep=("text",))
                calls = [
                    {"name": str(c.get("name") or ""), "arguments": _json_object(c.get("arguments"))}
                    for c in m.get("tool_calls") or ()
                    if isinstance(c, dict)
                ]
                if calls:  # the call is the turn; a preamble text has no slot in ShareGPT
                    turns.append({"from": "function_call", "value": _dumps(calls[0] if len(calls) == 1 else calls)})
                else:
                    turns.append({"from": "gpt", "value": text})
            else:
                turns.append({"from": role, "value": text})
        flush()
        if any(system):
            turns.insert(0, {"from": "system", "value": "\n\n".join(s for s in system if s)})
        out: dict[str, Any] = {"conversations": turns}
        tools = [
            {"name": t.get("name") or "", "description": t.get("description") or "", "parameters": t.get("parameters")}
            for t in row.get("tools") or ()
            if isinstance(t, dict) and not t.get("type")
        ]
        if tools:
            out["tools"] = _dumps(tools)  # LLaMA-Factory's convention: a JSON string
        return out

    # --- langfuse --------------------------------------------------------------------------

    def langfuse(self, row: Mapping[str, Any]) -> dict[str, Any]:
        chat = self.openai_chat(row)
        messages = chat["messages"]
        started = row.get("started_at")
        metadata = {
            "capture_id": row["id"],
            "thread_id": row.get("thread") or "",
            "model": row.get("model") or "",
            "route": row.get("route") or "",
            "api": row.get("api") or "",
            "started_at": started.isoformat() if isinstance(started, dt.datetime) else str(started or ""),
            "session_id": row.get("session_id") or "",
            "user_id": row.get("user_id") or "",
            "tags": list(row.get("tags") or ()),
            "source": "prompttap",
        }
        item_input: dict[str, Any] = {"messages": messages[:-1]}
        if chat.get("tools"):
            item_input["tools"] = chat["tools"]
        return {
            # Stable per dataset and capture: exporting again updates the item instead of adding one.
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"prompttap:{self.dataset}:{row['id']}")),
            "input": item_input,
            "expected_output": messages[-1],
            "metadata": metadata,
            "source_trace_id": row.get("trace_id") or None,
            "source_observation_id": row.get("span_id") or None,
        }


def _json_object(arguments: Any) -> Any:
    if isinstance(arguments, dict):
        return arguments
    try:
        value = orjson.loads(arguments or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return {"_raw": str(arguments)}
    return value if isinstance(value, dict) else {"value": value}


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


# ------------------------------------------------------------------------------------ validation

_OPENAI_ROLES = frozenset({"system", "user", "assistant", "tool", "function"})
_OPENAI_MESSAGE_KEYS = frozenset({"role", "content", "name", "function_call", "tool_calls", "tool_call_id", "weight"})
_OPENAI_TOP_KEYS = frozenset({"messages", "tools", "parallel_tool_calls", "functions"})
_FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def validate_openai_chat(line: Mapping[str, Any]) -> list[str]:
    """Reasons a line breaks OpenAI's chat fine-tuning format (empty: valid).

    The rules of OpenAI's fine-tuning data preparation guide: a ``messages`` list; roles
    system/user/assistant/tool (function: legacy); only the known message keys; content
    present unless an assistant calls tools; at least one assistant message; ``weight``
    (0 or 1) only on assistant messages; every tool call of an assistant message that is
    not the last one answered by a tool message with its ``tool_call_id`` before the next
    turn, and every tool message answering such a call; function tools with valid names.
    Reasons are generic (no positions or ids) so the report can count them.
    """
    reasons: list[str] = []
    if set(line) - _OPENAI_TOP_KEYS:
        reasons.append("unknown top-level keys")
    messages = line.get("messages")
    if not isinstance(messages, list) or not messages:
        return [*reasons, "no messages"]
    last_assistant = max((i for i, m in enumerate(messages) if _role(m) == "assistant"), default=-1)
    if last_assistant < 0:
        reasons.append("no assistant message")
    open_calls: set[str] = set()
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            reasons.append("a message is not an object")
            continue
        role = m.get("role")
        if role not in _OPENAI_ROLES:
            reasons.append(f"role {role!r} is not allowed")
            continue
        if set(m) - _OPENAI_MESSAGE_KEYS:
            reasons.append("unknown message keys")
        if "weight" in m and (role != "assistant" or m["weight"] not in (0, 1)):
            reasons.append("weight must be 0 or 1, on assistant messages only")
        content = m.get("content")
        calls = m.get("tool_calls") or []
        if content is None and not (role == "assistant" and (calls or m.get("function_call"))):
            reasons.append(f"{role} message without content")
        elif content is not None and not _openai_content_ok(content, role):
            reasons.append(f"{role} content is not text{' or text/image parts' * (role == 'user')}")
        if role in ("user", "assistant") and open_calls:
            reasons.append("tool call not answered before the next turn")
            open_calls.clear()
        if role == "assistant" and calls:
            if not isinstance(calls, list):
                reasons.append("tool_calls is not a list")
                continue
            for c in calls:
                problem = _openai_call_problem(c)
                if problem:
                    reasons.append(problem)
                elif i != last_assistant:
                    open_calls.add(c["id"])
        if role == "tool":
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str) or call_id not in open_calls:
                reasons.append("tool result answers no open tool call")
            else:
                open_calls.discard(call_id)
    if open_calls:
        reasons.append("tool call never answered")
    for t in line.get("tools") or ():
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(fn, dict):
            reasons.append("a tool is not a function tool")
        elif not _FUNCTION_NAME.match(str(fn.get("name") or "")):
            reasons.append("invalid tool name")
        elif "parameters" in fn and not isinstance(fn["parameters"], dict):
            reasons.append("tool parameters are not a JSON schema object")
    return list(dict.fromkeys(reasons))


def _role(m: Any) -> Any:
    return m.get("role") if isinstance(m, dict) else None


def _openai_content_ok(content: Any, role: str) -> bool:
    if isinstance(content, str):
        return True
    if not isinstance(content, list) or role not in ("user", "assistant", "system") or not content:
        return False
    allowed = {"text", "image_url"} if role == "user" else {"text"}
    for part in content:
        if not isinstance(part, dict) or part.get("type") not in allowed:
            return False
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            return False
        if part["type"] == "image_url" and not isinstance((part.get("image_url") or {}).get("url"), str):
            return False
    return True


def _openai_call_problem(call: Any) -> str:
    if not isinstance(call, dict) or call.get("type") != "function" or not isinstance(call.get("function"), dict):
        return "tool call is not a function call"
    if not call.get("id"):
        return "tool call without an id"
    fn = call["function"]
    if not _FUNCTION_NAME.match(str(fn.get("name") or "")):
        return "invalid tool call name"
    if not isinstance(fn.get("arguments"), str):
        return "tool call arguments are not a string"
    try:
        orjson.loads(fn["arguments"])
    except orjson.JSONDecodeError:
        return "tool call arguments are not valid JSON"
    return ""


def validate_anthropic(line: Mapping[str, Any]) -> list[str]:
    """Reasons a line is not a valid Messages API conversation: user first, roles
    alternating, assistant last, non-empty content, tool_use blocks (except in the last
    turn) answered by tool_result blocks in the next user turn."""
    reasons: list[str] = []
    messages = line.get("messages")
    if not isinstance(messages, list) or not messages:
        return ["no messages"]
    if "system" in line and not isinstance(line["system"], str):
        reasons.append("system is not text")
    previous = None
    open_uses: set[str] = set()
    for i, m in enumerate(messages):
        role = _role(m)
        if role not in ("user", "assistant"):
            reasons.append(f"role {role!r} is not allowed")
            continue
        if i == 0 and role != "user":
            reasons.append("the first message is not from the user")
        if role == previous:
            reasons.append("roles do not alternate")
        previous = role
        content = m.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list) or not blocks or (isinstance(content, str) and not content):
            reasons.append(f"empty {role} message")
            continue
        results = {b.get("tool_use_id") for b in blocks if isinstance(b, dict) and b.get("type") == "tool_result"}
        if role == "user":
            if open_uses - results:
                reasons.append("tool use not answered in the next user turn")
            if results - open_uses:
                reasons.append("tool result answers no tool use")
            open_uses = set()
        else:
            if results:
                reasons.append("tool result in an assistant turn")
            for b in blocks:
                if isinstance(b, dict) and b.get("type") == "tool_use":
                    if not b.get("id") or not isinstance(b.get("input"), dict):
                        reasons.append("tool use needs an id and an object input")
                    elif i != len(messages) - 1:
                        open_uses.add(b["id"])
    if previous != "assistant":
        reasons.append("the last message is not from the assistant")
    return list(dict.fromkeys(reasons))


def validate_sharegpt(line: Mapping[str, Any]) -> list[str]:
    """Reasons a line is not a ShareGPT conversation: human/observation turns and
    gpt/function_call turns alternating after an optional system turn, ending with the
    model, no empty values."""
    turns = line.get("conversations")
    if not isinstance(turns, list) or not turns:
        return ["no conversations"]
    reasons: list[str] = []
    body = turns[1:] if _from(turns[0]) == "system" else turns
    for i, t in enumerate(body):
        who = _from(t)
        expected = ("human", "observation") if i % 2 == 0 else ("gpt", "function_call")
        if who not in expected:
            reasons.append(f"{who} turn where {' or '.join(expected)} was expected")
        elif not isinstance(t.get("value"), str) or not t["value"]:
            reasons.append(f"empty {who} turn")
    if not body or _from(body[-1]) not in ("gpt", "function_call"):
        reasons.append("the conversation does not end with the model")
    return list(dict.fromkeys(reasons))


def _from(t: Any) -> Any:
    return t.get("from") if isinstance(t, dict) else None


VALIDATORS: dict[str, Callable[[Mapping[str, Any]], list[str]]] = {
    "openai-chat": validate_openai_chat,
    "anthropic": validate_anthropic,
    "sharegpt": validate_sharegpt,
    "langfuse": lambda item: validate_openai_chat(
        {"messages": [*item["input"]["messages"], item["expected_output"]], **_tools_of(item)}
    ),
}


def _tools_of(item: Mapping[str, Any]) -> dict[str, Any]:
    tools = item["input"].get("tools")
    return {"tools": tools} if tools else {}


# ------------------------------------------------------------------------------------ engine


@dataclass(slots=True)
class Report:
    """What an export did; ``as_dict`` is the JSON the API and ``--json`` give."""

    format: str
    captures: int = 0
    conversations: int = 0
    duplicates: int = 0
    exported: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    redactions: Counter[str] = field(default_factory=Counter)
    dropped_parts: Counter[str] = field(default_factory=Counter)
    split: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    done: bool = False
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "captures": self.captures,
            "conversations": self.conversations,
            "duplicates": self.duplicates,
            "exported": self.exported,
            "skipped": sum(self.skipped.values()),
            "skipped_reasons": dict(self.skipped.most_common()),
            "redactions": dict(self.redactions),
            "dropped_parts": dict(self.dropped_parts),
            "split": dict(self.split),
            "seconds": round(self.seconds, 3),
            "done": self.done,
            "error": self.error,
        }


class Export:
    """One export run over a client: ``prepare`` (counts), then ``lines`` or ``parquet``.

    ``progress`` is called as ``progress(done_rows, report)`` every block or so.
    """

    def __init__(
        self,
        client: Any,
        selection: Selection,
        options: Options,
        settings: dict[str, Any] | None = None,
        progress: Callable[[int, Report], None] | None = None,
    ) -> None:
        self.client = client
        self.sel = selection
        self.opts = options
        self.settings = settings
        self.report = Report(options.format)
        self.counts: Counts | None = None
        self.progress = progress or (lambda done, report: None)
        self._t0 = time.monotonic()

    @property
    def total(self) -> int:
        """Rows this run will read (its part only, when it exports one part)."""
        if self.counts is None:
            return 0
        if self.opts.part == "train":
            return self.counts.train
        if self.opts.part == "validation":
            return self.counts.rows - self.counts.train
        return self.counts.rows

    def prepare(self) -> Counts:
        self.counts = count(self.client, self.sel, self.opts, self.settings)
        self.report.captures = self.counts.captures
        self.report.conversations = self.counts.conversations
        self.report.duplicates = self.counts.duplicates
        return self.counts

    def records(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(part, record) for every valid line, in capture order; skips are counted."""
        fmt = Formatter(self.opts.format, self.opts.dataset)
        redactor = Redactor() if self.opts.redact else None
        validate = VALIDATORS[self.opts.format]
        identity = self.opts.format == "langfuse"
        cut = self.opts.cut
        done = 0
        last = time.monotonic()
        try:
            for row in stream_rows(self.client, self.sel, self.opts, self.settings):
                done += 1
                if redactor is not None:
                    redactor.row(row, identity=identity)
                record = fmt(row)
                reasons = validate(record)
                if reasons:
                    self.report.skipped[reasons[0]] += 1
                else:
                    part = "" if self.opts.split is None else ("train" if row["bucket"] < cut else "validation")
                    part = self.opts.part or part
                    if part:
                        self.report.split[part] = self.report.split.get(part, 0) + 1
                    self.report.exported += 1
                    yield part, record
                if done % 256 == 0 and time.monotonic() - last > 0.1:
                    last = time.monotonic()
                    self._sync(fmt, redactor)
                    self.progress(done, self.report)
        finally:
            self._sync(fmt, redactor)
            self.report.seconds = time.monotonic() - self._t0
        self.report.done = True
        self.progress(done, self.report)

    def _sync(self, fmt: Formatter, redactor: Redactor | None) -> None:
        self.report.dropped_parts = Counter(fmt.dropped_parts)
        if redactor is not None:
            self.report.redactions = Counter(redactor.counts)

    def lines(self) -> Iterator[bytes]:
        """JSONL bytes of one part (or everything), in chunks of about 256 KiB."""
        buf: list[bytes] = []
        size = 0
        for _, record in self.records():
            line = orjson.dumps(record) + b"\n"
            buf.append(line)
            size += len(line)
            if size >= 256 * 1024:
                yield b"".join(buf)
                buf, size = [], 0
        if buf:
            yield b"".join(buf)

    # --- parquet ---------------------------------------------------------------------------

    def parquet_sql(self) -> tuple[str, dict[str, Any]]:
        redact = self.opts.redact

        def text(expr: str) -> str:
            return _sql_redact(expr) if redact else expr

        def args(expr: str) -> str:
            return _sql_redact_json(expr) if redact else expr

        calls = "Array(Tuple(id String, name String, arguments String))"
        message_type = (
            "Array(Tuple(role String, content String, parts Array(Tuple(type String, text String, url String)), "
            f"tool_calls {calls}, tool_call_id String, name String))"
        )
        content = text("JSONExtractString(m, 'content')")
        part_text = text("JSONExtractString(q, 'text')")
        messages = (
            f"CAST(arrayMap(m -> tuple(JSONExtractString(m, 'role'), {content}, "
            f"arrayMap(q -> tuple(JSONExtractString(q, 'type'), {part_text}, JSONExtractString(q, 'url')), "
            "JSONExtractArrayRaw(m, 'parts')), "
            f"arrayMap(c -> tuple(c.1, c.2, {args('c.3')}), JSONExtract(m, 'tool_calls', '{calls}')), "
            "JSONExtractString(m, 'tool_call_id'), JSONExtractString(m, 'name')), JSONExtractArrayRaw(messages)), "
            f"'{message_type}')"
        )
        columns = (
            ("id", "toString(id)"),
            ("trace_id", "toString(trace_id)"),
            ("span_id", "toString(span_id)"),
            ("thread_id", THREAD_KEY),
            ("started_at", "started_at"),
            ("route", "toString(route)"),
            ("api", "toString(api)"),
            ("model", "toString(model)"),
            ("response_model", "toString(response_model)"),
            ("session_id", text("session_id")),
            ("user_id", text("user_id")),
            ("tags", "CAST(tags, 'Array(String)')"),
            ("prompt_template_id", "prompt_template_id"),
            ("system_prompt", text("system_prompt")),
            ("messages", messages),
            (
                "tools",
                "CAST(arrayMap(t -> tuple(JSONExtractString(t, 'name'), JSONExtractString(t, 'description'), "
                "JSONExtractRaw(t, 'parameters')), JSONExtractArrayRaw(tools)), "
                "'Array(Tuple(name String, description String, parameters String))')",
            ),
            ("output_text", text("output_text")),
            (
                "output_tool_calls",
                f"CAST(arrayMap(c -> tuple(c.1, c.2, {args('c.3')}), JSONExtract(output_tool_calls, '{calls}')), "
                f"'{calls}')",
            ),
            ("finish_reason", "toString(finish_reason)"),
            ("input_tokens", "input_tokens"),
            ("output_tokens", "output_tokens"),
            ("params", "params"),
        )
        sql, params = selection_sql(self.sel, self.opts, ", ".join(f"{e} AS {n}" for n, e in columns))
        if redact:
            params.update(_lit_params("r"))
        return sql, params

    def parquet_counts(self) -> None:
        """The report's numbers for a parquet file (ClickHouse writes every selected row)."""
        if self.opts.redact:
            self.report.redactions = redaction_counts(self.client, self.sel, self.opts, self.settings)
        self.report.exported = self.total
        if self.opts.part:
            self.report.split[self.opts.part] = self.total

    def parquet_to_file(self, path: Path) -> None:
        """Write the parquet file with the embedded engine's INTO OUTFILE (chDB only)."""
        sql, params = self.parquet_sql()
        target = str(path.resolve()).replace("\\", "\\\\").replace("'", "\\'")
        settings = ", ".join(f"{k} = {v}" for k, v in {**PARQUET_SETTINGS, **SELECT_SETTINGS}.items())
        self.client.command(
            f"{sql} SETTINGS {settings} INTO OUTFILE '{target}' TRUNCATE FORMAT Parquet", parameters=params
        )
        self.finish()

    def parquet_stream(self) -> Iterator[bytes]:
        """Parquet bytes from a ClickHouse server (HTTP streams them as they are written)."""
        sql, params = self.parquet_sql()
        settings = {**PARQUET_SETTINGS, **SELECT_SETTINGS, **(self.settings or {})}
        stream = self.client.raw_stream(sql, parameters=params, settings=settings, fmt="Parquet")
        try:
            while True:
                chunk = stream.read(1 << 20)
                if not chunk:
                    break
                yield chunk
        finally:
            stream.close()
        self.finish()

    def finish(self) -> None:
        self.report.seconds = time.monotonic() - self._t0
        self.report.done = True


def is_embedded(client: Any) -> bool:
    inner = getattr(client, "_client", client)
    return str(getattr(inner, "uri", "")).startswith("chdb://")


def store_uri(client: Any) -> str:
    """The store a client reads (credentials never included)."""
    inner = getattr(client, "_client", client)
    uri = str(getattr(inner, "uri", ""))
    if uri.startswith("chdb://"):
        return uri
    return re.sub(r"//[^/@]*@", "//", uri)


@contextlib.contextmanager
def export_client(client: Any) -> Iterator[tuple[Any, dict[str, Any] | None]]:
    """A client to run a long export on without holding up the server's own queries.

    Embedded store: a second handle on the same engine (chDB serializes calls per handle,
    so a stream on the server's handle would stall the drain and the inspector). Server
    store: the same client, with a session of its own for the export's queries.
    """
    if is_embedded(client):
        import clickhouse_connect

        inner = getattr(client, "_client", client)
        dedicated = clickhouse_connect.get_client(dsn=inner.uri)
        try:
            yield dedicated, None
        finally:
            dedicated.close()
    else:
        yield client, {"session_id": f"prompttap-export-{uuid.uuid4().hex}"}


def file_suffix(fmt: str) -> str:
    return ".parquet" if fmt == "parquet" else ".jsonl"


def part_path(path: Path, part: str) -> Path:
    """``data.jsonl`` -> ``data.train.jsonl``."""
    suffix = "".join(path.suffixes[-1:]) or ""
    return path.with_name(path.name[: len(path.name) - len(suffix)] + f".{part}{suffix}")


# ------------------------------------------------------------------------------------ HTTP

router = APIRouter(prefix="/api", tags=["export"])
_REPORTS_KEPT = 100


def _reports(request: Request) -> OrderedDict[str, Report]:
    state = request.app.state
    if not hasattr(state, "export_reports"):
        state.export_reports = OrderedDict()
    return state.export_reports


@router.get("/export/info")
def export_info(request: Request) -> dict[str, Any]:
    """The store this inspector reads (so ``prompttap export`` can check it talks to the
    server that owns its store) and the export formats."""
    return {"store": store_uri(store(request)), "formats": list(FORMATS)}


@router.get("/export")
def export_get(
    request: Request,
    format: Annotated[str, Query(description=f"one of {', '.join(FORMATS)}")] = "openai-chat",
    since: Annotated[str | None, Query(description="ISO 8601 time or an age (24h, 7d)")] = None,
    until: Annotated[str | None, Query(description="ISO 8601 time or an age")] = None,
    route: str | None = None,
    model: str | None = None,
    api: str | None = None,
    status: int | None = None,
    outcome: Annotated[str | None, Query(description="outcome(s), comma separated, or 'any' (default ok)")] = None,
    template: str | None = None,
    thread: str | None = None,
    session: str | None = None,
    user: str | None = None,
    tag: str | None = None,
    min_output_tokens: int | None = None,
    ids: Annotated[list[str] | None, Query(description="capture ids (repeat or comma separate)")] = None,
    include_incomplete: bool = False,
    per_capture: bool = False,
    dedupe: bool = True,
    redact: bool = False,
    split: Annotated[float | None, Query(description="train share, with part=train|validation")] = None,
    part: str | None = None,
    dataset: Annotated[str | None, Query(description="langfuse: the dataset the item ids belong to")] = None,
) -> StreamingResponse:
    """Stream the selected conversations as a fine-tuning file (JSONL or Parquet).

    Headers: ``X-Prompttap-Export-Id`` (for ``/api/export/reports/{id}``),
    ``X-Prompttap-Export-Total`` (rows to format), ``-Captures``, ``-Conversations``,
    ``-Duplicates``. ``langfuse`` streams the dataset items as JSONL (the CLI pushes them).
    """
    params = {k: v for k, v in locals().items() if k != "request"}
    return _start(request, params)


@router.post("/export")
def export_post(request: Request, body: Annotated[dict[str, Any], Body()]) -> StreamingResponse:
    """The same as GET, with the parameters as a JSON object (for long id lists)."""
    return _start(request, body)


@router.get("/export/reports/{export_id}")
def export_report(request: Request, export_id: str) -> JSONResponse:
    """The report of an export started on this inspector (``done`` once its file ended)."""
    report = _reports(request).get(export_id)
    if report is None:
        raise HTTPException(404, f"no export {export_id}")
    return JSONResponse(report.as_dict())


def _start(request: Request, params: Mapping[str, Any]) -> StreamingResponse:
    try:
        sel, opts = parse_request(params)
    except ExportError as exc:
        raise HTTPException(400, str(exc)) from None
    base = store(request)
    export_id = uuid.uuid4().hex
    # The counts run before the response starts: their numbers go in the headers, and a
    # bad selection is a clean 4xx/5xx instead of a truncated download.
    with export_client(base) as (client, settings):
        job = Export(client, sel, opts, settings)
        try:
            counts = job.prepare()
        except Exception as exc:
            raise HTTPException(500, f"export failed: {exc}") from None
    reports = _reports(request)
    reports[export_id] = job.report
    while len(reports) > _REPORTS_KEPT:
        reports.popitem(last=False)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    name = f"prompttap-{opts.format}-{stamp}{'.' + opts.part if opts.part else ''}{file_suffix(opts.format)}"
    headers = {
        "Content-Disposition": f'attachment; filename="{name}"',
        "X-Prompttap-Export-Id": export_id,
        "X-Prompttap-Export-Total": str(job.total),
        "X-Prompttap-Export-Captures": str(counts.captures),
        "X-Prompttap-Export-Conversations": str(counts.conversations),
        "X-Prompttap-Export-Duplicates": str(counts.duplicates),
    }
    media = "application/vnd.apache.parquet" if opts.format == "parquet" else "application/x-ndjson"
    return StreamingResponse(_pipe(lambda: _produce(base, job)), media_type=media, headers=headers)


def _produce(base: Any, job: Export) -> Iterator[bytes]:
    """The file's bytes, produced in a worker thread (the ClickHouse client is synchronous)."""
    with export_client(base) as (client, settings):
        job.client, job.settings = client, settings
        try:
            if job.opts.format != "parquet":
                yield from job.lines()
            elif is_embedded(client):
                yield from _parquet_via_file(job)
            else:
                job.parquet_counts()
                yield from job.parquet_stream()
        except Exception as exc:
            job.report.error = first_line(exc)
            raise


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__


def _parquet_via_file(job: Export) -> Iterator[bytes]:
    # chDB materializes Parquet in memory when asked for bytes; INTO OUTFILE writes it
    # with ClickHouse's own writer in row groups, and the file is streamed from disk.
    job.parquet_counts()
    tmp = Path(tempfile.mkdtemp(prefix="prompttap-export-"))
    try:
        path = tmp / "export.parquet"
        job.parquet_to_file(path)
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_DONE = object()


async def _pipe(produce: Callable[[], Iterator[bytes]], depth: int = 8) -> AsyncIterator[bytes]:
    """Run a blocking byte producer in its own thread behind a bounded queue (memory
    stays flat; a slow reader slows the export down); stop it if the client goes away."""
    q: queue.Queue[Any] = queue.Queue(depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.25)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            gen = produce()
            try:
                for chunk in gen:
                    if not put(chunk):
                        return
            finally:
                gen.close()
            put(_DONE)
        except BaseException as exc:
            put(exc)

    worker = threading.Thread(target=run, name="prompttap-export", daemon=True)
    worker.start()
    try:
        while True:
            item = await asyncio.to_thread(_get, q, stop)
            if item is _DONE or item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def _get(q: queue.Queue[Any], stop: threading.Event) -> Any:
    while not stop.is_set():
        try:
            return q.get(timeout=0.25)
        except queue.Empty:
            continue
    return None


# ------------------------------------------------------------------------------------ pages

# The capture list's filters export understands (its full-text ``q`` is not one of them).
_LIST_PARAMS = ("route", "model", "status", "outcome", "api", "thread", "session", "template", "user", "tag")
_LIST_PARAMS += ("since", "until")


def export_filters(request: Request) -> dict[str, str]:
    """The capture list's filters that export understands, for the Export form."""
    query = {name: request.query_params[name] for name in _LIST_PARAMS if request.query_params.get(name)}
    if query.get("outcome") and query["outcome"] != "ok":
        query["include_incomplete"] = "true"  # asking for failures means wanting them
    return query


@router.post("/export/form", include_in_schema=False)
async def export_form(request: Request) -> StreamingResponse:
    """The inspector's Export button: a CSRF-checked form POST that streams the same file."""
    form = await request.form()
    params = {k: v for k, v in form.items() if k != "csrf_token" and isinstance(v, str)}
    return await run_in_threadpool(_start, request, params)


def export_url(request: Request | None = None, fmt: str = "openai-chat", **params: Any) -> str:
    """The Export link for a filtered capture list: ``/api/export`` with the list's own
    filters (limit/offset dropped). Templates call it as ``export_url(request)``."""
    query: dict[str, Any] = {"format": fmt}
    if request is not None:
        for name in _LIST_PARAMS:
            value = request.query_params.get(name)
            if value:
                query[name] = value
    query.update({k: v for k, v in params.items() if v not in (None, "")})
    if query.get("outcome") and query["outcome"] != "ok":
        query.setdefault("include_incomplete", "true")  # asking for failures means wanting them
    return "/api/export?" + urlencode(query)


templates.env.globals["export_url"] = export_url
templates.env.globals["export_filters"] = export_filters
templates.env.globals["export_formats"] = FORMATS
