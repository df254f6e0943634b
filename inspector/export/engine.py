"""One export run (``Export``) and what it did (``Report``), shared by ``prompttap export``
and ``/api/export``; and the store-client helpers both use.

For the JSONL formats the rows are formatted, validated and (optionally) redacted in
Python; a line that breaks its format's rules is skipped and counted with the reason.
``parquet`` is written by ClickHouse (``inspector.export.parquet``).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from prompttap.inspector.export import parquet
from prompttap.inspector.export.formats import Formatter
from prompttap.inspector.export.redact import Redactor, redaction_counts
from prompttap.inspector.export.request import PARTS
from prompttap.inspector.export.select import Counts, Options, Selection, count, stream_rows
from prompttap.inspector.export.validate import VALIDATORS
from prompttap.schemas.credentials import strip_userinfo


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
        if self.opts.split is not None:  # each side this run writes is named, 0 if no thread landed on it
            for part in (self.opts.part,) if self.opts.part else PARTS:
                self.report.split.setdefault(part, 0)
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

    def parquet_counts(self) -> None:
        """The report's numbers for a parquet file (ClickHouse writes every selected row)."""
        if self.opts.redact:
            self.report.redactions = redaction_counts(self.client, self.sel, self.opts, self.settings)
        self.report.exported = self.total
        if self.opts.part:
            self.report.split[self.opts.part] = self.total

    def parquet_to_file(self, path: Path) -> None:
        """Write the parquet file with the embedded engine's INTO OUTFILE (chDB only)."""
        parquet.write_file(self.client, self.sel, self.opts, path)
        self.finish()

    def parquet_stream(self) -> Iterator[bytes]:
        """Parquet bytes from a ClickHouse server (HTTP streams them as they are written)."""
        yield from parquet.stream(self.client, self.sel, self.opts, self.settings)
        self.finish()

    def finish(self) -> None:
        self.report.seconds = time.monotonic() - self._t0
        self.report.done = True


# ------------------------------------------------------------------------------------ helpers


def is_embedded(client: Any) -> bool:
    inner = getattr(client, "_client", client)
    return str(getattr(inner, "uri", "")).startswith("chdb://")


def store_uri(client: Any) -> str:
    """The store a client reads (credentials never included)."""
    inner = getattr(client, "_client", client)
    uri = str(getattr(inner, "uri", ""))
    return strip_userinfo(uri)


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


def first_line(exc: BaseException) -> str:
    """An error as the report's one line: its first line (500 characters at most), or its type."""
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__
