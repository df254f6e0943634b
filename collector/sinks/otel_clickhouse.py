"""ClickHouse sink: one OpenTelemetry span per capture into ``otel_traces``.

The table is the OTel Collector clickhouseexporter's (migration 0002), so Grafana's ClickHouse
data source and its trace views read prompttap's captures as ordinary traces. It is a
ReplacingMergeTree whose sorting key ends in (TraceId, SpanId): a replayed batch collapses
to one row per span at merge time. Payloads are JSONEachRow rows from ``schemas.spans.otel_json``,
encoded by the ``otel_traces`` encoder (``collector.sinks.encoders``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from collector.sinks.base import Rejected
from collector.sinks.clickhouse import DATA_ERRORS
from collector.sinks.encoders import ENCODERS


class OtelTracesSink:
    kind = "otel_traces"

    def __init__(
        self, client: Any, table: str = "otel_traces", service_name: str = "prompttap", name: str = "otel_traces"
    ) -> None:
        self.client = client
        self.table = table
        self.name = name
        self.options: dict[str, Any] = {"service_name": service_name}

    def send(self, payload: bytes, rows: int) -> None:
        if not rows:
            return
        try:
            self.client.raw_insert(self.table, insert_block=payload, fmt="JSONEachRow")
        except Exception as exc:
            if any(code in str(exc) for code in DATA_ERRORS):
                raise Rejected(str(exc)[:500]) from exc
            raise

    def export(self, rows: Sequence[dict[str, Any]]) -> None:
        """Encode and send in this process: for tools and tests, not the drain."""
        try:
            payload = ENCODERS[self.kind](list(rows), **self.options)
        except Exception as exc:  # a mapping bug isolates that capture, not the whole stream
            raise Rejected(f"cannot map to a span: {exc!r}"[:500]) from exc
        self.send(payload, len(rows))

    def close(self) -> None:
        pass
