"""The span sinks: OtlpSink against a real OTLP receiver (faults included), sinks_from_env,
and OtelTracesSink into the embedded store's ``otel_traces``."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from prompttap.collector.encoder import Encoder
from prompttap.collector.recorder import Rejected, SinkWorker
from prompttap.collector.sinks.encoders import ENCODERS
from prompttap.collector.sinks.otel_clickhouse import OtelTracesSink
from prompttap.collector.sinks.otlp import (
    OtlpAuthError,
    OtlpError,
    OtlpSink,
    parse_headers,
    sinks_from_env,
)
from prompttap.collector.spool import Spool
from prompttap.schemas.capture import Capture
from prompttap.schemas.spans import span_of
from tests.otlp_receiver import LANGFUSE_PATH, OtlpReceiver
from tests.test_spans import ANTHROPIC, anthropic_body, capture, capture_row, chat_body

SECRET_KEY = "sk-lf-very-secret"


@pytest.fixture
def rx() -> Iterator[OtlpReceiver]:
    with OtlpReceiver(public_key="pk-lf-1", secret_key=SECRET_KEY) as receiver:
        yield receiver


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    """Five realistic rows: OpenAI chat and stream, Anthropic stream, an error, an embedding."""
    return [
        capture_row(body=chat_body(), user_id="alice"),
        capture_row(body=chat_body(stream=True, stream_options={"include_usage": True})),
        capture_row("/v1/messages", anthropic_body(stream=True), upstream=ANTHROPIC, session_id="s1"),
        capture_row("/v1/messages", anthropic_body(), upstream=ANTHROPIC, status=529),
        capture_row("/v1/embeddings", {"model": "text-embedding-3-small", "input": "hello"}),
    ]


@pytest.fixture(scope="module")
def encoder() -> Iterator[Encoder]:
    enc = Encoder()
    enc.start()
    yield enc
    enc.close()


def spooled(tmp_path: Path, n: int, poison: int | None = None) -> tuple[Spool, list[Capture]]:
    """A spool for the "otlp" sink holding ``n`` captures; the one at ``poison`` has user.id "poison"."""
    spool = Spool(tmp_path / "spool", ["otlp"])
    captures = [capture(body=chat_body(), user_id="poison" if i == poison else f"u{i}") for i in range(n)]
    for c in captures:
        spool.append(orjson.dumps(c.to_record()))
    return spool, captures


def otlp(rx: OtlpReceiver, timeout: float = 5.0) -> OtlpSink:
    return OtlpSink("otlp", rx.otlp_endpoint, {}, timeout=timeout)


def langfuse(rx: OtlpReceiver, secret: str = SECRET_KEY) -> OtlpSink:
    [sink] = sinks_from_env(
        {"LANGFUSE_PUBLIC_KEY": rx.public_key, "LANGFUSE_SECRET_KEY": secret, "LANGFUSE_BASE_URL": rx.base_url}
    )
    return sink


# --------------------------------------------------------------------------- delivery


def test_delivers_one_span_per_capture_with_the_capture_ids(rx: OtlpReceiver, rows: list[dict[str, Any]]) -> None:
    sink = otlp(rx)
    sink.export(rows)
    sink.close()
    got = rx.latest()
    assert set(got) == {r["span_id"] for r in rows}
    for row in rows:
        span, expected = got[row["span_id"]], span_of(row)
        assert span["trace_id"] == row["trace_id"]
        assert span["name"] == expected.name
        assert span["kind"] == "SPAN_KIND_CLIENT"
        assert (span["start_ns"], span["end_ns"]) == (expected.start_ns, expected.end_ns)
        assert span["attributes"] == expected.attributes  # every value survives protobuf as typed
        assert span["resource"] == {"service.name": "prompttap"}
        assert span["scope"]["name"] == "prompttap"
    assert got[rows[3]["span_id"]]["status"] == {"code": "STATUS_CODE_ERROR", "message": "fake upstream error 529"}
    [export] = rx.exports
    assert export.gzip and export.headers["content-type"] == "application/x-protobuf"


def test_a_replay_is_the_same_span(rx: OtlpReceiver, rows: list[dict[str, Any]]) -> None:
    sink = otlp(rx)
    sink.export(rows[:3])
    sink.export(rows[:3])  # the recorder re-sends after a crash between delivery and ack
    assert len(rx.latest()) == 3
    assert set(rx.deliveries.values()) == {2}
    first, second = rx.spans[:3], rx.spans[3:]
    assert first == second


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 404])
def test_unavailable_receiver_raises_for_a_retry_and_delivers_later(
    rx: OtlpReceiver, rows: list[dict[str, Any]], status: int
) -> None:
    sink = otlp(rx)
    rx.fault(status, retry_after="3")
    with pytest.raises(OtlpError) as info:
        sink.export(rows[:2])
    assert not isinstance(info.value, Rejected | OtlpAuthError)
    assert f"HTTP {status}" in str(info.value) and "retry-after 3" in str(info.value)
    assert rx.spans == []
    rx.clear()
    sink.export(rows[:2])
    assert len(rx.latest()) == 2


def test_a_flapping_receiver_delivers_each_span_once_it_recovers(rx: OtlpReceiver, rows: list[dict[str, Any]]) -> None:
    sink = otlp(rx)
    rx.fault(503, times=2, retry_after="1")
    attempts = 0
    while True:  # what the recorder does, minus its backoff
        attempts += 1
        try:
            sink.export(rows)
            break
        except OtlpError:
            assert attempts < 5
    assert attempts == 3
    assert set(rx.deliveries.values()) == {1} and len(rx.deliveries) == len(rows)


def test_refused_connection_raises_then_delivers_when_back(rx: OtlpReceiver, rows: list[dict[str, Any]]) -> None:
    sink = otlp(rx)
    rx.down()
    with pytest.raises(OtlpError, match="unreachable"):
        sink.export(rows[:1])
    rx.up()
    sink.export(rows[:1])
    assert rx.deliveries[rows[0]["span_id"]] == 1


def test_a_hanging_receiver_times_out(rx: OtlpReceiver, rows: list[dict[str, Any]]) -> None:
    sink = otlp(rx, timeout=0.5)
    rx.fault(hang=True)
    started = time.monotonic()
    with pytest.raises(OtlpError, match="Timeout"):
        sink.export(rows[:1])
    assert time.monotonic() - started < 3
    rx.clear()


def test_413_is_a_refusal_the_recorder_splits(rx: OtlpReceiver, tmp_path: Path, encoder: Encoder) -> None:
    rx.fault(max_spans=2)
    spool, captures = spooled(tmp_path, 5)
    worker = SinkWorker(otlp(rx), spool, encoder, tmp_path / "rejected")
    try:
        assert worker.drain_once() and spool.pending("otlp")[0] == 0
    finally:
        spool.close()
    assert set(rx.deliveries) == {c.span_id for c in captures} and set(rx.deliveries.values()) == {1}
    assert [e.status for e in rx.exports].count(413) >= 1
    assert all(len(e.span_ids) <= 2 for e in rx.exports if e.status == 200)
    assert worker.rejected == 0


def test_413_for_a_single_span_is_a_rejection(rx: OtlpReceiver, rows: list[dict[str, Any]]) -> None:
    rx.fault(max_spans=0)
    with pytest.raises(Rejected, match="413"):
        otlp(rx).export(rows[:1])


def test_400_poison_span_is_isolated_by_the_recorder(rx: OtlpReceiver, tmp_path: Path, encoder: Encoder) -> None:
    """Through the real spool, encoder process and SinkWorker: only the poison capture is set aside."""
    spool, captures = spooled(tmp_path, 6, poison=3)
    rx.fault(poison=("user.id", "poison"))
    worker = SinkWorker(otlp(rx), spool, encoder, tmp_path / "rejected")
    try:
        assert worker.drain_once()
        assert spool.pending("otlp")[0] == 0
    finally:
        spool.close()
    assert worker.rejected == 1
    assert {s["attributes"]["user.id"] for s in rx.latest().values()} == {"u0", "u1", "u2", "u4", "u5"}
    [dead] = list((tmp_path / "rejected").iterdir())
    kept = json.loads(dead.read_text())
    assert json.loads(kept["record"])["id"] == str(captures[3].id)
    assert "HTTP 400" in kept["reason"] and "poison" in kept["reason"]


# A batch split in halves (400: find the poison capture; 413: too many spans) and a transient 503 at
# request n: (fault, requests the first pass makes). Every n: the retry must resend no part already
# delivered and set aside no capture twice (receivers such as Jaeger, Tempo or Phoenix keep duplicates).
SPLITS = {"poison": ({"poison": ("user.id", "poison")}, 5), "too_large": ({"max_spans": 2}, 7)}


@pytest.mark.parametrize(("split", "fail_at"), [(k, n) for k, (_, last) in SPLITS.items() for n in range(1, last + 1)])
def test_a_split_batch_sends_each_span_once_when_a_later_part_fails(
    rx: OtlpReceiver, tmp_path: Path, encoder: Encoder, split: str, fail_at: int
) -> None:
    faults, _ = SPLITS[split]
    spool, captures = spooled(tmp_path, 6, poison=3 if split == "poison" else None)
    rx.fault(**faults, at={fail_at: 503})
    worker = SinkWorker(otlp(rx), spool, encoder, tmp_path / "rejected")
    try:
        for _ in range(5):  # what the worker's loop does, minus its backoff
            if worker.drain_once() and not spool.pending("otlp")[0]:
                break
        assert spool.pending("otlp")[0] == 0
    finally:
        spool.close()
    assert [e.status for e in rx.exports].count(503) == 1  # the transient failure did happen
    expected = {c.span_id for i, c in enumerate(captures) if not (split == "poison" and i == 3)}
    assert set(rx.deliveries) == expected
    assert dict(rx.deliveries) == dict.fromkeys(expected, 1)  # exactly once
    assert worker.rejected == (split == "poison")
    assert len(list((tmp_path / "rejected").glob("*.json"))) == (split == "poison")


def test_send_takes_the_encoders_payload(rx: OtlpReceiver, rows: list[dict[str, Any]]) -> None:
    """The drain's path: the otlp encoder (another process) builds the bytes, send posts them."""
    sink = otlp(rx)
    sink.send(ENCODERS[sink.kind](rows, **sink.options), len(rows))
    assert set(rx.latest()) == {r["span_id"] for r in rows}
    sink.send(b"", 0)  # an empty batch is no request
    assert len(rx.exports) == 1


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failures_are_held_with_a_clear_message(rx: OtlpReceiver, rows: list[dict[str, Any]], status: int) -> None:
    rx.fault(status)
    with pytest.raises(OtlpAuthError) as info:
        otlp(rx).export(rows[:1])
    assert str(info.value).startswith(f"authentication failed for {rx.otlp_endpoint} (HTTP {status})")
    assert not isinstance(info.value, Rejected)


