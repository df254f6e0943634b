"""Spans end to end: a real prompttap process sends every capture to a Langfuse-shaped
OTLP receiver and to any OTLP endpoint, and into ClickHouse's ``otel_traces``.

The receiver (``tests/otlp_receiver.py``) decodes the real protobuf payloads and checks
Basic auth like Langfuse does.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider

from tests.fake_upstream import FakeUpstream
from tests.harness import Prompttap, query_store
from tests.otlp_receiver import OtlpReceiver

KEY = "sk-test-spans-0000"


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver(public_key="pk-lf-e2e", secret_key="sk-lf-e2e-secret") as rx:
        yield rx


@pytest.fixture(scope="module")
def traced(fake: FakeUpstream, receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prompttap]:
    env = {
        "LANGFUSE_PUBLIC_KEY": "pk-lf-e2e",
        "LANGFUSE_SECRET_KEY": "sk-lf-e2e-secret",
        "LANGFUSE_HOST": receiver.base_url,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.base_url,
    }
    home = tmp_path_factory.mktemp("traced")
    with Prompttap(home, fake.base_url, "--route", f"chatapp={fake.base_url}", env=env) as p:
        yield p


def spans_for(rx: OtlpReceiver, capture_ids: set[str], path: str = "/api/public/otel/v1/traces", timeout: float = 30):
    """The delivered span of each capture, among deliveries to ``path`` (Langfuse's by default)."""
    deadline = time.monotonic() + timeout
    while True:
        on_path = {sid for e in list(rx.exports) if e.path == path and e.status < 300 for sid in e.span_ids}
        found = {}
        for span in rx.latest().values():
            cid = span["attributes"].get("prompttap.capture.id")
            if cid in capture_ids and span["span_id"] in on_path:
                found[cid] = span
        if len(found) == len(capture_ids):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"spans for {len(found)} of {len(capture_ids)} captures arrived on {path}")
        time.sleep(0.1)


def captures_with(pt: Prompttap, nonce: str, n: int) -> list[dict]:
    deadline = time.monotonic() + 30
    while True:
        pt.drained()
        found = [pt.capture(c["id"]) for c in pt.captures(limit=200)]
        found = [c for c in found if nonce in (c["request_body"] or "")]
        if len(found) >= n:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(found)} captures carry {nonce}")
        time.sleep(0.1)


def test_generations_reach_langfuse_with_what_it_needs(traced: Prompttap, receiver: OtlpReceiver):
    n = uuid.uuid4().hex
    oa = openai.OpenAI(base_url=f"{traced.url}/chatapp/v1", api_key=KEY)
    kw = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"hi {n}"}], "temperature": 0.5}
    oa.chat.completions.create(**kw, extra_headers={"x-prompttap-session": "s-1", "x-prompttap-user": "ada"})
    list(oa.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    an = anthropic.Anthropic(base_url=traced.url, api_key="sk-ant-secret-0000")
    an.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=[{"role": "user", "content": f"yo {n}"}])
    with an.messages.stream(
        model="claude-haiku-4-5", max_tokens=50, messages=[{"role": "user", "content": f"yo {n}"}]
    ) as s:
        s.get_final_message()
    caps = captures_with(traced, n, 4)
    spans = spans_for(receiver, {c["id"] for c in caps})
    for cap in caps:
        span = spans[cap["id"]]
        a = span["attributes"]
        assert span["trace_id"] == cap["trace_id"] and span["span_id"] == cap["span_id"]
        assert a["langfuse.observation.type"] == "generation"
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.request.model"] == cap["model"]
        assert a["gen_ai.usage.input_tokens"] == cap["input_tokens"]
        assert a["gen_ai.usage.output_tokens"] == cap["output_tokens"]
        assert a["langfuse.observation.model.name"]
        assert a["langfuse.observation.input"] and a["langfuse.observation.output"]
        assert cap["output_text"] in str(a["langfuse.observation.output"])
        assert a["langfuse.trace.name"] == cap["route"]
        assert a["langfuse.session.id"] in (cap["session_id"], cap["thread_id"])
        assert "langfuse.observation.usage_details" in a
        if cap["stream"]:
            assert "langfuse.observation.completion_start_time" in a
        blob = str(span)
        assert KEY not in blob and "sk-ant-secret" not in blob and "0000" not in str(a.get("http.request.header", ""))
    openai_plain = next(c for c in caps if c["api"] == "openai.chat" and not c["stream"])
    a = spans[openai_plain["id"]]["attributes"]
    assert a["langfuse.user.id"] == "ada" and a["langfuse.session.id"] == "s-1"
    assert a["gen_ai.request.temperature"] == 0.5
    assert a["langfuse.trace.name"] == "chatapp"
    # The same spans went to the generic OTLP endpoint too.
    spans_for(receiver, {c["id"] for c in caps}, path="/v1/traces")


