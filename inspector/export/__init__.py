"""Export captured conversations as fine-tuning data (issue #6).

One engine serves ``prompttap export`` (which reads the store itself when no server owns
it) and ``POST /api/export`` (the inspector streaming the same file):

- Selection, in ClickHouse, with bound parameters (``select``): the filters, then one
  capture per thread, then identical prompt+answer pairs collapsed, then the
  train/validation part; rows stream in ClickHouse blocks, in table order. ``request``
  turns the CLI's and the API's parameters into that selection and the options.
- Formatting (``formats``, ``langfuse``), validation (``validate``) and redaction
  (``redact``) in Python for the JSONL formats (``openai-chat``, ``anthropic``,
  ``sharegpt``, ``langfuse`` items); a line that breaks its format's rules is skipped and
  counted with the reason. ``engine`` runs an export and keeps its report.
- ``parquet`` is written by ClickHouse itself (``FORMAT Parquet``; redaction in SQL with
  the same patterns), one row per conversation with the normalized columns.

Over HTTP (``routes``) a split is one request per part (``split=0.9, part=train``); the CLI
makes both. The final report of an HTTP export is kept for ``GET /api/export/reports/{id}``.

This package re-exports the public names of those modules; ``router`` is what the
inspector app includes.
"""

from __future__ import annotations

from prompttap.inspector.export.engine import (
    Export,
    Report,
    export_client,
    file_suffix,
    first_line,
    is_embedded,
    part_path,
    store_uri,
)
from prompttap.inspector.export.formats import Formatter, answer_message
from prompttap.inspector.export.parquet import PARQUET_SETTINGS
from prompttap.inspector.export.redact import (
    REDACTION_KINDS,
    REDACTIONS,
    Redactor,
    protect_json,
    redaction_counts,
    unprotect_json,
)
from prompttap.inspector.export.request import FORMATS, JSONL_FORMATS, PARTS, ExportError, parse_request, parse_when
from prompttap.inspector.export.routes import export_filters, router
from prompttap.inspector.export.select import (
    BLOCK_ROWS,
    CUT_FINISH_REASONS,
    DEDUPE_KEY,
    ROW_COLUMNS,
    SELECT_SETTINGS,
    SPLIT_BUCKETS,
    THREAD_KEY,
    Counts,
    Options,
    Selection,
    count,
    selection_sql,
    stream_rows,
)
from prompttap.inspector.export.validate import VALIDATORS, validate_anthropic, validate_openai_chat, validate_sharegpt

__all__ = [
    "BLOCK_ROWS",
    "CUT_FINISH_REASONS",
    "DEDUPE_KEY",
    "FORMATS",
    "JSONL_FORMATS",
    "PARQUET_SETTINGS",
    "PARTS",
    "REDACTIONS",
    "REDACTION_KINDS",
    "ROW_COLUMNS",
    "SELECT_SETTINGS",
    "SPLIT_BUCKETS",
    "THREAD_KEY",
    "VALIDATORS",
    "Counts",
    "Export",
    "ExportError",
    "Formatter",
    "Options",
    "Redactor",
    "Report",
    "Selection",
    "answer_message",
    "count",
    "export_client",
    "export_filters",
    "file_suffix",
    "first_line",
    "is_embedded",
    "parse_request",
    "parse_when",
    "part_path",
    "protect_json",
    "redaction_counts",
    "router",
    "selection_sql",
    "store_uri",
    "stream_rows",
    "unprotect_json",
    "validate_anthropic",
    "validate_openai_chat",
    "validate_sharegpt",
]