@pytest.mark.parametrize(("status", "state"), [(401, "misconfigured"), (403, "misconfigured"), (503, "failing")])
def test_a_refused_key_marks_the_sink_misconfigured_at_once_until_it_works(
    rx: OtlpReceiver, tmp_path: Path, encoder: Encoder, caplog: pytest.LogCaptureFixture, status: int, state: str
) -> None:
    spool, captures = spooled(tmp_path, 3)
    rx.fault(status)
    worker = SinkWorker(otlp(rx), spool, encoder, tmp_path / "rejected")
    try:
        with caplog.at_level(logging.WARNING, logger="prompttap.recorder"):
            assert not worker.drain_once()
            assert worker.status == state and worker.stats()["misconfigured"] == (state == "misconfigured")
            assert not worker.drain_once()
        loud = [r for r in caplog.records if r.levelno >= logging.ERROR and "MISCONFIGURED" in r.message]
        assert len(loud) == (state == "misconfigured")  # once, not once per retry
        assert spool.pending("otlp")[0] == 3  # held for when it works, not dropped
        rx.clear()
        assert worker.drain_once() and worker.status == "ok" and not worker.stats()["misconfigured"]
    finally:
        spool.close()
    assert set(rx.deliveries) == {c.span_id for c in captures}


def test_wrong_langfuse_secret_is_an_auth_error_that_never_shows_the_secret(
    rx: OtlpReceiver, rows: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    bad = langfuse(rx, secret="sk-lf-WRONG-secret")
    with pytest.raises(OtlpAuthError) as info:
        bad.export(rows[:1])
    message = str(info.value)
    assert message.startswith(f"authentication failed for {rx.base_url}{LANGFUSE_PATH}")
    assert "WRONG" not in message + repr(bad) + caplog.text
    good = langfuse(rx)
    good.export(rows[:1])  # fixed configuration: the held capture goes through
    assert rx.deliveries[rows[0]["span_id"]] == 1


def test_redirect_is_not_success(rx: OtlpReceiver, rows: list[dict[str, Any]]) -> None:
    rx.fault(302)
    with pytest.raises(OtlpError, match="redirected"):
        otlp(rx).export(rows[:1])
    assert [e.status for e in rx.exports] == [302]  # not followed
    assert rx.spans == []


@pytest.mark.parametrize("path", ["otlp", "langfuse"])
def test_partial_success_is_logged_not_resent(
    rx: OtlpReceiver, rows: list[dict[str, Any]], caplog: pytest.LogCaptureFixture, path: str
) -> None:
    rx.fault(partial_reject=2, partial_message="2 spans had bad timestamps")
    sink = otlp(rx) if path == "otlp" else langfuse(rx)
    with caplog.at_level(logging.WARNING, logger="prompttap.otlp"):
        sink.export(rows[:3])
    assert sink.partial_rejected == 2
    assert "rejected 2 of 3 spans" in caplog.text and "2 spans had bad timestamps" in caplog.text
    assert len(rx.exports) == 1


# --------------------------------------------------------------------------- configuration


def test_langfuse_from_env(rx: OtlpReceiver, rows: list[dict[str, Any]]) -> None:
    env = {
        "LANGFUSE_PUBLIC_KEY": rx.public_key,
        "LANGFUSE_SECRET_KEY": SECRET_KEY,
        "LANGFUSE_BASE_URL": rx.base_url + "/",
        "LANGFUSE_HOST": "http://ignored.invalid",  # BASE_URL wins, as in the SDK
    }
    [sink] = sinks_from_env(env)
    assert sink.name == "langfuse"
    assert sink.endpoint == f"{rx.base_url}/api/public/otel/v1/traces"
    assert SECRET_KEY not in repr(sink)
    sink.export(rows[:1])
    [export] = rx.exports
    auth = base64.b64decode(export.headers["authorization"].removeprefix("Basic ")).decode()
    assert auth == f"{rx.public_key}:{SECRET_KEY}"
    assert export.headers["x-langfuse-ingestion-version"] == "4"
    assert export.headers["x-langfuse-public-key"] == rx.public_key
    host_only = sinks_from_env({**env, "LANGFUSE_BASE_URL": ""})[0]
    assert host_only.endpoint == "http://ignored.invalid/api/public/otel/v1/traces"


def test_incomplete_langfuse_env_is_off_and_quiet_about_secrets(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert sinks_from_env({"LANGFUSE_PUBLIC_KEY": "pk", "LANGFUSE_SECRET_KEY": SECRET_KEY}) == []
    assert "LANGFUSE_BASE_URL" in caplog.text and SECRET_KEY not in caplog.text
    assert sinks_from_env({}) == []


def test_generic_otlp_from_the_standard_variables(rx: OtlpReceiver, rows: list[dict[str, Any]]) -> None:
    [sink] = sinks_from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": rx.base_url + "/",
            "OTEL_EXPORTER_OTLP_HEADERS": "api-key=a%20b%2Cc,x-tenant=t1",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
            "OTEL_SERVICE_NAME": "my-gateway",
        }
    )
    assert (sink.name, sink.endpoint, sink.timeout) == ("otlp", rx.otlp_endpoint, 2.5)
    rx.required_headers = {"api-key": "a b,c", "x-tenant": "t1"}
    sink.export(rows[:1])
    assert rx.spans[0]["resource"] == {"service.name": "my-gateway"}
    rx.required_headers = {"api-key": "other"}
    with pytest.raises(OtlpAuthError):
        sink.export(rows[:1])


