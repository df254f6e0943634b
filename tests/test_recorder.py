"""The drain into the embedded ClickHouse, through the real spool, encoder process and SinkWorker.

The records of a batch never enter the proxy's process on this path: the encoder reads them from
the spool's files by a ``ReadPlan`` and leaves the payload in a file that the embedded engine
inserts (``INSERT ... FROM INFILE``). Only a batch ClickHouse refuses is read in-process, to bisect it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from prompttap.collector.encoder import Encoder
from prompttap.collector.recorder import Recorder, SinkWorker
from prompttap.collector.sinks.clickhouse import ClickHouseSink
from prompttap.collector.sinks.otel_clickhouse import OtelTracesSink
from prompttap.collector.sinks.otlp import OtlpSink
from prompttap.collector.spool import Spool
from prompttap.schemas.capture import Capture
from tests.test_spans import capture, chat_body


@pytest.fixture(scope="module")
def encoder() -> Iterator[Encoder]:
    enc = Encoder()
    enc.start()
    yield enc
    enc.close()


def spooled(spool: Spool, n: int, **fields: Any) -> list[Capture]:
    captures = [capture(body=chat_body(), **fields) for _ in range(n)]
    for c in captures:
        spool.append(orjson.dumps(c.to_record()))
    return captures


def count(client: Any, table: str, column: str, ids: list[str]) -> int:
    q = f"SELECT count() FROM {table} FINAL WHERE {column} IN {{ids:Array(String)}}"
    return client.query(q, parameters={"ids": ids}).result_rows[0][0]


def test_both_store_sinks_insert_from_the_encoders_payload_file(
    memory_store: Any, encoder: Encoder, tmp_path: Path
) -> None:
    # a quote in the path: the INFILE literal must be escaped, not broken
    payloads = tmp_path / "it's payloads"
    payloads.mkdir()
    spool = Spool(tmp_path / "spool", ["clickhouse", "otel_traces"])
    captures = spooled(spool, 25, user_id="file")
    workers = [
        SinkWorker(sink, spool, encoder, tmp_path / "rejected", payload_dir=payloads)
        for sink in (ClickHouseSink(memory_store), OtelTracesSink(memory_store))
    ]
    try:
        for w in workers:
            assert w.payload_file is not None and w.payload_file.parent == payloads
            assert w.drain_once()
            assert not w.drain_once()  # nothing left: no empty insert, no encoder round trip
            assert w.exported == 25 and spool.pending(w.sink.name) == (0, 0)
    finally:
        spool.close()
    assert count(memory_store, "captures", "toString(id)", [str(c.id) for c in captures]) == 25
    assert count(memory_store, "otel_traces", "SpanId", [c.span_id for c in captures]) == 25
    assert list(payloads.iterdir()) == []  # each payload file goes once the engine has read it


def test_a_row_clickhouse_refuses_is_set_aside_and_the_rest_inserted(
    memory_store: Any, encoder: Encoder, tmp_path: Path
) -> None:
    memory_store.command("CREATE TABLE IF NOT EXISTS captures_strict AS captures")
    memory_store.command("ALTER TABLE captures_strict ADD CONSTRAINT IF NOT EXISTS no_poison CHECK user_id != 'poison'")
    spool = Spool(tmp_path / "spool", ["strict"])
    captures = [*spooled(spool, 3, user_id="ok"), *spooled(spool, 1, user_id="poison"), *spooled(spool, 4)]
    worker = SinkWorker(
        ClickHouseSink(memory_store, table="captures_strict", name="strict"),
        spool,
        encoder,
        tmp_path / "rejected",
        payload_dir=tmp_path,
    )
    try:
        assert worker.drain_once()
        assert spool.pending("strict")[0] == 0
    finally:
        spool.close()
    assert worker.rejected == 1 and worker.exported == 7
    good = [str(c.id) for c in captures if c.user_id != "poison"]
    assert count(memory_store, "captures_strict", "toString(id)", good) == 7
    [dead] = list((tmp_path / "rejected").iterdir())
    kept = json.loads(dead.read_text())
    assert json.loads(kept["record"])["user_id"] == "poison"
    assert "VIOLATED_CONSTRAINT" in kept["reason"]


def test_a_store_that_is_down_keeps_the_batch_for_a_retry(memory_store: Any, encoder: Encoder, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", ["missing"])
    captures = spooled(spool, 5)
    missing = ClickHouseSink(memory_store, table="no_such_table", name="missing")
    worker = SinkWorker(missing, spool, encoder, tmp_path, payload_dir=tmp_path)
    try:
        assert not worker.drain_once()
        assert worker.failing_since and "no_such_table" in worker.last_error
        assert spool.pending("missing")[0] == 5  # not acked, not rejected
        worker.sink = ClickHouseSink(memory_store, name="missing")  # "the memory_store is back"
        assert worker.drain_once() and spool.pending("missing")[0] == 0
    finally:
        spool.close()
    assert worker.rejected == 0 and not worker.failing_since
    assert count(memory_store, "captures", "toString(id)", [str(c.id) for c in captures]) == 5


def test_a_payload_file_that_cannot_be_written_is_retried_not_rejected(
    memory_store: Any, encoder: Encoder, tmp_path: Path
) -> None:
    """Disk trouble on the payload's way is no fault of the records: nothing is set aside."""
    blocked = tmp_path / "payloads"
    blocked.write_text("a file where the payload directory should be")
    spool = Spool(tmp_path / "spool", ["clickhouse"])
    captures = spooled(spool, 4)
    worker = SinkWorker(ClickHouseSink(memory_store), spool, encoder, tmp_path / "rejected", payload_dir=blocked)
    try:
        assert not worker.drain_once()
        assert "NotADirectoryError" in worker.last_error and worker.failing_since
        assert worker.rejected == 0 and spool.pending("clickhouse")[0] == 4
        assert count(memory_store, "captures", "toString(id)", [str(c.id) for c in captures]) == 0
        blocked.unlink()
        blocked.mkdir()  # the disk is fine again
        assert worker.drain_once() and spool.pending("clickhouse")[0] == 0
    finally:
        spool.close()
    assert not (tmp_path / "rejected").exists()
    assert count(memory_store, "captures", "toString(id)", [str(c.id) for c in captures]) == 4


