"""Parquet export: written by ClickHouse itself (``FORMAT Parquet``), one row per
conversation with the normalized columns; redaction is done in SQL with the same patterns
as the JSONL formats (``inspector.export.redact``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prompttap.inspector.export.redact import sql_params, sql_redact, sql_redact_json
from prompttap.inspector.export.select import SELECT_SETTINGS, THREAD_KEY, Options, Selection, selection_sql
from prompttap.schemas.store import file_literal

# Small blocks and row groups, and no bloom filters: ClickHouse keeps those for the whole
# file until its end (memory grows with the row count) and a training set has no use for them.
PARQUET_SETTINGS = {
    "output_format_parquet_row_group_size": 10_000,
    "output_format_parquet_string_as_string": 1,
    "output_format_parquet_write_bloom_filter": 0,
    "max_block_size": 8192,  # default 65k rows of wide nested columns: hundreds of MB per block
}


def parquet_sql(sel: Selection, opts: Options) -> tuple[str, dict[str, Any]]:
    """The query for the parquet file's rows, with its bound parameters."""
    redact = opts.redact

    def text(expr: str) -> str:
        return sql_redact(expr) if redact else expr

    def args(expr: str) -> str:
        return sql_redact_json(expr) if redact else expr

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
    sql, params = selection_sql(sel, opts, ", ".join(f"{e} AS {n}" for n, e in columns))
    if redact:
        params.update(sql_params("r"))
    return sql, params


def write_file(client: Any, sel: Selection, opts: Options, path: Path) -> None:
    """Write the parquet file with the embedded engine's INTO OUTFILE (chDB only)."""
    sql, params = parquet_sql(sel, opts)
    target = file_literal(path.resolve())
    settings = ", ".join(f"{k} = {v}" for k, v in {**PARQUET_SETTINGS, **SELECT_SETTINGS}.items())
    client.command(f"{sql} SETTINGS {settings} INTO OUTFILE {target} TRUNCATE FORMAT Parquet", parameters=params)


def stream(client: Any, sel: Selection, opts: Options, settings: dict[str, Any] | None = None) -> Iterator[bytes]:
    """Parquet bytes from a ClickHouse server (HTTP streams them as they are written)."""
    sql, params = parquet_sql(sel, opts)
    settings = {**PARQUET_SETTINGS, **SELECT_SETTINGS, **(settings or {})}
    response = client.raw_stream(sql, parameters=params, settings=settings, fmt="Parquet")
    try:
        while True:
            chunk = response.read(1 << 20)
            if not chunk:
                break
            yield chunk
    finally:
        response.close()