def test_signal_specific_variables_win() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://traces.example.com/custom/path",
        "OTEL_EXPORTER_OTLP_HEADERS": "a=1",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "b=2",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "7",  # the Python SDK's seconds
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
    }
    [sink] = sinks_from_env(env)
    assert sink.endpoint == "https://traces.example.com/custom/path"  # used as is, no /v1/traces
    assert sink.timeout == 7.0
    assert parse_headers("b=2") == {"b": "2"}
    assert "a" not in sink._headers and sink._headers["b"] == "2"


@pytest.mark.parametrize("protocol", ["grpc", "http/json"])
def test_unsupported_protocol_is_a_clear_error(protocol: str) -> None:
    with pytest.raises(ValueError, match=f"{protocol}.*http/protobuf"):
        sinks_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": protocol})
    assert sinks_from_env({"OTEL_EXPORTER_OTLP_PROTOCOL": protocol}) == []  # no endpoint: not asked for


def test_both_sinks_together(rx: OtlpReceiver) -> None:
    env = {
        "LANGFUSE_PUBLIC_KEY": "pk",
        "LANGFUSE_SECRET_KEY": "sk",
        "LANGFUSE_HOST": rx.base_url,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": rx.otlp_endpoint,
    }
    assert [s.name for s in sinks_from_env(env)] == ["langfuse", "otlp"]


