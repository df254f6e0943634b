"""Anthropic Messages API understanding, against hand-written fixtures in the shape Anthropic
documents (the non-streamed message and the stream of one same answer), plus the SSE timing
helpers it relies on."""

# ruff: noqa: RUF001  (look-alike characters are deliberate multi-byte test text)
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prompttap.collector.apis.anthropic import understand_messages
from prompttap.collector.apis.base import Exchange, Understanding, message
from prompttap.collector.apis.events import parse_sse
from prompttap.collector.apis.timing import ChunkClock, sse_events_at, tokens_per_second
from tests.apis.support import chunk_at, stream_timings

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "apis" / "anthropic"
STREAM_CASES = ["text_unicode", "tool_use_parallel", "thinking", "conversation"]
# fields that depend on how the answer was delivered, not on what it says
DELIVERY = {"stream", "chunk_count", "ttft_ms", "tokens_per_second"}


def request(case: str, stream: bool) -> bytes:
    req = json.loads((FIX / case / "request.json").read_text("utf-8"))
    if stream:
        req["stream"] = True
    return json.dumps(req, ensure_ascii=False).encode()


def chunked(body: bytes, size: int = 7, start: float = 120.0, step: float = 15.0) -> tuple[tuple[float, int], ...]:
    return tuple((start + step * i, min(size, len(body) - off)) for i, off in enumerate(range(0, len(body), size)))


def exchange(
    case: str,
    stream: bool,
    *,
    body: bytes | None = None,
    status: int = 200,
    timing: tuple[tuple[float, int], ...] | None = None,
) -> Exchange:
    if body is None:
        body = (FIX / case / ("stream.txt" if stream else "response.json")).read_bytes()
    return Exchange(
        method="POST",
        path="/v1/messages",
        query="",
        request_body=request(case, stream),
        response_body=body,
        response_content_type="text/event-stream; charset=utf-8" if stream else "application/json",
        status_code=status,
        outcome="ok",
        duration_ms=2000.0,
        stream_timing=chunked(body) if timing is None else timing,
    )


def fields(u: Understanding, skip: set[str] = DELIVERY) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(u).items() if k not in skip}


# -- hand-written pairs: stream == non-stream -------------------------------------------------


@pytest.mark.parametrize("case", STREAM_CASES)
def test_stream_reassembles_to_the_non_streamed_message(case: str) -> None:
    plain = understand_messages(exchange(case, stream=False))
    streamed = understand_messages(exchange(case, stream=True))
    expected = json.loads((FIX / case / "response.json").read_text("utf-8"))

    assert plain.parse_error == streamed.parse_error == ""
    assert plain.response == expected
    assert streamed.response == expected
    assert fields(streamed) == fields(plain)
    assert (plain.stream, streamed.stream) == (False, True)
    assert plain.chunk_count == 0 and plain.ttft_ms is None
    body = (FIX / case / "stream.txt").read_text("utf-8")
    assert streamed.chunk_count == body.count("\nevent: ") + 1
    assert streamed.incomplete is False


def test_text_unicode_fields() -> None:
    u = understand_messages(exchange("text_unicode", stream=True))
    assert u.api == "anthropic.messages" and u.provider == "anthropic"
    assert u.model == u.response_model == "claude-sonnet-4-5-20250929"
    assert u.system_prompt == "You are a concise travel assistant.\nAnswer in the user's language."
    assert u.messages == [message("user", "Bonjour ! Quelle est la meilleure saison pour visiter Kyōto ? 🌸")]
    assert u.params == {
        "max_tokens": 1024,
        "temperature": 0.3,
        "top_k": 40,
        "stop_sequences": ["\n\nHuman:"],
        "metadata": {"user_id": "u-4711"},
    }
    assert u.output_text.startswith("Le printemps (fin mars – début avril)")
    assert u.output_text.endswith("🍁. 京都は一年中美しいです。")
    assert u.finish_reason == "end_turn"
    assert u.response_id == "msg_01XFDUDYJgAACzvnptvVoYEL"
    # OTel convention: total input includes cache reads and writes
    assert (u.input_tokens, u.cached_tokens, u.output_tokens) == (27 + 2051 + 0, 2051, 61)
    assert u.reasoning_tokens is None
    assert u.cost_usd is not None and 0 < u.cost_usd < 0.01


