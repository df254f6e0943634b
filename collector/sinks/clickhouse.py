"""ClickHouse sink: capture rows into the ``captures`` table.

Payloads are JSONEachRow, encoded in the encoder process; ClickHouse parses them in
C++ without holding Python's GIL. Inserts are idempotent by capture id: the table is a
ReplacingMergeTree keyed on (started_at, id), so a batch replayed after a crash
collapses to one row per capture.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prompttap.collector.sinks.base import Rejected
from prompttap.collector.sinks.encoders import ENCODERS
from prompttap.schemas.store import file_literal

# ClickHouse error names that mean "this data is wrong", not "try again later".
DATA_ERRORS = (
    "CANNOT_PARSE",
    "TYPE_MISMATCH",
    "ILLEGAL_TYPE",
    "INCORRECT_DATA",
    "VALUE_IS_OUT_OF_RANGE",
    "TOO_LARGE",
    "UNKNOWN_ELEMENT_OF_ENUM",
    "VIOLATED_CONSTRAINT",
)


class ClickHouseSink:
    """Inserts JSONEachRow payloads into one ClickHouse table.

    ``table`` is where they go, ``kind`` the encoder that makes them
    (``collector.sinks.encoders``), ``name`` the spool consumer (one cursor per sink).
    A ClickHouse error about the data itself raises ``Rejected``; any other error is raised
    as is, so the batch is retried. The ``captures`` sink is the primary one: the system of record.
    """

    def __init__(
        self,
        client: Any,
        table: str = "captures",
        kind: str = "captures",
        name: str = "clickhouse",
        primary: bool = True,
    ) -> None:
        self.client = client
        self.table = table
        self.kind = kind
        self.name = name
        self.primary = primary
        self.options: dict[str, Any] = {}
        self.in_engine = bool(getattr(client, "embedded", False))

    def send(self, payload: bytes, rows: int) -> None:
        if rows:
            self._insert(lambda: self.client.raw_insert(self.table, insert_block=payload, fmt="JSONEachRow"))

    def send_file(self, path: Path, rows: int) -> None:
        """Insert a payload from a file: the embedded engine reads and parses it, GIL released."""
        sql = f"INSERT INTO {self.table} FROM INFILE {file_literal(path)} FORMAT JSONEachRow"
        if rows:
            self._insert(lambda: self.client.command(sql))

    def _insert(self, insert: Callable[[], Any]) -> None:
        try:
            insert()
        except Exception as exc:
            if any(code in str(exc) for code in DATA_ERRORS):
                raise Rejected(str(exc)[:500]) from exc
            raise

    def export(self, rows: Sequence[dict[str, Any]]) -> None:
        """Encode and send in this process: for tools and tests, not the drain."""
        self.send(self.encode(rows), len(rows))

    def encode(self, rows: Sequence[dict[str, Any]]) -> bytes:
        """The payload for ``rows``, made in this process (the drain encodes in the encoder process)."""
        return ENCODERS[self.kind](list(rows), **self.options)

    def close(self) -> None:
        pass