def test_header_parsing() -> None:
    assert parse_headers(" Authorization=Bearer%20tok , x=1=2,,bad ") == {"Authorization": "Bearer tok", "x": "1=2"}


# --------------------------------------------------------------------------- otel_traces in the store


def test_otel_traces_sink_writes_queryable_idempotent_spans(memory_store: Any, rows: list[dict[str, Any]]) -> None:
    sink = OtelTracesSink(memory_store)
    sink.export(rows)
    sink.export(rows[:2])  # a replay
    ids = tuple(r["span_id"] for r in rows)
    q = "SELECT count() FROM otel_traces FINAL WHERE SpanId IN {ids:Array(String)}"
    assert memory_store.query(q, parameters={"ids": list(ids)}).result_rows == [(5,)]
    found = memory_store.query(
        "SELECT SpanId, SpanName, SpanKind, StatusCode, Duration, SpanAttributes['gen_ai.usage.input_tokens'] "
        "FROM otel_traces FINAL WHERE has(SpanAttributeItems, 'gen_ai.request.model=gpt-4o-mini') "
        "AND SpanId IN {ids:Array(String)} ORDER BY SpanId",
        parameters={"ids": list(ids)},
    ).result_rows
    expected = sorted((r["span_id"], "chat gpt-4o-mini", "Client", "Unset", 250_500_000, str(r["input_tokens"]))
                      for r in rows[:2])  # fmt: skip
    assert found == expected
    error = memory_store.query(
        "SELECT StatusCode, StatusMessage, SpanAttributes['error.type'] "
        "FROM otel_traces FINAL WHERE SpanId = {s:String}",
        parameters={"s": rows[3]["span_id"]},
    ).result_rows
    assert error == [("Error", "fake upstream error 529", "overloaded_error")]
    events = memory_store.query(
        "SELECT Events.Name, ServiceName, ResourceAttributes FROM otel_traces FINAL WHERE SpanId = {s:String}",
        parameters={"s": rows[2]["span_id"]},
    ).result_rows
    assert events == [(["prompttap.first_chunk"], "prompttap", {"service.name": "prompttap"})]