def test_parallel_tool_use_from_split_input_json() -> None:
    u = understand_messages(exchange("tool_use_parallel", stream=True))
    assert u.finish_reason == "tool_use"
    assert u.output_text == "I'll check the weather in both places."
    assert u.output_tool_calls == [
        {
            "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "name": "get_weather",
            "arguments": '{"location":"San Francisco, CA","unit":"fahrenheit"}',
        },
        {
            "id": "toolu_01VzvKqx8fkVv5tYDSCz1TfD",
            "name": "get_weather",
            "arguments": '{"location":"Zürich \\"Altstadt\\", Schweiz","unit":"celsius"}',
        },
    ]
    assert json.loads(u.output_tool_calls[1]["arguments"])["location"] == 'Zürich "Altstadt", Schweiz'
    assert u.tools[0]["name"] == "get_weather" and u.tools[0]["parameters"]["required"] == ["location"]
    assert u.tools[1] == {
        "name": "web_search",
        "description": "",
        "parameters": {},
        "type": "web_search_20250305",
    }
    assert u.params["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": False}


def test_thinking_blocks() -> None:
    u = understand_messages(exchange("thinking", stream=True))
    assert u.output_text == "No — 1001 = 7 × 11 × 13."
    assert u.reasoning_tokens == 71
    assert u.params == {
        "max_tokens": 4096,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "service_tier": "auto",
    }
    thinking, redacted, _ = u.response["content"]
    assert (
        thinking["thinking"]
        == "1001: try small primes. 1001 / 7 = 143, 143 = 11 × 13. So 1001 = 7 × 11 × 13, not prime."
    )
    assert thinking["signature"].startswith("EqQBCgIYAhIM")
    assert redacted["type"] == "redacted_thinking"


def test_conversation_is_normalized() -> None:
    u = understand_messages(exchange("conversation", stream=False))
    req = json.loads((FIX / "conversation" / "request.json").read_text("utf-8"))
    png = req["messages"][0]["content"][1]["source"]["data"]
    pdf = req["messages"][4]["content"][0]["source"]["data"]
    assert u.system_prompt == "You help with expense reports."
    assert u.messages == [
        message(
            "user",
            "Here is my receipt and a chart.",
            parts=[
                {"type": "text", "text": "Here is my receipt and a chart."},
                {"type": "image", "url": f"data:image/png;base64,{png}", "media_type": "image/png"},
                {"type": "image", "url": "https://example.com/chart.jpg"},
            ],
        ),
        message(
            "assistant",
            "Let me look up the prices.",
            parts=[
                {"type": "thinking", "text": "Two SKUs to price.", "signature": "EqAB"},
                {"type": "text", "text": "Let me look up the prices."},
            ],
            tool_calls=[
                {"id": "toolu_01", "name": "lookup_price", "arguments": '{"sku":"A-1"}'},
                {"id": "toolu_02", "name": "lookup_price", "arguments": '{"sku":"B-2"}'},
            ],
        ),
        message("tool", "12.50 EUR", tool_call_id="toolu_01", name="lookup_price"),
        message(
            "tool",
            "not found",
            parts=[{"type": "tool_result", "is_error": True}],
            tool_call_id="toolu_02",
            name="lookup_price",
        ),
        message("user", "Also convert to USD."),
        message("assistant", "Sure."),
        message(
            "user",
            "And summarise this.",
            parts=[
                {
                    "type": "file",
                    "url": f"data:application/pdf;base64,{pdf}",
                    "media_type": "application/pdf",
                    "title": "invoice.pdf",
                },
                {"type": "text", "text": "And summarise this."},
            ],
        ),
    ]
    assert u.tools == [
        {
            "name": "lookup_price",
            "description": "Price of a SKU",
            "parameters": {"type": "object", "properties": {"sku": {"type": "string"}}, "required": ["sku"]},
        }
    ]
    assert u.input_tokens == 1893 + 1500 and u.cached_tokens == 0


# -- timing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "marker"), [("text_unicode", b"text_delta"), ("thinking", b"thinking_delta")])
def test_ttft_is_the_chunk_of_the_first_content_event(case: str, marker: bytes) -> None:
    body = (FIX / case / "stream.txt").read_bytes()
    timing = chunked(body, size=50)
    u = understand_messages(exchange(case, stream=True, timing=timing))
    first_end = body.index(b"\n", body.index(marker))
    last_end = body.index(b"\n", body.rindex(b"text_delta"))
    assert u.ttft_ms == chunk_at(timing, first_end)
    assert u.ttft_ms > timing[0][0]  # message_start and pings are not content
    assert u.tokens_per_second == pytest.approx(u.output_tokens / ((chunk_at(timing, last_end) - u.ttft_ms) / 1000))


