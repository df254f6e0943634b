"""ClickHouse sink: one OpenTelemetry span per capture into ``otel_traces``.

The table is the OTel Collector clickhouseexporter's (migration 0002), so Grafana's ClickHouse
data source and its trace views read prompttap's captures as ordinary traces. It is a
ReplacingMergeTree whose sorting key ends in (TraceId, SpanId): a replayed batch collapses
to one row per span at merge time. Payloads are JSONEachRow rows from ``schemas.spans.otel_json``,
encoded by the ``otel_traces`` encoder (``collector.sinks.encoders``).

A secondary sink: ``otel_traces`` is a copy of what ``captures`` holds, in another shape, for other
tools (the inspector reads only ``captures``). It shares the store's fate when the store is down
(then ``captures`` holds the spool anyway); when only it fails (its table broken, a mapping bug),
its backlog must give way rather than cost the system of record a capture.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prompttap.collector.sinks.base import Rejected
from prompttap.collector.sinks.clickhouse import ClickHouseSink


class OtelTracesSink(ClickHouseSink):
    """``ClickHouseSink`` for ``otel_traces``: the ``otel_traces`` encoder, with a service name."""

    def __init__(
        self, client: Any, table: str = "otel_traces", service_name: str = "prompttap", name: str = "otel_traces"
    ) -> None:
        super().__init__(client, table=table, kind="otel_traces", name=name, primary=False)
        self.options = {"service_name": service_name}

    def encode(self, rows: Sequence[dict[str, Any]]) -> bytes:
        try:
            return super().encode(rows)
        except Exception as exc:  # a mapping bug isolates that capture, not the whole stream
            raise Rejected(f"cannot map to a span: {exc!r}"[:500]) from exc
