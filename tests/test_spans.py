"""The capture -> span mapping (the `schemas/spans/` package) over realistic enriched rows."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from prompttap.collector.enrich import Enricher
from prompttap.schemas.capture import JSON_COLUMNS, Capture, new_capture_id
from prompttap.schemas.spans import (
    MAX_ATTR_BYTES,
    OTEL_COLUMNS,
    TRUNCATION_MARK,
    attr_text,
    otel_json,
    otel_row,
    span_of,
)
from tests.fake_upstream import render

SECRET = "sk-live-PROMPTTAP-SECRET-0123456789"
ANTHROPIC = "https://api.anthropic.com"
OPENAI = "https://api.openai.com"


def capture(
    path: str = "/v1/chat/completions",
    body: Any = None,
    *,
    upstream: str = OPENAI,
    status: int | None = None,
    outcome: str | None = None,
    error: str = "",
    **fields: Any,
) -> Capture:
    """A capture as the proxy records it: the fake upstream's real answer to ``body``.

    The request headers carry live credentials on purpose: spans must never contain them.
    """
    raw = json.dumps(body if body is not None else {}).encode()
    hdrs = {"content-type": "application/json", "authorization": f"Bearer {SECRET}", "x-api-key": SECRET}
    if status:
        hdrs["x-fake-status"] = str(status)
    plan = render("POST", path.split("?")[0], path.partition("?")[2], hdrs, raw)
    if outcome in ("upstream_unreachable", "proxy_error"):
        plan.status, plan.chunks = 0, [b""]
    defaults: dict[str, Any] = {
        "id": new_capture_id(),
        "trace_id": os.urandom(16).hex(),
        "span_id": os.urandom(8).hex(),
        "parent_span_id": "",
        "started_at": time.time(),
        "route": "app",
        "method": "POST",
        "path": path,
        "upstream_url": upstream + path,
        "duration_ms": 250.5,
        "ttft_ms": 40.25,
        "status_code": plan.status,
        "outcome": outcome or ("ok" if plan.status < 400 else "upstream_error"),
        "error": error,
        "request_headers": hdrs,
        "response_headers": dict(plan.headers),
        "request_body": raw,
        "response_body": plan.body,
        "request_size": len(raw),
        "response_size": len(plan.body),
        "stream_timing": [(30.0 + 5 * i, len(c)) for i, c in enumerate(plan.chunks)] if plan.stream else [],
        "client": "OpenAI/Python 1.99.0",
        "tags": ["prod", "checkout"],
    }
    defaults.update(fields)
    return Capture(**defaults)


def capture_row(path: str = "/v1/chat/completions", body: Any = None, **kw: Any) -> dict[str, Any]:
    """The capture row the drain builds from that capture (spooled record, enriched)."""
    return Enricher()(capture(path, body, **kw).to_record())


def chat_body(**extra: Any) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        "temperature": 0.2,
        "top_p": 0.9,
        "max_completion_tokens": 64,
        "seed": 7,
        "stop": "END",
        "frequency_penalty": 0.5,
        "presence_penalty": 0.25,
        "n": 1,
        **extra,
    }


def anthropic_body(**extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5",
        "system": "Answer in French.",
        "max_tokens": 128,
        "temperature": 0.7,
        "top_k": 40,
        "stop_sequences": ["\n\nHuman:"],
        "messages": [{"role": "user", "content": "Say hello"}],
        **extra,
    }


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def _json(span_attrs: dict[str, Any], key: str) -> Any:
    value = span_attrs[key]
    assert isinstance(value, str), f"{key} must be a JSON string, got {type(value).__name__}"
    return json.loads(value)


def _all_text(span: Any) -> str:
    return json.dumps(
        [span.name, span.status_message, span.attributes, [(e.name, e.attributes) for e in span.events]],
        ensure_ascii=False,
    )


# --------------------------------------------------------------------------- GenAI conventions


def test_openai_chat_carries_the_genai_conventions() -> None:
    row = capture_row(body=chat_body(), session_id="sess-42", user_id="alice")
    span = span_of(row)
    a = span.attributes
    assert span.name == "chat gpt-4o-mini"
    assert span.kind == "CLIENT"
    assert (span.trace_id, span.span_id, span.parent_span_id) == (row["trace_id"], row["span_id"], "")
    assert span.status_code == "UNSET"
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == a["gen_ai.response.model"] == "gpt-4o-mini"
    assert a["gen_ai.request.temperature"] == 0.2 and isinstance(a["gen_ai.request.temperature"], float)
    assert a["gen_ai.request.top_p"] == 0.9
    assert a["gen_ai.request.max_tokens"] == 64 and isinstance(a["gen_ai.request.max_tokens"], int)
    assert a["gen_ai.request.seed"] == 7
    assert a["gen_ai.request.stop_sequences"] == ["END"]
    assert a["gen_ai.request.frequency_penalty"] == 0.5
    assert a["gen_ai.request.presence_penalty"] == 0.25
    assert "gen_ai.request.choice.count" not in a  # n == 1 is the default: not reported
    assert "gen_ai.request.stream" not in a  # unset means "not streaming"
    assert a["gen_ai.usage.input_tokens"] == row["input_tokens"] > 0
    assert a["gen_ai.usage.output_tokens"] == row["output_tokens"] > 0
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["gen_ai.response.id"].startswith("chatcmpl-")
    assert a["gen_ai.conversation.id"] == "sess-42"
    assert a["server.address"] == "api.openai.com" and a["server.port"] == 443
    assert a["http.response.status_code"] == 200
    assert a["openai.api.type"] == "chat_completions"
    assert "gen_ai.response.time_to_first_chunk" not in a  # streaming only
    # OpenAI system messages are chat history: they stay in gen_ai.input.messages
    assert _json(a, "gen_ai.input.messages") == [
        {"role": "system", "parts": [{"type": "text", "content": "You are terse."}]},
        {"role": "user", "parts": [{"type": "text", "content": "What is the capital of France?"}]},
    ]
    assert "gen_ai.system_instructions" not in a
    out = _json(a, "gen_ai.output.messages")
    assert out == [
        {"role": "assistant", "parts": [{"type": "text", "content": row["output_text"]}], "finish_reason": "stop"}
    ]
    assert span.end_ns - span.start_ns == 250_500_000


def test_anthropic_stream_has_instructions_ttft_and_cache_usage() -> None:
    row = capture_row("/v1/messages", anthropic_body(stream=True), upstream=ANTHROPIC)
    assert row["stream"] and row["ttft_ms"] is not None
    span = span_of(row)
    a = span.attributes
    assert span.name == "chat claude-sonnet-4-5"
    assert a["gen_ai.provider.name"] == "anthropic"
    assert a["gen_ai.request.stream"] is True
    assert a["gen_ai.request.top_k"] == 40.0
    assert a["gen_ai.request.stop_sequences"] == ["\n\nHuman:"]
    assert a["gen_ai.request.max_tokens"] == 128
    assert a["gen_ai.response.time_to_first_chunk"] == pytest.approx(row["ttft_ms"] / 1000)
    assert a["gen_ai.response.finish_reasons"] == ["end_turn"]
    assert a["gen_ai.usage.cache_read.input_tokens"] == 0
    assert a["gen_ai.usage.cache_creation.input_tokens"] == 0
    # Anthropic takes instructions separately: gen_ai.system_instructions, parts without a role
    assert _json(a, "gen_ai.system_instructions") == [{"type": "text", "content": "Answer in French."}]
    assert _json(a, "gen_ai.input.messages") == [{"role": "user", "parts": [{"type": "text", "content": "Say hello"}]}]
    assert _json(a, "gen_ai.output.messages")[0]["finish_reason"] == "stop"
    assert "gen_ai.conversation.id" not in a  # only explicit session ids, never the inferred thread
    [event] = span.events
    assert event.name == "prompttap.first_chunk"
    assert event.time_ns == span.start_ns + round(row["ttft_ms"] * 1_000_000)


def test_tool_calls_and_tool_results_use_the_conventions_parts() -> None:
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "rainy, 57F"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "and this? call tool"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                ],
            },
        ],
        "tools": [WEATHER_TOOL],
    }
    a = span_of(capture_row(body=body)).attributes
    msgs = _json(a, "gen_ai.input.messages")
    assert msgs[1] == {
        "role": "assistant",
        "parts": [{"type": "tool_call", "id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}],
    }
    assert msgs[2] == {
        "role": "tool",
        "parts": [{"type": "tool_call_response", "id": "call_1", "response": "rainy, 57F"}],
    }
    assert msgs[3]["parts"] == [
        {"type": "text", "content": "and this? call tool"},
        {"type": "blob", "modality": "image", "content": "iVBORw0KGgo=", "mime_type": "image/png"},
    ]
    assert _json(a, "gen_ai.tool.definitions") == [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": WEATHER_TOOL["function"]["parameters"],
        }
    ]
    out = _json(a, "gen_ai.output.messages")[0]
    assert out["finish_reason"] == "tool_call"
    assert [p["type"] for p in out["parts"]] == ["tool_call", "tool_call"]
    assert isinstance(out["parts"][0]["arguments"], dict)
    # Langfuse: OpenAI's own shape, tools beside the messages (as the langfuse OpenAI integration sends)
    lf_in = _json(a, "langfuse.observation.input")
    assert set(lf_in) == {"messages", "tools"}
    assert lf_in["messages"][1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert lf_in["messages"][2] == {"role": "tool", "content": "rainy, 57F", "tool_call_id": "call_1"}
    assert lf_in["tools"] == [WEATHER_TOOL]
    lf_out = _json(a, "langfuse.observation.output")
    assert lf_out["role"] == "assistant" and len(lf_out["tool_calls"]) == 2
    assert all(isinstance(c["function"]["arguments"], str) for c in lf_out["tool_calls"])


@pytest.mark.parametrize(
    ("path", "body", "upstream", "name", "operation", "provider", "lf_type"),
    [
        ("/v1/embeddings", {"model": "text-embedding-3-small", "input": ["a b", "c"]}, OPENAI,
         "embeddings text-embedding-3-small", "embeddings", "openai", "embedding"),
        ("/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi", "max_tokens": 5}, OPENAI,
         "text_completion gpt-3.5-turbo-instruct", "text_completion", "openai", "generation"),
        ("/api/chat", {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": False,
                       "options": {"temperature": 0.1, "num_predict": 12}},
         "http://localhost:11434", "chat llama3.2", "chat", "ollama", "generation"),
        (f"/v1beta/models/gemini-2.0-flash:generateContent?key={SECRET}",
         {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": {"temperature": 0.4}},
         "https://generativelanguage.googleapis.com", "generate_content gemini-2.0-flash", "generate_content",
         "gcp.gemini", "generation"),
        ("/v1/chat/completions", chat_body(), "https://myres.openai.azure.com", "chat gpt-4o-mini", "chat",
         "azure.ai.openai", "generation"),
    ],
)  # fmt: skip
def test_operation_provider_and_observation_type_per_api(
    path: str, body: Any, upstream: str, name: str, operation: str, provider: str, lf_type: str
) -> None:
    row = capture_row(path, body, upstream=upstream)
    span = span_of(row)
    assert span.name == name
    assert span.attributes["gen_ai.operation.name"] == operation
    assert span.attributes["gen_ai.provider.name"] == provider
    assert span.attributes["langfuse.observation.type"] == lf_type
    assert SECRET not in _all_text(span)
    if operation == "embeddings":
        output = _json(span.attributes, "langfuse.observation.output")
        assert [d["dimensions"] for d in output["data"]] == [8, 8]
        assert not any("embedding" in d for d in output["data"])  # no vectors


def test_unknown_api_is_an_http_span_without_bodies() -> None:
    row = capture_row(f"/v1/files/upload?token={SECRET}", {"purpose": "fine-tune", "secret": SECRET})
    span = span_of(row)
    assert row["api"] == "unknown"
    assert span.name == "POST /v1/files/upload"  # no query: low cardinality, and it may hold credentials
    assert "gen_ai.operation.name" not in span.attributes
    assert span.attributes["langfuse.observation.type"] == "span"
    assert not any(k.startswith(("gen_ai.input", "langfuse.observation.input")) for k in span.attributes)
    assert SECRET not in _all_text(span)


# --------------------------------------------------------------------------- errors


def test_upstream_error_is_an_error_span_with_the_provider_code() -> None:
    row = capture_row("/v1/messages", anthropic_body(), upstream=ANTHROPIC, status=429)
    span = span_of(row)
    a = span.attributes
    assert span.status_code == "ERROR"
    assert span.status_message == "fake upstream error 429"
    assert a["error.type"] == "rate_limit_error"
    assert a["http.response.status_code"] == 429
    assert a["langfuse.observation.level"] == "ERROR"
    assert a["langfuse.observation.status_message"] == "fake upstream error 429"
    assert _json(a, "langfuse.observation.output")["error"]["type"] == "rate_limit_error"
    assert "gen_ai.output.messages" not in a
    assert "langfuse.observation.completion_start_time" not in a
    assert _json(a, "gen_ai.input.messages")  # what was asked is still there


def test_unreachable_upstream_and_cancelled_client() -> None:
    row = capture_row(body=chat_body(), outcome="upstream_unreachable", error="connect timeout after 10s")
    span = span_of(row)
    assert span.status_code == "ERROR"
    assert span.attributes["error.type"] == "upstream_unreachable"
    assert span.status_message == "connect timeout after 10s"
    assert "http.response.status_code" not in span.attributes  # the client got nothing

    cancelled = span_of(capture_row(body=chat_body(stream=True), outcome="client_cancelled"))
    assert cancelled.status_code == "ERROR"
    assert cancelled.attributes["error.type"] == "client_cancelled"
    assert cancelled.attributes["langfuse.observation.level"] == "WARNING"


# --------------------------------------------------------------------------- Langfuse


def test_langfuse_generation_attributes_are_complete_and_well_shaped() -> None:
    row = capture_row("/v1/messages", anthropic_body(stream=True), upstream=ANTHROPIC, session_id="s-1", user_id="bob")
    a = span_of(row).attributes
    assert a["langfuse.observation.type"] == "generation"
    assert a["langfuse.observation.model.name"] == "claude-sonnet-4-5"
    lf_in = _json(a, "langfuse.observation.input")
    assert lf_in == [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Say hello"}]
    assert _json(a, "langfuse.observation.output") == {"role": "assistant", "content": row["output_text"]}
    params = _json(a, "langfuse.observation.model.parameters")
    assert params["max_tokens"] == 128 and params["temperature"] == 0.7
    assert params["stop_sequences"] == '["\\n\\nHuman:"]'  # non-scalars as JSON text, as Langfuse stores them
    usage = _json(a, "langfuse.observation.usage_details")
    assert usage == {"input": row["input_tokens"], "output": row["output_tokens"],
                     "total": row["input_tokens"] + row["output_tokens"]}  # fmt: skip
    assert _json(a, "langfuse.observation.cost_details") == {"total": row["cost_usd"]}
    start = datetime.fromisoformat(a["langfuse.observation.completion_start_time"].replace("Z", "+00:00"))
    expected = datetime.fromtimestamp(row["started_at"], UTC).timestamp() + row["ttft_ms"] / 1000
    assert start.timestamp() == pytest.approx(expected, abs=1e-5)
    assert a["langfuse.trace.name"] == "app"
    assert a["session.id"] == a["langfuse.session.id"] == "s-1"
    assert a["user.id"] == a["langfuse.user.id"] == "bob"
    assert a["langfuse.trace.tags"] == ["prod", "checkout"]
    assert a["langfuse.observation.metadata.capture_id"] == str(row["id"])
    assert a["langfuse.observation.metadata.outcome"] == "ok"
    assert a["langfuse.observation.metadata.client"] == "OpenAI/Python 1.99.0"
    assert a["langfuse.observation.metadata.prompt_template_id"] == row["prompt_template_id"]
    assert a["langfuse.trace.metadata.route"] == "app"
    assert a["langfuse.trace.metadata.thread_id"] == row["thread_id"]
    assert "langfuse.observation.level" not in a


def test_usage_details_are_langfuse_disjoint_buckets() -> None:
    row = capture_row(body=chat_body())
    row.update(input_tokens=100, output_tokens=50, cached_tokens=30, reasoning_tokens=20)
    usage = json.loads(span_of(row).attributes["langfuse.observation.usage_details"])
    assert usage == {
        "input": 70,
        "output": 30,
        "input_cached_tokens": 30,
        "output_reasoning_tokens": 20,
        "total": 150,
    }
    a = span_of(row).attributes
    assert a["gen_ai.usage.input_tokens"] == 100  # the conventions' totals are inclusive
    assert a["gen_ai.usage.cache_read.input_tokens"] == 30
    assert a["gen_ai.usage.reasoning.output_tokens"] == 20


def test_session_falls_back_to_the_thread_but_conversation_id_does_not() -> None:
    a = span_of(capture_row(body=chat_body())).attributes
    assert a["session.id"] == a["langfuse.session.id"] == a["prompttap.thread.id"]
    assert "gen_ai.conversation.id" not in a


# --------------------------------------------------------------------------- safety and bounds


@pytest.mark.parametrize(
    "make",
    [
        lambda: capture_row(body=chat_body(tools=[WEATHER_TOOL])),
        lambda: capture_row(body=chat_body(stream=True, stream_options={"include_usage": True})),
        lambda: capture_row("/v1/messages", anthropic_body(stream=True), upstream=ANTHROPIC),
        lambda: capture_row("/v1/messages", anthropic_body(), upstream=ANTHROPIC, status=401),
        lambda: capture_row(body=chat_body(), outcome="proxy_error", error="proxy failed"),
    ],
)
def test_no_credential_or_header_ever_reaches_a_span(make: Any) -> None:
    row = make()
    span = span_of(row)
    text = _all_text(span) + json.dumps(otel_row(span), default=str, ensure_ascii=False)
    assert SECRET not in text
    assert "Bearer" not in text
    assert not any("header" in k for k in span.attributes)


def test_huge_content_is_bounded_and_stays_valid_json() -> None:
    history = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "x" * 300} for i in range(600)]
    body = {"model": "gpt-4o", "messages": [*history, {"role": "user", "content": "last question " + "é" * 200_000}]}
    span = span_of(capture_row(body=body, tags=[f"t{i}" * 400 for i in range(500)]))
    a = span.attributes
    for key, value in a.items():
        if isinstance(value, str):
            assert len(value.encode()) <= MAX_ATTR_BYTES, key
    msgs = _json(a, "gen_ai.input.messages")  # still JSON
    assert TRUNCATION_MARK in msgs[-1]["parts"][0]["content"]
    assert msgs[-1]["parts"][0]["content"].startswith("last question")  # the newest turn is kept
    assert len(msgs) < 601  # the oldest turns went first
    assert _json(a, "langfuse.observation.input")[-1]["content"].startswith("last question")
    assert {"gen_ai.input.messages", "langfuse.observation.input"} <= set(a["prompttap.truncated_attributes"])
    assert len(a["langfuse.trace.tags"]) == 128
    assert all(len(t.encode()) <= 1024 for t in a["langfuse.trace.tags"])


def test_lone_surrogates_become_valid_utf8() -> None:
    row = capture_row(body=chat_body())
    row["output_text"] = "half an emoji \ud83d here"
    a = span_of(row).attributes
    for key in ("gen_ai.output.messages", "langfuse.observation.output"):
        a[key].encode("utf-8")  # would raise on a lone surrogate


# --------------------------------------------------------------------------- ids, time, determinism


def test_same_row_same_span_and_store_rows_agree() -> None:
    row = capture_row("/v1/messages", anthropic_body(stream=True), upstream=ANTHROPIC, session_id="s")
    span = span_of(row)
    assert span_of(dict(row)) == span  # a replay is the same span
    # A row read back from the store has JSON columns as text and started_at as a datetime.
    stored = dict(row)
    for name in JSON_COLUMNS:
        stored[name] = json.dumps(row[name], ensure_ascii=False) if row[name] is not None else ""
    stored["started_at"] = datetime.fromtimestamp(row["started_at"], UTC)
    assert span_of(stored) == span
    assert span.start_ns % 1000 == 0  # microseconds, as stored
    for i in range(300):  # float -> microsecond rounding must match the store's for any instant
        t = 1_790_000_000 + i * 0.1234567
        as_float = span_of({**row, "started_at": t}).start_ns
        assert as_float == span_of({**row, "started_at": datetime.fromtimestamp(t, UTC)}).start_ns


def test_invalid_ids_are_derived_from_the_capture_id() -> None:
    row = capture_row(body=chat_body(), trace_id="0" * 32, span_id="not-hex!", parent_span_id="zz")
    span = span_of(row)
    assert span.trace_id == row["id"].replace("-", "")
    assert len(span.span_id) == 16 and int(span.span_id, 16)
    assert span.parent_span_id == ""
    assert span_of(row).span_id == span.span_id
    parented = span_of(capture_row(body=chat_body(), parent_span_id="ABCDEF0123456789"))
    assert parented.parent_span_id == "abcdef0123456789"


# --------------------------------------------------------------------------- otel_traces rows


def test_otel_row_matches_the_exporter_layout() -> None:
    row = capture_row("/v1/messages", anthropic_body(stream=True), upstream=ANTHROPIC, status=None)
    span = span_of(row)
    values = otel_row(span, service_name="svc")
    assert len(values) == len(OTEL_COLUMNS) == 22
    r = dict(zip(OTEL_COLUMNS, values, strict=True))
    assert r["Timestamp"] == span.start_ns
    assert (r["TraceId"], r["SpanId"], r["ParentSpanId"]) == (span.trace_id, span.span_id, "")
    assert (r["SpanName"], r["SpanKind"], r["ServiceName"]) == ("chat claude-sonnet-4-5", "Client", "svc")
    assert r["ResourceAttributes"] == {"service.name": "svc"}
    assert r["ScopeName"] == "prompttap" and r["ScopeVersion"]
    assert r["Duration"] == 250_500_000
    assert r["StatusCode"] == "Unset"
    sa = r["SpanAttributes"]
    assert all(isinstance(v, str) for v in sa.values())
    assert sa["gen_ai.request.max_tokens"] == "128"
    assert sa["gen_ai.request.stream"] == "true"
    assert sa["gen_ai.request.temperature"] == "0.7"
    assert sa["gen_ai.request.stop_sequences"] == '["\\n\\nHuman:"]'
    assert r["Events.Name"] == ["prompttap.first_chunk"]
    assert r["Links.TraceId"] == []
    error = dict(zip(OTEL_COLUMNS, otel_row(span_of(capture_row(body=chat_body(), status=500))), strict=True))
    assert error["StatusCode"] == "Error" and error["StatusMessage"]


def test_otel_json_is_the_same_row_for_jsoneachrow() -> None:
    span = span_of(capture_row(body=chat_body(stream=True)))
    obj = otel_json(span, "svc")
    assert list(obj) == list(OTEL_COLUMNS)
    assert obj["Timestamp"] == f"{span.start_ns // 10**9}.{span.start_ns % 10**9:09d}"
    assert obj["Events.Timestamp"] == [f"{e.time_ns // 10**9}.{e.time_ns % 10**9:09d}" for e in span.events]
    row = otel_row(span, "svc")
    assert [v for k, v in obj.items() if "Timestamp" not in k] == [
        v for k, v in zip(OTEL_COLUMNS, row, strict=True) if "Timestamp" not in k
    ]
    json.dumps(obj)  # plain JSON all the way down


@pytest.mark.parametrize(
    ("value", "text"),
    [(True, "true"), (3, "3"), (0.1, "0.1"), (1e-05, "0.00001"), (2.0, "2"), (1e21, "1000000000000000000000"),
     (["a", "b"], '["a","b"]'), ("x", "x")],
)  # fmt: skip
def test_attribute_stringification_follows_pcommon(value: Any, text: str) -> None:
    assert attr_text(value) == text