@pytest.mark.parametrize("case", ["text_unicode", "tool_use_parallel", "thinking"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_rechunking_gives_the_same_understanding(case: str, data: st.DataObject) -> None:
    body = (FIX / case / "stream.txt").read_bytes()
    reference = understand_messages(exchange(case, stream=True))
    timing = data.draw(stream_timings(len(body)))
    u = understand_messages(exchange(case, stream=True, timing=timing))
    assert fields(u, {"ttft_ms", "tokens_per_second"}) == fields(reference, {"ttft_ms", "tokens_per_second"})
    marker = b"thinking_delta" if case == "thinking" else b"text_delta"
    assert u.ttft_ms == chunk_at(timing, body.index(b"\n", body.index(marker)))


# -- cut-off and failing streams --------------------------------------------------------------


def test_cut_off_stream_is_incomplete_and_invents_nothing() -> None:
    full = (FIX / "tool_use_parallel" / "stream.txt").read_bytes()
    cut = full[: full.index(b"\n\n", full.index(b"Altstadt")) + 2]  # right after the fragment naming it
    u = understand_messages(exchange("tool_use_parallel", stream=True, body=cut))
    assert u.incomplete is True
    assert u.parse_error == ""
    assert u.finish_reason == ""  # no message_delta arrived: no stop reason to report
    assert u.response["stop_reason"] is None
    assert u.output_tokens == 1  # message_start's count, the last one reported
    first, second = u.output_tool_calls
    assert json.loads(first["arguments"]) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert second["arguments"] == '{"location": "Zürich \\"Altstadt\\", Schweiz", '  # what arrived, verbatim
    assert u.response["content"][2]["input"] == {}


@pytest.mark.parametrize("case", ["text_unicode", "tool_use_parallel", "thinking"])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_cut_never_raises_and_keeps_a_prefix(case: str, data: st.DataObject) -> None:
    full = (FIX / case / "stream.txt").read_bytes()
    whole = understand_messages(exchange(case, stream=True))
    cut = data.draw(st.integers(0, len(full)))
    u = understand_messages(exchange(case, stream=True, body=full[:cut]))
    assert u.incomplete is (cut < len(full))  # an SSE event counts once its blank line is in
    assert whole.output_text.startswith(u.output_text)
    assert u.model == whole.model and u.messages == whole.messages


def test_error_event_mid_stream() -> None:
    u = understand_messages(exchange("error_event", stream=True))
    assert u.incomplete is True
    assert u.parse_error == "stream error: overloaded_error: Overloaded"
    assert u.output_text == "Le printemps (fin mars"
    assert u.response["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    assert u.response["id"] == "msg_01ErrStream0000000000000"
    assert u.chunk_count == 5


def test_error_event_before_anything_else() -> None:
    err = {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}}
    body = f"event: error\ndata: {json.dumps(err)}\n\n".encode()
    u = understand_messages(exchange("text_unicode", stream=True, body=body))
    assert u.response == {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}}
    assert u.incomplete is True and "api_error" in u.parse_error


def test_deltas_for_citations_containers_and_stop_details() -> None:
    events = [
        {
            "type": "message_start",
            "message": {
                "id": "m",
                "type": "message",
                "role": "assistant",
                "model": "c",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 5, "output_tokens": 1},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "citations_delta", "citation": {"n": 1}},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "Grass is green."},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "citations_delta", "citation": {"n": 2}},
        },
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {
                "stop_reason": "refusal",
                "stop_sequence": None,
                "container": None,
                "stop_details": {"type": "refusal"},
            },
            "usage": {"output_tokens": 9, "input_tokens": None},
        },
        {"type": "message_stop"},
    ]
    body = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()
    u = understand_messages(exchange("text_unicode", stream=True, body=body))
    assert u.response["content"] == [{"type": "text", "text": "Grass is green.", "citations": [{"n": 1}, {"n": 2}]}]
    assert "container" not in u.response  # a null container does not overwrite
    assert u.response["stop_details"] == {"type": "refusal"}
    assert u.response["usage"] == {"input_tokens": 5, "output_tokens": 9}  # null counts keep the start value
    assert u.finish_reason == "refusal" and u.incomplete is False


def test_http_error_keeps_the_request() -> None:
    err = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    u = understand_messages(exchange("text_unicode", stream=True, body=json.dumps(err).encode(), status=529))
    assert u.response == err
    assert u.model == "claude-sonnet-4-5-20250929" and u.stream is True and len(u.messages) == 1
    assert (u.output_text, u.finish_reason, u.parse_error, u.incomplete) == ("", "", "", False)
    assert u.input_tokens is None and u.cost_usd is None

    u = understand_messages(exchange("text_unicode", stream=False, body=b"<html>Bad Gateway</html>", status=502))
    assert u.response is None and u.parse_error == "" and u.system_prompt


