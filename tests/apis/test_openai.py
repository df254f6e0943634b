"""OpenAI understanding: hand-written fixtures and properties.

Each fixture under ``tests/fixtures/apis/openai/`` was written by hand in the shape OpenAI
documents: the request, the non-streamed response and the SSE stream of one same answer.
A stream must rebuild into exactly the non-streamed object (streams never carry
``annotations: []``, the only field the non-stream shape adds).
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import pathlib
from typing import Any

import pytest
import yaml
from genai_prices import Usage, calc_price
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prompttap.collector.apis.base import Exchange, Understanding
from prompttap.collector.apis.openai import understand_embeddings, understand_models
from prompttap.collector.apis.openai_chat import understand_chat, understand_completions
from prompttap.collector.apis.openai_responses import understand_responses
from prompttap.collector.apis.pricing import cost_usd

FIX = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "apis" / "openai"
REAL = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "real-traffic"
CHAT_STREAMS = ["chat_simple", "chat_tools_parallel", "chat_n2", "chat_unicode", "chat_empty_deltas"]
MESSAGE_KEYS = {"role", "content", "parts", "tool_calls", "tool_call_id", "name"}
UNDERSTOOD_OUTPUT = (
    "output_text",
    "output_tool_calls",
    "finish_reason",
    "response_id",
    "response_model",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_usd",
    "model",
    "messages",
    "system_prompt",
    "tools",
)


def load(name: str) -> Any:
    return json.loads((FIX / name).read_text("utf-8"))


def raw(name: str) -> bytes:
    return (FIX / name).read_bytes()


def exchange(
    req: Any,
    body: bytes,
    *,
    path: str = "/v1/chat/completions",
    status: int = 200,
    ctype: str = "application/json",
    timing: tuple[tuple[float, int], ...] | None = None,
    duration: float = 1000.0,
    method: str = "POST",
    outcome: str = "ok",
) -> Exchange:
    req_bytes = req if isinstance(req, bytes) else json.dumps(req).encode()
    if timing is None:
        timing = ((100.0, len(body)),) if body else ()
    return Exchange(method, path, "", req_bytes, body, ctype, status, outcome, duration, timing)


def sse_exchange(req: Any, body: bytes, path: str = "/v1/chat/completions", **kw: Any) -> Exchange:
    return exchange(req, body, path=path, ctype="text/event-stream", **kw)


def stream_request(name: str) -> dict[str, Any]:
    return dict(load(f"{name}.request.json"), stream=True, stream_options={"include_usage": True})


def without_empty_annotations(resp: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(resp)
    for choice in out["choices"]:
        if choice["message"].get("annotations") == []:
            del choice["message"]["annotations"]
    return out


def data_events(body: bytes) -> list[tuple[Any, int]]:
    """(parsed data, offset of its last byte) per event; an independent reading of the fixtures."""
    out, pos = [], 0
    for block in body.split(b"\n\n"):
        end = pos + len(block)
        pos = end + 2
        data = [ln[5:].strip() for ln in block.split(b"\n") if ln.startswith(b"data:")]
        if data and data[0] != b"[DONE]":
            out.append((json.loads(data[0]), end - 1))
    return out


def first_content_byte(body: bytes) -> int:
    for obj, last in data_events(body):
        kind = obj.get("type", "")
        for c in obj.get("choices", []):
            d = c.get("delta", {})
            if d.get("content") or d.get("tool_calls") or d.get("refusal") or c.get("text"):
                return last
        if kind in ("response.output_text.delta", "response.function_call_arguments.delta") and obj["delta"]:
            return last
        if kind == "response.output_item.added" and obj["item"]["type"] == "function_call":
            return last
    raise AssertionError("no content event")


def check_invariants(u: Understanding) -> None:
    """What every sink relies on, whatever the input."""
    assert isinstance(u, Understanding)
    json.dumps([u.params, u.messages, u.tools, u.output_tool_calls, u.response])
    for name in ("api", "model", "response_model", "system_prompt", "output_text", "finish_reason"):
        assert isinstance(getattr(u, name), str), name
    for name in ("response_id", "provider", "parse_error"):
        assert isinstance(getattr(u, name), str), name
    for name in ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens"):
        v = getattr(u, name)
        assert v is None or (type(v) is int and 0 <= v < 2**32), name
    for name in ("tokens_per_second", "cost_usd", "ttft_ms"):
        v = getattr(u, name)
        assert v is None or (isinstance(v, float) and math.isfinite(v)), name
    assert isinstance(u.params, dict) and isinstance(u.stream, bool) and isinstance(u.incomplete, bool)
    assert type(u.chunk_count) is int and u.chunk_count >= 0
    for m in u.messages:
        assert set(m) == MESSAGE_KEYS
        assert isinstance(m["role"], str) and isinstance(m["content"], str)
        assert all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in m["parts"])
        assert m["tool_call_id"] is None or isinstance(m["tool_call_id"], str)
        assert m["name"] is None or isinstance(m["name"], str)
        for tc in m["tool_calls"]:
            assert set(tc) == {"id", "name", "arguments"} and all(isinstance(v, str) for v in tc.values())
    for tc in u.output_tool_calls:
        assert set(tc) == {"id", "name", "arguments"} and all(isinstance(v, str) for v in tc.values())
    for t in u.tools:
        assert set(t) == {"name", "description", "parameters"}
        assert t["parameters"] is None or isinstance(t["parameters"], dict)


# --------------------------------------------------------------------------- chat: stream == non-stream


@pytest.mark.parametrize("name", CHAT_STREAMS)
def test_chat_stream_rebuilds_the_non_stream_response(name: str) -> None:
    body = raw(f"{name}.stream.sse")
    s = understand_chat(sse_exchange(stream_request(name), body))
    n = understand_chat(exchange(load(f"{name}.request.json"), raw(f"{name}.response.json")))

    assert s.response == without_empty_annotations(load(f"{name}.response.json"))
    for field in UNDERSTOOD_OUTPUT:
        assert getattr(s, field) == getattr(n, field), field
    assert s.stream and not n.stream
    assert not s.incomplete and s.parse_error == "" and n.parse_error == ""
    assert s.chunk_count == len(data_events(body))
    assert s.provider == n.provider == "openai"
    assert s.ttft_ms == 100.0 and n.ttft_ms is None  # one chunk holds everything
    assert n.tokens_per_second is None
    check_invariants(s)
    check_invariants(n)


@pytest.mark.parametrize("name", CHAT_STREAMS)
def test_chat_rebuild_agrees_with_the_sdk_accumulator(name: str) -> None:
    from openai.lib.streaming.chat import ChatCompletionStreamState
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    body = raw(f"{name}.stream.sse")
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for obj, _ in data_events(body):
        state.handle_chunk(ChatCompletionChunk.model_validate(obj))
    sdk = state.get_final_completion()
    ours = understand_chat(sse_exchange(stream_request(name), body)).response

    ChatCompletion.model_validate(ours)  # the rebuilt object is a valid non-stream completion
    assert len(sdk.choices) == len(ours["choices"])
    for a, b in zip(sdk.choices, ours["choices"], strict=True):
        assert a.index == b["index"] and a.finish_reason == b["finish_reason"]
        assert a.message.content == b["message"]["content"]
        got = [(t["id"], t["function"]["name"], t["function"]["arguments"]) for t in b["message"].get("tool_calls", [])]
        want = [(t.id, t.function.name, t.function.arguments) for t in a.message.tool_calls or []]
        assert got == want
    assert sdk.usage is not None and sdk.usage.model_dump(exclude_none=True) == ours["usage"]


def test_chat_simple_fields() -> None:
    u = understand_chat(sse_exchange(stream_request("chat_simple"), raw("chat_simple.stream.sse")))
    assert u.api == "openai.chat" and u.model == "gpt-4o-mini"
    assert u.response_model == "gpt-4o-mini-2024-07-18"
    assert u.response_id == "chatcmpl-BXw6dJ1pYk3vQ0ZtR9sE2mNfL8aHc"
    assert u.system_prompt == "You are a concise assistant."  # developer text, not in messages
    assert [m["role"] for m in u.messages] == ["user"]
    assert u.messages[0]["content"] == "Greet me in three words." and u.messages[0]["parts"] == []
    assert u.params == {
        "temperature": 0.7,
        "max_completion_tokens": 64,
        "stream_options": {"include_usage": True},
    }
    assert (u.output_text, u.finish_reason) == ("Hello there, friend!", "stop")
    assert (u.input_tokens, u.output_tokens, u.cached_tokens, u.reasoning_tokens) == (25, 5, 0, 0)
    assert "obfuscation" not in u.response and u.response["object"] == "chat.completion"
    price = calc_price(Usage(input_tokens=25, output_tokens=5), "gpt-4o-mini-2024-07-18", provider_id="openai")
    assert u.cost_usd == pytest.approx(float(price.total_price))


def test_chat_parallel_tool_calls() -> None:
    u = understand_chat(sse_exchange(stream_request("chat_tools_parallel"), raw("chat_tools_parallel.stream.sse")))
    assert u.output_text == "" and u.finish_reason == "tool_calls"
    assert u.response["choices"][0]["message"]["content"] is None
    assert u.output_tool_calls == [
        {
            "id": "call_9XyR2mQp7LkD3sVb1nTfA0eH",
            "name": "get_weather",
            "arguments": '{"location":"Paris, France","unit":"celsius"}',
        },
        {
            "id": "call_4JhT8wZc2PqN6rYx0mKsB5uG",
            "name": "get_weather",
            "arguments": '{"location":"Tokyo, Japan","unit":"celsius"}',
        },
    ]
    assert [t["name"] for t in u.tools] == ["get_weather"]
    assert u.tools[0]["description"] == "Get the current weather in a given location"
    assert u.tools[0]["parameters"]["required"] == ["location", "unit"]
    assert u.params["tool_choice"] == "auto" and u.params["parallel_tool_calls"] is True


def test_chat_n2_output_is_choice_zero_and_all_choices_kept() -> None:
    u = understand_chat(sse_exchange(stream_request("chat_n2"), raw("chat_n2.stream.sse")))
    assert u.output_text == "How about Whiskers?"
    assert [c["message"]["content"] for c in u.response["choices"]] == ["How about Whiskers?", "Maybe Mochi!"]
    assert [c["finish_reason"] for c in u.response["choices"]] == ["stop", "stop"]
    assert u.params["n"] == 2 and u.params["seed"] == 42


def test_chat_unicode_deltas() -> None:
    body = raw("chat_unicode.stream.sse")
    assert b"\\ud83c\\udf0d" in body and "🏽".encode() in body  # escaped and raw UTF-8 deltas both
    u = understand_chat(sse_exchange(stream_request("chat_unicode"), body))
    assert u.output_text == "こんにちは、世界！🌍 Grüße — naïve café 👋🏽"  # noqa: RUF001
    assert u.messages[0]["content"].endswith("🙂")


def test_chat_empty_deltas_and_comments() -> None:
    body = raw("chat_empty_deltas.stream.sse")
    assert b": keep-alive" in body
    u = understand_chat(sse_exchange(stream_request("chat_empty_deltas"), body))
    assert u.output_text == "OK, done." and u.chunk_count == 11


def test_chat_cut_stream() -> None:
    body = raw("chat_cut.stream.sse")
    u = understand_chat(sse_exchange(load("chat_cut.request.json"), body))
    assert u.incomplete and u.stream
    assert u.output_text == "The quick brown"  # the torn " fox" event is not half-used
    assert u.finish_reason == "" and u.response["choices"][0]["finish_reason"] is None
    assert u.response["usage"] is None
    assert (u.input_tokens, u.output_tokens, u.cost_usd, u.tokens_per_second) == (None, None, None, None)
    assert u.chunk_count == 4 and u.parse_error == ""
    check_invariants(u)


def test_chat_every_cut_point() -> None:
    body = raw("chat_simple.stream.sse")
    req = stream_request("chat_simple")
    full = understand_chat(sse_exchange(req, body))
    usage_at = body.index(b'"usage":{')
    for cut in range(len(body)):
        u = understand_chat(sse_exchange(req, body[:cut]))
        assert u.incomplete, cut
        assert full.output_text.startswith(u.output_text), cut
        assert u.finish_reason in ("", "stop"), cut
        if u.input_tokens is not None:  # usage only once its whole event arrived
            assert cut > usage_at and u.output_tokens == full.output_tokens
        assert u.parse_error == "", cut
    assert not full.incomplete


def test_chat_crlf_line_endings() -> None:
    body = raw("chat_simple.stream.sse")
    crlf = body.replace(b"\n", b"\r\n")
    a = understand_chat(sse_exchange(stream_request("chat_simple"), body))
    b = understand_chat(sse_exchange(stream_request("chat_simple"), crlf))
    assert a.response == b.response and not b.incomplete and b.chunk_count == a.chunk_count


def test_chat_stream_without_usage() -> None:
    body = raw("chat_simple.stream.sse")
    blocks = [b for b in body.split(b"\n\n") if b and b'"choices":[]' not in b]
    req = dict(load("chat_simple.request.json"), stream=True)
    u = understand_chat(sse_exchange(req, b"\n\n".join(blocks) + b"\n\n"))
    assert not u.incomplete and u.response["usage"] is None
    assert (u.input_tokens, u.output_tokens, u.cost_usd, u.tokens_per_second) == (None, None, None, None)
    assert u.output_text == "Hello there, friend!"


def test_chat_ttft_and_tokens_per_second() -> None:
    body = raw("chat_simple.stream.sse")
    ends = [last + 1 for _, last in data_events(body)] + [len(body)]
    sizes = [b - a for a, b in zip([0, *ends[:-1]], ends, strict=True)]
    timing = tuple((50.0 + 10 * i, s) for i, s in enumerate(sizes))  # one chunk per event
    u = understand_chat(sse_exchange(stream_request("chat_simple"), body, timing=timing, duration=2060.0))
    assert u.ttft_ms == 60.0  # chunk 0 is the role-only delta; chunk 1 carries "Hello"
    assert u.tokens_per_second == pytest.approx(5 / 2.0)


def test_chat_stream_error_event() -> None:
    body = raw("chat_cut.stream.sse").rsplit(b"\n\n", 1)[0] + b"\n\n"
    err = {"error": {"message": "The server had an error", "type": "server_error", "param": None, "code": None}}
    body += b"data: " + json.dumps(err).encode() + b"\n\n"
    u = understand_chat(sse_exchange(load("chat_cut.request.json"), body))
    assert u.incomplete and u.response["error"] == err["error"] and u.output_text == "The quick brown"


def test_chat_stream_logprobs_audio_and_legacy_function_call() -> None:
    def chunk(delta: dict[str, Any], logprobs: Any = None, finish: Any = None) -> str:
        return json.dumps(
            {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "gpt-4o-audio-preview",
                "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
            }
        )

    tok = lambda t: {"token": t, "logprob": -0.1, "bytes": list(t.encode()), "top_logprobs": []}  # noqa: E731
    events = [
        chunk({"role": "assistant", "content": ""}, {"content": [], "refusal": None}),
        chunk({"content": "Hi"}, {"content": [tok("Hi")], "refusal": None}),
        chunk({"content": " you"}, {"content": [tok(" you")], "refusal": None}),
        chunk({"audio": {"id": "audio_1", "transcript": "Hi", "data": "AAA"}}),
        chunk({"audio": {"transcript": " you", "data": "BBB"}}),
        chunk({"function_call": {"name": "lookup", "arguments": ""}}),
        chunk({"function_call": {"arguments": '{"q":'}}),
        chunk({"function_call": {"arguments": '"x"}'}}),
        chunk({}, None, "function_call"),
        chunk({"audio": {"expires_at": 1700000000}}),  # the final audio update has no finish_reason
    ]
    body = "".join(f"data: {e}\n\n" for e in events).encode() + b"data: [DONE]\n\n"
    u = understand_chat(sse_exchange({"model": "gpt-4o-audio-preview", "stream": True}, body))
    choice = u.response["choices"][0]
    assert choice["logprobs"]["content"] == [tok("Hi"), tok(" you")]
    assert choice["message"]["audio"] == {
        "id": "audio_1",
        "transcript": "Hi you",
        "data": "AAABBB",
        "expires_at": 1700000000,
    }
    assert choice["message"]["function_call"] == {"name": "lookup", "arguments": '{"q":"x"}'}
    assert choice["finish_reason"] == "function_call" and not u.incomplete
    assert u.output_tool_calls == [{"id": "", "name": "lookup", "arguments": '{"q":"x"}'}]


def test_chat_multimodal_request() -> None:
    req = load("chat_multimodal.request.json")
    u = understand_chat(exchange(req, b"", status=0, outcome="upstream_unreachable"))
    assert u.system_prompt == "You are a careful assistant.\n\nAnswer in English.\nCite the image when relevant."
    pdf = "data:application/pdf;base64,JVBERi0xLjQK"
    weather_args = '{"location":"Paris, France","unit":"celsius"}'
    assert u.messages == [
        {
            "role": "user",
            "content": "What is in these?",
            "parts": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image", "url": "https://example.com/cat.jpg", "detail": "high"},
                {"type": "image", "url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAE="},
                {"type": "audio", "format": "wav", "data_length": 32},
                {"type": "file", "filename": "report.pdf", "data_length": len(pdf)},
                {"type": "file", "file_id": "file-6F2ksmvXxt4VdoqmHRw6kL"},
            ],
            "tool_calls": [],
            "tool_call_id": None,
            "name": "ada",
        },
        {
            "role": "assistant",
            "content": "",
            "parts": [],
            "tool_calls": [{"id": "call_abc123", "name": "get_weather", "arguments": weather_args}],
            "tool_call_id": None,
            "name": None,
        },
        {
            "role": "tool",
            "content": '{"temperature":22,"unit":"celsius"}',
            "parts": [],
            "tool_calls": [],
            "tool_call_id": "call_abc123",
            "name": None,
        },
        {
            "role": "assistant",
            "content": "",
            "parts": [],
            "tool_calls": [{"id": "", "name": "lookup", "arguments": '{"q":"cats"}'}],
            "tool_call_id": None,
            "name": None,
        },
        {
            "role": "tool",
            "content": "Cats are small carnivorous mammals.",
            "parts": [],
            "tool_calls": [],
            "tool_call_id": None,
            "name": "lookup",
        },
        {
            "role": "assistant",
            "content": "It's 22°C in Paris.",
            "parts": [],
            "tool_calls": [],
            "tool_call_id": None,
            "name": None,
        },
        {
            "role": "user",
            "content": "Thanks!",
            "parts": [],
            "tool_calls": [],
            "tool_call_id": None,
            "name": None,
        },
    ]
    assert [t["name"] for t in u.tools] == ["get_weather", "lookup"]
    assert u.tools[1] == {
        "name": "lookup",
        "description": "Look something up",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    }
    assert set(u.params) == {
        "temperature",
        "top_p",
        "max_tokens",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "response_format",
        "tool_choice",
        "logprobs",
        "top_logprobs",
        "parallel_tool_calls",
        "service_tier",
        "user",
    }
    assert u.response is None and u.parse_error == "" and u.output_text == ""
    check_invariants(u)


def test_chat_refusal_and_assistant_audio_become_parts() -> None:
    req = {
        "model": "gpt-4o",
        "messages": [
            {"role": "assistant", "content": None, "refusal": "I can't help with that."},
            {"role": "assistant", "audio": {"id": "audio_abc"}},
        ],
    }
    u = understand_chat(exchange(req, b"", status=0))
    assert u.messages[0]["parts"] == [{"type": "refusal", "text": "I can't help with that."}]
    assert u.messages[1]["parts"] == [{"type": "audio", "id": "audio_abc"}]


# --------------------------------------------------------------------------- errors


def test_error_400_keeps_the_request_and_the_error() -> None:
    req = load("error_400.request.json")
    u = understand_chat(exchange(req, raw("error_400.response.json"), status=400))
    assert u.model == "gpt-4o-mini" and u.params == {"temperature": 3.5}
    assert u.messages[0]["content"] == "Hi"
    assert u.response == load("error_400.response.json")
    assert (u.output_text, u.output_tool_calls, u.finish_reason, u.response_id) == ("", [], "", "")
    assert (u.input_tokens, u.cost_usd, u.incomplete, u.parse_error) == (None, None, False, "")
    check_invariants(u)


def test_error_with_a_non_json_body() -> None:
    req = dict(load("chat_simple.request.json"), stream=True)
    u = understand_chat(exchange(req, b"<html>502 Bad Gateway</html>", status=502, ctype="text/html"))
    assert u.response is None and u.parse_error == "" and u.model == "gpt-4o-mini"


def test_stream_cut_before_any_byte() -> None:
    u = understand_chat(sse_exchange(stream_request("chat_simple"), b"", outcome="client_cancelled"))
    assert u.incomplete and u.response is None and u.parse_error == ""


# ------------------------------------------------- real recorded traffic (tests/fixtures/real-traffic)


def recorded(cassette: str, index: int) -> tuple[bytes, bytes, str]:
    """Request body, response body and content type of one interaction recorded from a real provider."""
    doc = yaml.safe_load((REAL / f"{cassette}.yaml").read_text("utf-8"))
    item = doc["interactions"][index]
    req, resp = item["request"], item["response"]
    body = resp["body"]["string"] if "body" in resp else json.dumps(resp["parsed_body"])
    return json.dumps(req["parsed_body"]).encode(), body.encode(), resp["headers"]["content-type"][0]


def test_groq_stream_usage_read_from_x_groq() -> None:
    """Groq without stream_options reports usage only in ``x_groq.usage`` of its final chunk: the
    recorded Groq stream with the top-level ``usage`` (sent when usage is asked for) removed."""
    req, body, ctype = recorded("test_groq/test_tool_use_failed_error_streaming_with_text", 1)
    events = [e for e in body.decode().split("\n\n") if e.strip()]
    final = json.loads(events[-2].removeprefix("data: "))
    usage = final.pop("usage")
    assert final["x_groq"]["usage"] == usage
    events[-2] = "data: " + json.dumps(final)
    u = understand_chat(exchange(req, "\n\n".join(events).encode() + b"\n\n", ctype=ctype))
    assert (u.input_tokens, u.output_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert u.reasoning_tokens == usage["completion_tokens_details"]["reasoning_tokens"]
    assert u.response["usage"] is None and u.response["x_groq"]["usage"] == usage  # as it arrived
    assert not u.incomplete and u.parse_error == ""


def test_plain_text_answer_is_a_parse_error_not_a_cut_stream() -> None:
    """A gateway answered a non-streaming chat request with a ``text/plain`` page (recorded)."""
    req, body, ctype = recorded("test_openai/test_text_response", 0)
    assert ctype == "text/plain" and not body.startswith((b"{", b"data:"))
    u = understand_chat(exchange(req, body, ctype=ctype))
    assert not u.incomplete and u.response is None and u.chunk_count == 0
    assert u.parse_error.startswith("response: ") and "text/plain" in u.parse_error
    assert (u.model, u.stream) == ("gpt-4o", False)


# --------------------------------------------------------------------------- responses


@pytest.mark.parametrize("name", ["responses_text", "responses_function_call"])
def test_responses_stream_rebuilds_the_non_stream_response(name: str) -> None:
    body = raw(f"{name}.stream.sse")
    s = understand_responses(sse_exchange(stream_request(name), body, path="/v1/responses"))
    n = understand_responses(exchange(load(f"{name}.request.json"), raw(f"{name}.response.json"), path="/v1/responses"))
    assert s.response == load(f"{name}.response.json")
    for field in UNDERSTOOD_OUTPUT:
        assert getattr(s, field) == getattr(n, field), field
    assert not s.incomplete and s.parse_error == "" and s.chunk_count == len(data_events(body))
    assert s.api == "openai.responses" and s.provider == "openai" and s.cost_usd is not None
    check_invariants(s)
    check_invariants(n)


def test_responses_text_fields() -> None:
    u = understand_responses(exchange(load("responses_text.request.json"), raw("responses_text.response.json")))
    assert u.system_prompt == "You are a terse assistant."
    assert u.messages == [
        {
            "role": "user",
            "content": "Name one primary colour.",
            "parts": [],
            "tool_calls": [],
            "tool_call_id": None,
            "name": None,
        }
    ]
    assert u.params == {"temperature": 0.2, "max_output_tokens": 50}
    assert (u.output_text, u.finish_reason, u.output_tool_calls) == ("Blue — like the sky.", "stop", [])
    assert (u.input_tokens, u.output_tokens, u.cached_tokens, u.reasoning_tokens) == (22, 7, 0, 0)
    assert u.response_model == "gpt-4.1-mini-2025-04-14"


def test_responses_function_call_fields() -> None:
    req = load("responses_function_call.request.json")
    u = understand_responses(exchange(req, raw("responses_function_call.response.json")))
    assert u.finish_reason == "tool_calls" and u.output_text == ""
    assert u.output_tool_calls == [
        {
            "id": "call_Zx12Yw34Vu56Ts78Rq90Po12",
            "name": "get_weather",
            "arguments": '{"location":"Paris, France","unit":"celsius"}',
        }
    ]
    assert u.tools[0]["name"] == "get_weather" and u.tools[0]["parameters"]["type"] == "object"
    assert u.messages[0]["content"] == "What's the weather in Paris?" and u.messages[0]["parts"] == []


def _drop_events(body: bytes, *kinds: str) -> bytes:
    blocks = [b for b in body.split(b"\n\n") if b and not any(f"event: {k}\n".encode() in b + b"\n" for k in kinds)]
    return b"\n\n".join(blocks) + b"\n\n"


@pytest.mark.parametrize("name", ["responses_text", "responses_function_call"])
def test_responses_cut_before_completed_rebuilds_from_items(name: str) -> None:
    full = load(f"{name}.response.json")
    body = _drop_events(raw(f"{name}.stream.sse"), "response.completed")
    u = understand_responses(sse_exchange(stream_request(name), body, path="/v1/responses"))
    assert u.incomplete and u.finish_reason == "" and u.response["status"] == "in_progress"
    assert u.response["output"] == full["output"]  # output_item.done arrived: items are whole
    assert u.response["usage"] is None and u.input_tokens is None and u.cost_usd is None
    n = understand_responses(exchange(load(f"{name}.request.json"), raw(f"{name}.response.json")))
    assert (u.output_text, u.output_tool_calls) == (n.output_text, n.output_tool_calls)


@pytest.mark.parametrize("name", ["responses_text", "responses_function_call"])
def test_responses_rebuilds_from_deltas_alone(name: str) -> None:
    """Without any *.done event the deltas alone must give back the same text/arguments."""
    done = (
        "response.completed",
        "response.output_item.done",
        "response.content_part.done",
        "response.output_text.done",
        "response.function_call_arguments.done",
    )
    body = _drop_events(raw(f"{name}.stream.sse"), *done)
    u = understand_responses(sse_exchange(stream_request(name), body, path="/v1/responses"))
    n = understand_responses(exchange(load(f"{name}.request.json"), raw(f"{name}.response.json")))
    assert (u.output_text, u.output_tool_calls) == (n.output_text, n.output_tool_calls)
    assert u.incomplete and u.response["output"][0]["status"] == "in_progress"


def test_responses_every_cut_point() -> None:
    body = raw("responses_text.stream.sse")
    req = stream_request("responses_text")
    for cut in range(0, len(body), 3):
        u = understand_responses(sse_exchange(req, body[:cut], path="/v1/responses"))
        assert u.incomplete
        assert "Blue — like the sky.".startswith(u.output_text), cut
        assert u.finish_reason == "" and u.input_tokens is None and u.parse_error == ""


def _responses_body(*events: dict[str, Any]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def test_responses_incomplete_failed_and_error_events() -> None:
    base = load("responses_text.response.json")
    req = stream_request("responses_text")
    created = {"type": "response.created", "sequence_number": 0, "response": dict(base, status="in_progress")}

    incomplete = dict(base, status="incomplete", incomplete_details={"reason": "max_output_tokens"})
    u = understand_responses(
        sse_exchange(req, _responses_body(created, {"type": "response.incomplete", "response": incomplete}))
    )
    assert u.finish_reason == "max_output_tokens" and not u.incomplete and u.output_text == "Blue — like the sky."

    failed = dict(base, status="failed", output=[], error={"code": "server_error", "message": "boom"})
    u = understand_responses(
        sse_exchange(req, _responses_body(created, {"type": "response.failed", "response": failed}))
    )
    assert u.finish_reason == "failed" and not u.incomplete and u.response["error"]["code"] == "server_error"

    error = {
        "type": "error",
        "code": "rate_limit_exceeded",
        "message": "slow down",
        "param": None,
        "sequence_number": 1,
    }
    u = understand_responses(sse_exchange(req, _responses_body(created, error)))
    assert u.incomplete and u.response["error"] == {
        "code": "rate_limit_exceeded",
        "message": "slow down",
        "param": None,
    }

    u = understand_responses(sse_exchange(req, _responses_body(error)))
    assert u.incomplete and u.response == {
        "error": {"code": "rate_limit_exceeded", "message": "slow down", "param": None}
    }


def test_responses_reasoning_summary_stream() -> None:
    req = {"model": "o4-mini", "input": "hi", "stream": True}
    rs = {"id": "rs_1", "type": "reasoning", "summary": []}
    body = _responses_body(
        {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress", "output": []}},
        {"type": "response.output_item.added", "output_index": 0, "item": rs},
        {
            "type": "response.reasoning_summary_part.added",
            "output_index": 0,
            "summary_index": 0,
            "part": {"type": "summary_text", "text": ""},
        },
        {
            "type": "response.reasoning_summary_text.delta",
            "output_index": 0,
            "summary_index": 0,
            "delta": "Think",
        },
        {
            "type": "response.reasoning_summary_text.delta",
            "output_index": 0,
            "summary_index": 0,
            "delta": "ing.",
        },
    )
    u = understand_responses(sse_exchange(req, body, path="/v1/responses"))
    assert u.response["output"] == [
        {"id": "rs_1", "type": "reasoning", "summary": [{"type": "summary_text", "text": "Thinking."}]}
    ]
    assert u.incomplete and u.ttft_ms is None  # reasoning is not answer content


def test_responses_conversation_request() -> None:
    u = understand_responses(exchange(load("responses_conversation.request.json"), b"", status=0))
    assert u.system_prompt == "You are a weather bot.\n\nPrefer metric units."
    pdf = "data:application/pdf;base64,JVBERi0xLjQK"
    assert u.messages == [
        {
            "role": "user",
            "content": "Weather in Paris? Here is a map.",
            "parts": [
                {"type": "text", "text": "Weather in Paris? Here is a map."},
                {"type": "image", "url": "data:image/jpeg;base64,/9j/4AAQSkZJRgABAQ==", "detail": "low"},
                {"type": "file", "filename": "notes.pdf", "data_length": len(pdf)},
            ],
            "tool_calls": [],
            "tool_call_id": None,
            "name": None,
        },
        {
            "role": "assistant",
            "content": "",
            "parts": [{"type": "thinking", "text": "Need the weather tool.", "encrypted": True}],
            "tool_calls": [{"id": "call_Zx12", "name": "get_weather", "arguments": '{"location":"Paris, France"}'}],
            "tool_call_id": None,
            "name": None,
        },
        {
            "role": "tool",
            "content": '{"temperature":22}',
            "parts": [],
            "tool_calls": [],
            "tool_call_id": "call_Zx12",
            "name": None,
        },
        {
            "role": "assistant",
            "content": "It is 22°C in Paris.",
            "parts": [],
            "tool_calls": [],
            "tool_call_id": None,
            "name": None,
        },
        {
            "role": "user",
            "content": "And tomorrow?",
            "parts": [],
            "tool_calls": [],
            "tool_call_id": None,
            "name": None,
        },
    ]
    assert u.tools[1] == {"name": "web_search_preview", "description": "", "parameters": None}
    assert u.params == {
        "reasoning": {"effort": "low", "summary": "auto"},
        "max_output_tokens": 500,
        "store": False,
        "include": ["reasoning.encrypted_content"],
    }


# --------------------------------------------------------------------------- legacy completions


def test_completions_stream_rebuilds_the_non_stream_response() -> None:
    body = raw("completions.stream.sse")
    path = "/v1/completions"
    s = understand_completions(sse_exchange(stream_request("completions"), body, path=path))
    n = understand_completions(exchange(load("completions.request.json"), raw("completions.response.json"), path=path))
    assert s.response == load("completions.response.json")
    for field in UNDERSTOOD_OUTPUT:
        assert getattr(s, field) == getattr(n, field), field
    assert s.output_text == "\n\nThis is indeed a test" and s.finish_reason == "length"
    assert s.messages == [
        {
            "role": "user",
            "content": "Say this is a test",
            "parts": [],
            "tool_calls": [],
            "tool_call_id": None,
            "name": None,
        }
    ]
    assert n.params == {"max_tokens": 7, "temperature": 0}
    assert (s.input_tokens, s.output_tokens) == (5, 7) and not s.incomplete and s.chunk_count == 8
    assert s.ttft_ms == 100.0 and s.cost_usd is not None
    check_invariants(s)


def test_completions_prompt_shapes() -> None:
    def messages(prompt: Any) -> list[tuple[str, list[dict[str, Any]]]]:
        u = understand_completions(exchange({"model": "m", "prompt": prompt}, b"", status=0))
        return [(m["content"], m["parts"]) for m in u.messages]

    assert messages(["a", "b"]) == [("a", []), ("b", [])]
    assert messages([1, 2, 3]) == [("", [{"type": "tokens", "count": 3}])]
    assert messages([[1, 2], [3]]) == [
        ("", [{"type": "tokens", "count": 2}]),
        ("", [{"type": "tokens", "count": 1}]),
    ]
    assert messages(None) == []


def test_completions_cut_stream() -> None:
    body = raw("completions.stream.sse")
    cut = body[: body.index(b'" indeed"') + 30]
    u = understand_completions(sse_exchange(stream_request("completions"), cut, path="/v1/completions"))
    assert u.incomplete and u.output_text == "\n\nThis is" and u.finish_reason == "" and u.output_tokens is None


# --------------------------------------------------------------------------- embeddings, models


@pytest.mark.parametrize(
    ("name", "texts", "dims"),
    [
        ("embeddings_string", ["The food was delicious and the waiter..."], 8),
        ("embeddings_array", ["first sentence to embed", "second one"], 4),
    ],
)
def test_embeddings(name: str, texts: list[str], dims: int) -> None:
    resp = load(f"{name}.response.json")
    u = understand_embeddings(
        exchange(load(f"{name}.request.json"), raw(f"{name}.response.json"), path="/v1/embeddings")
    )
    assert u.api == "openai.embeddings" and u.model == "text-embedding-3-small"
    assert [(m["role"], m["content"]) for m in u.messages] == [("user", t) for t in texts]
    assert u.output_text == "" and u.output_tool_calls == [] and u.finish_reason == ""
    assert u.response["usage"] == resp["usage"] and u.response["model"] == resp["model"]
    assert u.response["data"] == [{"object": "embedding", "index": i, "dimensions": dims} for i in range(len(texts))]
    assert u.input_tokens == resp["usage"]["prompt_tokens"] and u.output_tokens is None
    assert u.params["dimensions"] == dims
    assert u.cost_usd == cost_usd("openai", "text-embedding-3-small", u.input_tokens, 0, None)
    assert u.cost_usd is not None and u.cost_usd > 0 and u.parse_error == ""
    check_invariants(u)


def test_embeddings_base64_and_token_inputs() -> None:
    import base64
    import struct

    vec = base64.b64encode(struct.pack("<5f", 0.1, 0.2, 0.3, 0.4, 0.5)).decode()
    resp = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": vec}], "model": "m"}
    req = {"model": "m", "input": [[1, 2, 3]], "encoding_format": "base64"}
    u = understand_embeddings(exchange(req, json.dumps(resp).encode()))
    assert u.response["data"] == [{"object": "embedding", "index": 0, "dimensions": 5}]
    assert u.messages[0]["parts"] == [{"type": "tokens", "count": 3}]
    assert u.cost_usd is None  # no usage reported


def test_models() -> None:
    u = understand_models(exchange(b"", raw("models.response.json"), path="/v1/models", method="GET"))
    assert u.api == "openai.models" and u.response == load("models.response.json")
    assert u.parse_error == "" and u.messages == [] and u.model == ""
    one = load("models.response.json")["data"][0]
    u = understand_models(exchange(b"", json.dumps(one).encode(), path="/v1/models/gpt-4o-mini", method="GET"))
    assert u.model == "gpt-4o-mini" and u.response == one
    check_invariants(u)


def test_dispatch_reaches_these_functions() -> None:
    from prompttap.collector.apis import understand

    cases = {
        "/v1/chat/completions": "openai.chat",
        "/v1/responses": "openai.responses",
        "/v1/completions": "openai.completions",
        "/v1/embeddings": "openai.embeddings",
        "/v1/models": "openai.models",
    }
    for path, api in cases.items():
        u = understand(exchange({"model": "gpt-4o-mini"}, b"{}", path=path))
        assert u.api == api and u.provider == "openai", path


# --------------------------------------------------------------------------- pricing


def test_pricing() -> None:
    got = cost_usd("openai", "gpt-4o-mini", 1000, 100, 200)
    want = calc_price(
        Usage(input_tokens=1000, output_tokens=100, cache_read_tokens=200),
        "gpt-4o-mini",
        provider_id="openai",
    )
    assert got == pytest.approx(float(want.total_price))
    assert got < cost_usd("openai", "gpt-4o-mini", 1000, 100, 0)  # cached input is cheaper
    assert cost_usd("openai", "no-such-model-xyz", 10, 10, 0) is None
    assert cost_usd("no-such-provider", "gpt-4o-mini", 10, 10, 0) is None
    assert cost_usd("openai", "gpt-4o-mini", None, 10, 0) is None
    assert cost_usd("openai", "gpt-4o-mini", 10, None, 0) is None
    assert cost_usd("openai", "gpt-4o-mini", 10, 5, 20) is None  # cached > input: inconsistent
    assert cost_usd("openai", "gpt-4o-mini", -1, 5, 0) is None
    assert cost_usd("openai", "", 10, 5, 0) is None


# --------------------------------------------------------------------------- re-chunking property

RECHUNK_CASES = [
    ("chat_simple", understand_chat),
    ("chat_tools_parallel", understand_chat),
    ("chat_unicode", understand_chat),
    ("responses_text", understand_responses),
    ("responses_function_call", understand_responses),
    ("completions", understand_completions),
]


@pytest.mark.parametrize(("name", "fn"), RECHUNK_CASES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_rechunking_changes_only_timing(name: str, fn: Any, data: st.DataObject) -> None:
    body = raw(f"{name}.stream.sse")
    req = stream_request(name)
    baseline = fn(sse_exchange(req, body))
    cuts = sorted(data.draw(st.sets(st.integers(1, len(body) - 1), max_size=80), label="cuts"))
    bounds = [0, *cuts, len(body)]
    timing = tuple((7.5 * i + 3.0, b - a) for i, (a, b) in enumerate(itertools.pairwise(bounds)))
    u = fn(sse_exchange(req, body, timing=timing, duration=5000.0))

    assert u.response == baseline.response and u.output_text == baseline.output_text
    target = first_content_byte(body)
    chunk = next(i for i, end in enumerate(bounds[1:]) if end > target)
    assert u.ttft_ms == timing[chunk][0]
    assert u.tokens_per_second == pytest.approx(u.output_tokens / ((5000.0 - u.ttft_ms) / 1000.0))


# --------------------------------------------------------------------------- malformed inputs

FUNCTIONS = [
    (understand_chat, "/v1/chat/completions"),
    (understand_responses, "/v1/responses"),
    (understand_completions, "/v1/completions"),
    (understand_embeddings, "/v1/embeddings"),
    (understand_models, "/v1/models"),
]

API_OF = {path: fn.__name__.replace("understand_", "openai.") for fn, path in FUNCTIONS}

MALFORMED: list[tuple[bytes, bytes]] = [
    (b"", b""),
    (b"not json", b"not json either"),
    (b"[1, 2, 3]", b'"a string"'),
    (b'{"messages": "hello"}', b'{"choices": "nope"}'),
    (b'{"messages": [1, null, "x", {"role": 5, "content": 7}]}', b'{"choices": [null, 1, {"message": 3}]}'),
    (b'{"messages": [{"role": "assistant", "tool_calls": null, "content": {"type": "text"}}]}', b"{}"),
    (b'{"messages": [{"role": "user", "content": [null, 1, {"type": "image_url", "image_url": 3}]}]}', b"{}"),
    (b'{"input": 5, "instructions": ["x", {"role": "system", "content": "s"}]}', b'{"output": {"a": 1}}'),
    (b'{"input": [{"type": "function_call", "arguments": {"a": [1]}}, {"type": 3}]}', b'{"usage": []}'),
    (
        b'{"model": 1, "stream": "yes", "tools": {"a": 1}}',
        b'{"usage": {"prompt_tokens": -3, "completion_tokens": 1.5}}',
    ),
    (b'{"stream": true}', b'data: {garbage\n\ndata: [1,2]\n\ndata: null\n\ndata: {"choices": 5}\n\n'),
    (b'{"stream": true}', b'data: {"choices":[{"index":"0","delta":{"content":5}}]}\n\ndata: [DONE]\n\n'),
    (
        b'{"stream": true}',
        b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":-1},{"function":7}]}}]}\n\n',
    ),
    (
        b'{"stream": true}',
        b'event: response.output_text.delta\ndata: {"output_index": 0, "content_index": 99999999}\n\n',
    ),
    (
        b'{"stream": true}',
        b'data: {"type":"response.output_item.added","output_index":0,"item":{"content":5}}\n\n'
        b'data: {"type":"response.output_text.delta","output_index":0,"content_index":3,"delta":7}\n\n',
    ),
    (b'{"stream": true}', b"\xff\xfe\x00data: \x80\x81\n\n\xc3("),
    (b"\xff\xfe\x00\x01", b"\x89PNG\r\n\x1a\n\x00\x00"),
    (
        b'{"messages": [{"role": "user", "content": "\\ud83d"}]}',
        b'{"choices": [{"message": {"content": "\\udc00"}}]}',
    ),
    (b"[" * 5000 + b"]" * 5000, b"[" * 5000 + b"]" * 5000),
    (b'{"stream": true}', b"data: " + b"[" * 5000 + b"]" * 5000 + b"\n\n"),
    (b'{"input": "1' + b"1" * 5000 + b'"}', b'{"usage": {"prompt_tokens": ' + b"9" * 5000 + b"}}"),
]


@pytest.mark.parametrize(("req", "resp"), MALFORMED)
@pytest.mark.parametrize("status", [200, 500])
def test_malformed_corpus_never_raises(req: bytes, resp: bytes, status: int) -> None:
    for fn, path in FUNCTIONS:
        for ctype in ("application/json", "text/event-stream"):
            u = fn(exchange(req, resp, path=path, status=status, ctype=ctype, timing=((1.0, 3), (2.0, -5))))
            check_invariants(u)


def test_malformed_request_notes() -> None:
    u = understand_chat(exchange(b'{"messages": "hello"}', b""))
    assert "messages is not a list" in u.parse_error
    u = understand_chat(exchange(b'{"messages": [{"role": "user", "content": 7}]}', b""))
    assert "content is not text or parts" in u.parse_error
    u = understand_chat(exchange(b"nope", raw("chat_simple.response.json")))
    assert u.parse_error.startswith("request:") and u.output_text == "Hello there, friend!"
    u = understand_chat(sse_exchange(stream_request("chat_simple"), b"data: {bad\n\n" + raw("chat_simple.stream.sse")))
    assert "1 stream event(s) are not JSON" in u.parse_error and u.output_text == "Hello there, friend!"


KEYS = [
    "model",
    "messages",
    "role",
    "content",
    "type",
    "text",
    "tool_calls",
    "function",
    "name",
    "arguments",
    "id",
    "index",
    "choices",
    "delta",
    "message",
    "finish_reason",
    "usage",
    "prompt_tokens",
    "completion_tokens",
    "prompt_tokens_details",
    "cached_tokens",
    "input",
    "output",
    "instructions",
    "tools",
    "functions",
    "response",
    "item",
    "output_index",
    "content_index",
    "summary_index",
    "call_id",
    "summary",
    "image_url",
    "url",
    "input_audio",
    "data",
    "file",
    "file_data",
    "stream",
    "prompt",
    "embedding",
    "logprobs",
    "refusal",
    "audio",
    "status",
    "incomplete_details",
    "reason",
    "error",
    "part",
    "function_call",
    "input_tokens",
    "output_tokens",
]
TYPES = [
    "text",
    "image_url",
    "input_audio",
    "file",
    "input_text",
    "input_image",
    "input_file",
    "output_text",
    "refusal",
    "message",
    "function_call",
    "function_call_output",
    "reasoning",
    "custom_tool_call",
    "web_search_call_output",
    "response.created",
    "response.output_item.added",
    "response.output_item.done",
    "response.output_text.delta",
    "response.output_text.done",
    "response.function_call_arguments.delta",
    "response.content_part.added",
    "response.reasoning_summary_text.delta",
    "response.completed",
    "response.incomplete",
    "response.failed",
    "error",
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "completed",
    "incomplete",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**40), max_value=2**40)
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(TYPES)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=3), inner, max_size=5)
    ),
    max_leaves=30,
)


@st.composite
def sse_bodies(draw: st.DrawFn) -> bytes:
    parts = []
    for value in draw(st.lists(json_values, max_size=8)):
        line = f"data: {json.dumps(value)}\n\n"
        if draw(st.booleans()):
            line = f"event: {draw(st.sampled_from(TYPES))}\n" + line
        parts.append(line)
    if draw(st.booleans()):
        parts.append("data: [DONE]\n\n")
    body = "".join(parts).encode()
    return body[: draw(st.integers(0, len(body)))] if draw(st.booleans()) else body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    req=json_values,
    resp=json_values,
    sse=sse_bodies(),
    binary=st.binary(max_size=64),
    status=st.sampled_from([0, 200, 201, 400, 429, 500]),
    stream=st.booleans(),
    timing=st.lists(st.tuples(st.floats(), st.integers(-5, 500)), max_size=5),
)
def test_arbitrary_json_never_raises(
    req: Any, resp: Any, sse: bytes, binary: bytes, status: int, stream: bool, timing: list[tuple[float, int]]
) -> None:
    if stream and isinstance(req, dict):
        req = dict(req, stream=True)
    req_body = json.dumps(req).encode()
    bodies = (json.dumps(resp).encode(), sse, binary)
    for fn, path in FUNCTIONS:
        for body in bodies:
            u = fn(exchange(req_body, body, path=path, status=status, timing=tuple(timing)))
            check_invariants(u)
            assert u.api == API_OF[path] and u.provider == "openai"
            assert u.cost_usd is None or (math.isfinite(u.cost_usd) and u.cost_usd >= 0)
        check_invariants(fn(exchange(binary, binary, path=path, status=status)))


@settings(max_examples=200, deadline=None)
@given(value=json_values)
def test_structured_garbage_in_known_places(value: Any) -> None:
    """Arbitrary values planted where the parsers look, inside otherwise valid shapes."""
    reqs = [
        {"model": "gpt-4o", "messages": [{"role": "user", "content": value}]},
        {"model": "gpt-4o", "messages": [{"role": "assistant", "tool_calls": value, "function_call": value}]},
        {"model": "gpt-4o", "messages": value, "tools": value},
        {
            "model": "gpt-4o",
            "input": [{"type": "message", "role": "user", "content": value}],
            "instructions": value,
        },
        {"model": "gpt-4o", "input": [{"type": "function_call_output", "output": value}, value]},
        {"model": "gpt-4o", "prompt": value, "input": value},
    ]
    chunk = {
        "id": "x",
        "choices": [{"index": 0, "delta": {"content": value, "tool_calls": [value]}, "logprobs": value}],
    }
    events = [
        chunk,
        {"choices": [{"index": 0, "delta": value, "finish_reason": value}], "usage": value},
        {"type": "response.output_item.added", "output_index": 0, "item": value},
        {"type": "response.output_text.delta", "output_index": 0, "content_index": value, "delta": value},
        {
            "type": "response.completed",
            "response": {"output": [value], "usage": value, "status": "completed"},
        },
    ]
    sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events).encode()
    resp = json.dumps({"choices": [{"message": value}], "output": value, "data": value, "usage": value}).encode()
    for req in reqs:
        for fn, path in FUNCTIONS:
            for body in (sse, resp):
                check_invariants(fn(exchange(dict(req, stream=True), body, path=path)))