def test_langfuse_down_then_back_every_span_once(fake: FakeUpstream, tmp_path: Path):
    with OtlpReceiver(public_key="pk-lf-x", secret_key="sk-lf-x") as rx:
        env = {"LANGFUSE_PUBLIC_KEY": "pk-lf-x", "LANGFUSE_SECRET_KEY": "sk-lf-x", "LANGFUSE_HOST": rx.base_url}
        rx.down()
        with Prompttap(tmp_path / "pt", fake.base_url, env=env) as pt:
            nonces = [uuid.uuid4().hex for _ in range(25)]
            for n in nonces:
                r = httpx.post(
                    f"{pt.url}/v1/chat/completions",
                    json={"model": "gpt-4o", "nonce": n, "messages": [{"role": "user", "content": n}]},
                )
                assert r.status_code == 200
            time.sleep(1.0)
            health = pt.health()
            assert health["sinks"]["langfuse"]["pending"] == 25
            assert not health["sinks"]["langfuse"]["healthy"]
            assert health["sinks"]["clickhouse"]["pending"] == 0  # one sink down never holds back another
            metrics = httpx.get(f"{pt.ui_url}/metrics").text
            assert 'prompttap_sink_queue_depth{sink="langfuse"} 25' in metrics
            rx.up()
            pt.drained(timeout=60)
            ids = {c["id"] for c in pt.captures(limit=100)}
            assert len(ids) == 25
            spans = spans_for(rx, ids)
            assert len(spans) == 25
            assert all(rx.deliveries[s["span_id"]] == 1 for s in spans.values())  # exactly once
            assert pt.health()["sinks"]["langfuse"]["healthy"]


def test_a_split_batch_reaches_an_otlp_endpoint_once_despite_a_transient_failure(fake: FakeUpstream, tmp_path: Path):
    """413 above 2 spans splits a 10-capture batch in halves; a 503 after 3 spans were accepted must not
    make prompttap send those 3 again (an OTLP backend keeps every copy)."""
    with OtlpReceiver() as rx:
        rx.fault(503)  # until changed: the captures wait in the spool and leave as one batch
        with Prompttap(tmp_path / "pt", fake.base_url, env={"OTEL_EXPORTER_OTLP_ENDPOINT": rx.base_url}) as pt:
            for i in range(10):
                body = {"model": "gpt-4o", "messages": [{"role": "user", "content": f"split {i}"}]}
                assert httpx.post(f"{pt.url}/v1/chat/completions", json=body).status_code == 200
            deadline = time.monotonic() + 30
            while not ((otlp := pt.health()["sinks"]["otlp"])["pending"] == 10 and otlp["failed_exports"]):
                assert time.monotonic() < deadline, otlp
                time.sleep(0.05)
            before = len(rx.exports)
            # requests: 10 spans (413), 0-4 (413), 0-1 (ok), 2-4 (413), 2 (ok), 3-4: 503
            rx.fault(max_spans=2, at={6: 503})
            pt.drained(timeout=60)
            spans = {pt.capture(c["id"])["span_id"] for c in pt.captures()}
            assert len(spans) == 10
            assert 503 in [e.status for e in rx.exports[before:]]
            assert dict(rx.deliveries) == dict.fromkeys(spans, 1)  # every span, each exactly once
            assert pt.health()["sinks"]["otlp"]["rejected"] == 0