def test_unreadable_bodies_are_reported_not_raised() -> None:
    x = dataclasses.replace(exchange("text_unicode", stream=False), request_body=b"\xff\xfe not json")
    u = understand_messages(x)
    assert u.parse_error.startswith("request: body is not JSON")
    assert u.output_text  # the response is still understood
    u = understand_messages(exchange("text_unicode", stream=False, body=b"[1, 2]"))
    assert u.parse_error == "response: body is not a JSON object"


# -- never raises ---------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=25,
)
KEYS = st.sampled_from(
    [
        "model",
        "messages",
        "system",
        "tools",
        "stream",
        "content",
        "role",
        "type",
        "text",
        "source",
        "input",
        "tool_use_id",
        "usage",
        "index",
        "delta",
        "message",
        "content_block",
        "partial_json",
        "stop_reason",
        "error",
    ]
)
SHAPED = st.recursive(
    JSON, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=6), max_leaves=40
)


@settings(max_examples=300, deadline=None)
@given(
    req=SHAPED,
    resp=SHAPED,
    status=st.sampled_from([0, 200, 200, 400, 529]),
    ctype=st.sampled_from(["application/json", "text/event-stream"]),
)
def test_arbitrary_json_never_raises(req: Any, resp: Any, status: int, ctype: str) -> None:
    body = json.dumps(resp).encode()
    x = Exchange("POST", "/v1/messages", "", json.dumps(req).encode(), body, ctype, status, "ok", 1.0, chunked(body))
    assert isinstance(understand_messages(x), Understanding)


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "message_start",
                    "content_block_start",
                    "content_block_delta",
                    "message_delta",
                    "message_stop",
                    "error",
                    "ping",
                    "x",
                ]
            ),
            SHAPED,
        ),
        max_size=12,
    ),
    raw=st.binary(max_size=64),
)
def test_arbitrary_event_streams_never_raise(events: list[tuple[str, Any]], raw: bytes) -> None:
    body = (
        "".join(
            f"event: {n}\ndata: {json.dumps({'type': n, **d} if isinstance(d, dict) else d)}\n\n" for n, d in events
        ).encode()
        + raw
    )
    x = Exchange(
        "POST",
        "/v1/messages",
        "",
        request("thinking", True),
        body,
        "text/event-stream",
        200,
        "ok",
        1.0,
        chunked(body),
    )
    u = understand_messages(x)
    assert u.chunk_count >= len(events)


# -- timing helpers (collector/apis/timing.py) ----------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(["data: a", "data: é", "event: x", ": c", "", "\r", "\n", "\r\n", "id: 1", " "]),
        max_size=30,
    )
)
def test_sse_events_at_matches_parse_sse(pieces: list[str]) -> None:
    text = "".join(pieces)
    events, complete = sse_events_at(text.encode())
    assert ([ev for ev, _ in events], complete) == parse_sse(text)
    ends = [end for _, end in events]
    assert ends == sorted(ends) and all(0 < e <= len(text.encode()) for e in ends)


def test_sse_event_ends_point_past_the_data() -> None:
    body = "event: a\r\ndata: 1\r\n\r\ndata: 2é\n\n: keepalive\n\ndata: 3".encode()
    events, complete = sse_events_at(body)
    assert [(ev.event, ev.data) for ev, _ in events] == [("a", "1"), ("", "2é")]
    assert [body[:end][-3:] for _, end in events] == [b": 1", "2é".encode()[-3:]]
    assert complete is False


def test_chunk_clock() -> None:
    clock = ChunkClock(((10.0, 4), (20.0, 4), (30.0, 2)), 10)
    assert [clock.at(e) for e in (0, 1, 4, 5, 8, 9, 10, 11)] == [
        None,
        10.0,
        10.0,
        20.0,
        20.0,
        30.0,
        30.0,
        None,
    ]
    assert ChunkClock((), 10).at(3) is None
    # a body longer than the wire bytes was compressed in transit: positions scale
    assert ChunkClock(((10.0, 5), (20.0, 5)), 100).at(80) == 20.0
    assert tokens_per_second(10, 100.0, 600.0) == 20.0
    assert tokens_per_second(10, 100.0, 100.0) is None and tokens_per_second(None, 1.0, 2.0) is None