def test_trace_id_lookup_bounds_a_trace_query(memory_store: Any) -> None:
    """What Grafana's trace view does: time range from the lookup table, then the spans."""
    trace = "5" * 32
    parent = capture_row(body=chat_body(), trace_id=trace, started_at=1_790_000_000.25)
    child = capture_row(body=chat_body(stream=True), trace_id=trace, started_at=1_790_000_030.5)
    OtelTracesSink(memory_store).export([parent, child])
    OtelTracesSink(memory_store).export([child])
    [(start, end)] = memory_store.query(
        "SELECT min(Start), max(End) FROM otel_traces_trace_id_ts WHERE TraceId = {t:String} GROUP BY TraceId",
        parameters={"t": trace},
    ).result_rows
    assert start.replace(tzinfo=UTC) == datetime(2026, 9, 21, 14, 13, 20, tzinfo=UTC)
    assert (end - start).total_seconds() == 30
    spans = memory_store.query(
        "SELECT SpanId FROM otel_traces FINAL WHERE TraceId = {t:String} "
        "AND Timestamp >= {s:DateTime} AND Timestamp <= {e:DateTime} + INTERVAL 1 SECOND ORDER BY Timestamp",
        parameters={"t": trace, "s": start, "e": end},
    ).result_rows
    assert [s for (s,) in spans] == [parent["span_id"], child["span_id"]]