def test_a_wrong_langfuse_key_is_misconfigured_on_healthz_at_once(fake: FakeUpstream, tmp_path: Path):
    """A 401 is not an outage: /healthz says so at the first refusal, loudly once in the log, as a metric,
    and never with the key; the captures wait, and go through once the key is accepted."""
    with OtlpReceiver(public_key="pk-lf-m", secret_key="sk-lf-right") as rx:
        env = {"LANGFUSE_PUBLIC_KEY": "pk-lf-m", "LANGFUSE_SECRET_KEY": "sk-lf-WRONG-key", "LANGFUSE_HOST": rx.base_url}
        with Prompttap(tmp_path / "pt", fake.base_url, env=env) as pt:
            body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "who am I"}]}
            assert httpx.post(f"{pt.url}/v1/chat/completions", json=body).status_code == 200
            deadline = time.monotonic() + 30
            while not (health := pt.health())["sinks"]["langfuse"]["failed_exports"]:
                assert time.monotonic() < deadline, health
                time.sleep(0.05)
            langfuse = health["sinks"]["langfuse"]
            assert langfuse["status"] == "misconfigured" and langfuse["misconfigured"] and langfuse["pending"] == 1
            assert health["status"] == "degraded"
            assert [p for p in health["problems"] if p.startswith("sink langfuse misconfigured: ")]
            assert "HTTP 401" in langfuse["last_error"]
            assert health["sinks"]["clickhouse"]["status"] == "ok"
            metrics = httpx.get(f"{pt.ui_url}/metrics").text
            assert 'prompttap_sink_misconfigured{sink="langfuse"} 1' in metrics
            assert 'prompttap_sink_misconfigured{sink="clickhouse"} 0' in metrics
            assert pt.log().count("sink langfuse is MISCONFIGURED") == 1
            assert "WRONG" not in pt.log() + str(health) + metrics
            rx.secret_key = "sk-lf-WRONG-key"  # the key is accepted now
            pt.drained(timeout=60)
            assert pt.health()["sinks"]["langfuse"]["status"] == "ok"
            assert list(rx.deliveries.values()) == [1]


def test_traceparent_makes_the_capture_a_child_of_the_client_span(
    traced: Prompttap, receiver: OtlpReceiver, fake: FakeUpstream
):
    provider = TracerProvider()
    tracer = provider.get_tracer("test-client")
    n = uuid.uuid4().hex
    with tracer.start_as_current_span("client operation") as client_span:
        headers: dict[str, str] = {}
        propagate.inject(headers)
        r = httpx.post(
            f"{traced.url}/v1/chat/completions",
            json={"model": "gpt-4o", "nonce": n, "messages": [{"role": "user", "content": n}]},
            headers=headers,
        )
        assert r.status_code == 200
        ctx = client_span.get_span_context()
    trace_id, span_id = trace.format_trace_id(ctx.trace_id), trace.format_span_id(ctx.span_id)
    upstream = next(q for q in fake.requests if n.encode() in q.body)
    assert upstream.header("traceparent") == headers["traceparent"]  # forwarded upstream
    (cap,) = captures_with(traced, n, 1)
    assert cap["trace_id"] == trace_id and cap["parent_span_id"] == span_id
    span = spans_for(receiver, {cap["id"]})[cap["id"]]
    assert span["trace_id"] == trace_id and span["parent_span_id"] == span_id


def test_spans_land_in_otel_traces_for_grafana(fake: FakeUpstream, tmp_path: Path):
    home = tmp_path / "pt"
    with Prompttap(home, fake.base_url, ui=False) as pt:
        for i in range(3):
            httpx.post(
                f"{pt.url}/v1/chat/completions",
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"grafana {i}"}]},
            )
        pt.drained()
    rows = query_store(
        home,
        "SELECT SpanName, ServiceName, SpanAttributes['gen_ai.request.model'], Duration > 0 "
        "FROM otel_traces FINAL ORDER BY Timestamp",
    )
    assert (
        rows == [["chat gpt-4o-mini", "prompttap", "gpt-4o-mini", True]] * 3
        or rows == [["chat gpt-4o-mini", "prompttap", "gpt-4o-mini", 1]] * 3
    )
    captures = query_store(home, "SELECT toString(trace_id), toString(span_id) FROM captures FINAL ORDER BY started_at")
    traces = query_store(home, "SELECT TraceId, SpanId FROM otel_traces FINAL ORDER BY Timestamp")
    assert captures == traces
