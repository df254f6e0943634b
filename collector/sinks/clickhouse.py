"""ClickHouse sink: capture rows into the ``captures`` table.

Inserts are idempotent by capture id: the table is a ReplacingMergeTree keyed on
(started_at, id), so a batch replayed after a crash collapses to one row per capture.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from collector.enrich import to_db_row
from collector.recorder import Rejected
from schemas.capture import COLUMN_NAMES

# ClickHouse error codes that mean "this data is wrong", not "try again later".
_DATA_ERRORS = (
    "CANNOT_PARSE",
    "TYPE_MISMATCH",
    "ILLEGAL_TYPE",
    "TOO_LARGE",
    "INCORRECT_DATA",
    "VALUE_IS_OUT_OF_RANGE",
)


class ClickHouseSink:
    name = "clickhouse"

    def __init__(self, client: Any, table: str = "captures") -> None:
        self.client = client
        self.table = table

    def export(self, records: Sequence[dict[str, Any]]) -> None:
        try:
            rows = [to_db_row(r) for r in records]
        except (TypeError, ValueError, OverflowError) as exc:
            raise Rejected(f"cannot convert to a row: {exc}") from exc
        try:
            self.client.insert(self.table, rows, column_names=list(COLUMN_NAMES))
        except Exception as exc:
            if any(code in str(exc) for code in _DATA_ERRORS) or isinstance(exc, TypeError | ValueError):
                raise Rejected(str(exc)[:500]) from exc
            raise

    def close(self) -> None:
        pass