def test_a_full_spool_makes_a_lagging_secondary_sink_give_way_never_the_store(
    memory_store: Any, encoder: Encoder, tmp_path: Path
) -> None:
    """An append that finds the spool full lets lagging secondary sinks give up their oldest backlog and
    tries again; the store's own backlog never gives way, so a store that is down still means drops."""
    spool = Spool(tmp_path / "spool", ["clickhouse", "otlp"], max_bytes=60_000)
    lagging = OtlpSink("otlp", "http://127.0.0.1:9/v1/traces", {})  # never drained here: it only lags
    recorder = Recorder(spool, [ClickHouseSink(memory_store), lagging], encoder, tmp_path / "rejected")
    store, otlp = recorder.workers
    try:
        first = []
        while not recorder.dropped:  # the store takes nothing yet: the spool fills up
            first.append(capture(body=chat_body(), user_id="first"))
            recorder.record(first[-1])
        assert recorder.dropped == {"disk_full": 1}
        assert spool.pending("otlp")[0] == len(first) - 1  # nothing given up: the store passed nothing yet
        assert store.drain_once() and spool.pending("clickhouse")[0] == 0
        more = [capture(body=chat_body(), user_id="more") for _ in range(2 * len(first))]
        for c in more:
            recorder.record(c)
            store.drain_once()
        assert recorder.dropped == {"disk_full": 1}  # no capture lost to the lagging sink
        assert otlp.given_up > 0 and store.given_up == 0
        assert otlp.given_up + spool.pending("otlp")[0] == recorder.recorded == len(first) - 1 + len(more)
        assert spool.stats()["bytes"] <= 60_000
    finally:
        spool.close()
    stored = [str(c.id) for c in [*first[:-1], *more]]
    assert count(memory_store, "captures", "toString(id)", stored) == len(stored)
