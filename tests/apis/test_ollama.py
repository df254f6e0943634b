"""Ollama native API understanding (/api/chat, /api/generate, /api/embed) against hand-written
fixtures in the shape Ollama documents: the NDJSON stream and the ``stream: false`` answer of
one same generation."""

# ruff: noqa: RUF001  (look-alike characters are deliberate multi-byte test text)
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prompttap.collector.apis.base import Exchange, Understanding, message
from prompttap.collector.apis.events import parse_ndjson_lines
from prompttap.collector.apis.ollama import understand_chat, understand_embed, understand_generate
from prompttap.collector.apis.timing import ndjson_lines_at
from tests.apis.support import chunk_at, stream_timings

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "apis" / "ollama"
DELIVERY = {"stream", "chunk_count", "ttft_ms"}
Understand = Callable[[Exchange], Understanding]
CASES: dict[str, tuple[str, Understand]] = {
    "chat_text": ("/api/chat", understand_chat),
    "chat_tools": ("/api/chat", understand_chat),
    "generate": ("/api/generate", understand_generate),
}


def request(case: str, stream: bool | None) -> bytes:
    req = json.loads((FIX / case / "request.json").read_text("utf-8"))
    if stream is None:
        req.pop("stream", None)  # Ollama streams when "stream" is absent
    else:
        req["stream"] = stream
    return json.dumps(req, ensure_ascii=False, separators=(",", ":")).encode()


def chunked(body: bytes, size: int = 9, start: float = 300.0, step: float = 20.0) -> tuple[tuple[float, int], ...]:
    return tuple((start + step * i, min(size, len(body) - off)) for i, off in enumerate(range(0, len(body), size)))


def exchange(
    case: str,
    stream: bool | None,
    *,
    body: bytes | None = None,
    status: int = 200,
    timing: tuple[tuple[float, int], ...] | None = None,
    path: str | None = None,
    req: bytes | None = None,
) -> Exchange:
    if body is None:
        body = (FIX / case / ("response.json" if stream is False else "stream.ndjson")).read_bytes()
    return Exchange(
        method="POST",
        path=path or CASES.get(case, ("/api/embed", None))[0],
        query="",
        request_body=request(case, stream) if req is None else req,
        response_body=body,
        response_content_type="application/json" if stream is False else "application/x-ndjson",
        status_code=status,
        outcome="ok",
        duration_ms=3000.0,
        stream_timing=chunked(body) if timing is None else timing,
    )


def fields(u: Understanding, skip: set[str] = DELIVERY) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(u).items() if k not in skip}


def handwritten_response(case: str) -> Any:
    return json.loads((FIX / case / "response.json").read_text("utf-8"))


# -- hand-written pairs: stream == stream:false -----------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_stream_reassembles_to_the_non_streamed_answer(case: str) -> None:
    understand = CASES[case][1]
    plain = understand(exchange(case, stream=False))
    streamed = understand(exchange(case, stream=None))  # absent "stream" means a stream
    assert plain.parse_error == streamed.parse_error == ""
    assert plain.response == handwritten_response(case)
    assert streamed.response == handwritten_response(case)
    assert fields(streamed) == fields(plain)
    assert (plain.stream, streamed.stream) == (False, True)
    assert (plain.chunk_count, plain.ttft_ms) == (0, None)
    assert streamed.chunk_count == (FIX / case / "stream.ndjson").read_bytes().count(b"\n")
    assert streamed.incomplete is False
    final = handwritten_response(case)
    assert streamed.tokens_per_second == pytest.approx(final["eval_count"] / (final["eval_duration"] / 1e9))


def test_chat_as_anythingllm_sends_it() -> None:
    u = understand_chat(exchange("chat_text", stream=True))
    req = json.loads((FIX / "chat_text" / "request.json").read_text("utf-8"))
    png = req["messages"][3]["images"][0]
    assert u.api == "ollama.chat" and u.provider == "ollama"
    assert u.model == u.response_model == "llama3.2:3b"
    assert u.system_prompt == req["messages"][0]["content"]  # RAG context lives in the system message
    assert u.messages == [
        message("user", "How many PTO days do I get?"),
        message("assistant", "You get 25 days of PTO per year."),
        message(
            "user",
            "Et combien puis-je en reporter ? Voici ma fiche 📄",
            parts=[
                {"type": "text", "text": "Et combien puis-je en reporter ? Voici ma fiche 📄"},
                {"type": "image", "url": f"data:image/png;base64,{png}"},
            ],
        ),
    ]
    assert u.params == {"temperature": 0.7, "num_ctx": 4096, "keep_alive": 300}
    assert u.output_text == "D'après la politique, vous pouvez reporter jusqu'à 5 jours 🗓️."
    assert (u.finish_reason, u.input_tokens, u.output_tokens) == ("stop", 187, 17)
    assert u.cached_tokens is None and u.reasoning_tokens is None
    assert u.cost_usd is None  # local model: no price


def test_chat_with_thinking_and_parallel_tool_calls() -> None:
    u = understand_chat(exchange("chat_tools", stream=True))
    assert u.system_prompt == "You are a weather bot."
    assert u.messages[1] == message(
        "assistant",
        "",
        tool_calls=[{"id": "get_weather", "name": "get_weather", "arguments": '{"city":"Tokyo"}'}],
    )
    assert u.messages[2] == message(
        "tool", '{"temp_c": 21, "sky": "晴れ"}', tool_call_id="get_weather", name="get_weather"
    )
    assert u.output_tool_calls == [
        {"id": "call_q2a9x1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"id": "call_7hk3m0", "name": "get_weather", "arguments": '{"city":"Berlin"}'},
    ]
    assert u.output_text == ""
    assert u.response["message"]["thinking"] == "The user wants Paris and Berlin; call get_weather twice."
    assert u.tools == [
        {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        }
    ]
    assert u.params == {"temperature": 0.6, "top_p": 0.95, "seed": 7, "think": True}


def test_thinking_history_is_a_part() -> None:
    req = {"model": "qwen3", "messages": [{"role": "assistant", "content": "42", "thinking": "6 × 7"}]}
    u = understand_chat(exchange("chat_text", stream=True, req=json.dumps(req).encode()))
    assert u.messages == [
        message("assistant", "42", parts=[{"type": "thinking", "text": "6 × 7"}, {"type": "text", "text": "42"}])
    ]


def test_generate() -> None:
    u = understand_generate(exchange("generate", stream=None))
    assert u.api == "ollama.generate"
    assert u.system_prompt == "You are a physics tutor."
    assert u.messages == [message("user", "Why is the sky blue? Réponds en une phrase.")]
    assert u.output_text == "Le ciel est bleu car l'air diffuse davantage la lumière bleue (diffusion Rayleigh)."
    assert u.params == {
        "seed": 42,
        "num_predict": 100,
        "temperature": 0,
        "stop": ["\n\n"],
        "keep_alive": "5m",
    }
    assert u.response["context"] == [128006, 9125, 128007, 271, 2675, 527, 264]
    assert (u.input_tokens, u.output_tokens, u.finish_reason) == (38, 22, "stop")


def test_embed_and_legacy_embeddings() -> None:
    u = understand_embed(exchange("embed", stream=False))
    assert u.api == "ollama.embed" and u.stream is False
    assert u.messages == [
        message("user", "Paris est la capitale de la France."),
        message("user", "東京は日本の首都です。"),
    ]
    assert u.params == {"num_ctx": 1000, "truncate": True, "keep_alive": "5m"}
    assert u.response == handwritten_response("embed")
    assert (u.response_model, u.input_tokens, u.output_tokens, u.chunk_count) == (
        "nomic-embed-text",
        21,
        None,
        0,
    )
    assert u.parse_error == "" and u.output_text == ""

    legacy = exchange(
        "embed",
        stream=False,
        path="/api/embeddings",
        req=b'{"model":"all-minilm","prompt":"Here is an article about llamas..."}',
        body=b'{"embedding":[0.5670403838157654,0.009260174818336964,0.23178744316101074]}',
    )
    u = understand_embed(legacy)
    assert u.messages == [message("user", "Here is an article about llamas...")]
    assert u.model == "all-minilm" and u.response == {
        "embedding": [0.5670403838157654, 0.009260174818336964, 0.23178744316101074]
    }
    assert u.input_tokens is None and u.parse_error == ""


# -- timing ---------------------------------------------------------------------------------


def first_content_end(body: bytes) -> int:
    """End of the first line that carries text, thinking or tool calls (found without the parser)."""
    pos = 0
    for line in body.split(b"\n"):
        pos += len(line) + 1
        obj = json.loads(line)
        m = obj.get("message", {})
        if obj.get("response") or m.get("content") or m.get("thinking") or m.get("tool_calls"):
            return pos - 1
    raise AssertionError("no content")


@pytest.mark.parametrize("case", list(CASES))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_any_rechunking_gives_the_same_understanding(case: str, data: st.DataObject) -> None:
    understand = CASES[case][1]
    body = (FIX / case / "stream.ndjson").read_bytes()
    reference = understand(exchange(case, stream=True))
    timing = data.draw(stream_timings(len(body)))
    u = understand(exchange(case, stream=True, timing=timing))
    assert fields(u, {"ttft_ms"}) == fields(reference, {"ttft_ms"})
    assert u.ttft_ms == chunk_at(timing, first_content_end(body))


# -- cut-off and failing streams ----------------------------------------------------------------


def test_cut_off_stream_is_incomplete_and_invents_nothing() -> None:
    full = (FIX / "chat_tools" / "stream.ndjson").read_bytes()
    cut = full[: full.rindex(b'{"model"') + 30]  # torn inside the done line
    u = understand_chat(exchange("chat_tools", stream=True, body=cut))
    assert u.incomplete is True and u.parse_error == ""
    assert u.finish_reason == "" and u.response["done"] is False
    assert u.input_tokens is None and u.output_tokens is None and u.tokens_per_second is None
    assert [c["id"] for c in u.output_tool_calls] == ["call_q2a9x1", "call_7hk3m0"]
    assert u.chunk_count == 6


@pytest.mark.parametrize("case", list(CASES))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_cut_never_raises_and_keeps_a_prefix(case: str, data: st.DataObject) -> None:
    understand = CASES[case][1]
    full = (FIX / case / "stream.ndjson").read_bytes()
    whole = understand(exchange(case, stream=True))
    cut = data.draw(st.integers(0, len(full)))
    u = understand(exchange(case, stream=True, body=full[:cut]))
    assert u.incomplete is (cut < len(full) - 1)  # the done line is whole even without its "\n"
    assert whole.output_text.startswith(u.output_text)
    assert u.messages == whole.messages


def test_error_line_mid_stream() -> None:
    full = (FIX / "chat_text" / "stream.ndjson").read_bytes().split(b"\n")
    body = b"\n".join(full[:3]) + b'\n{"error":"an error was encountered while running the model: unexpected EOF"}\n'
    u = understand_chat(exchange("chat_text", stream=True, body=body))
    assert u.incomplete is True
    assert u.parse_error == "stream error: an error was encountered while running the model: unexpected EOF"
    assert u.output_text == "D'après la politique, vous pouvez"
    assert u.chunk_count == 4


def test_http_error_keeps_the_request() -> None:
    err = {"error": 'model "llama9" not found, try pulling it first'}
    u = understand_chat(exchange("chat_text", stream=True, body=json.dumps(err).encode(), status=404))
    assert u.response == err
    assert u.model == "llama3.2:3b" and len(u.messages) == 3 and u.system_prompt
    assert (u.output_text, u.parse_error, u.incomplete, u.chunk_count) == ("", "", False, 0)


def test_stream_false_answered_as_ndjson_is_still_read() -> None:
    body = (FIX / "generate" / "stream.ndjson").read_bytes()
    u = understand_generate(exchange("generate", stream=False, body=body))
    assert u.response == handwritten_response("generate") and u.chunk_count == 8 and u.stream is False


# -- never raises -------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=25,
)
KEYS = st.sampled_from(
    [
        "model",
        "messages",
        "role",
        "content",
        "images",
        "tool_calls",
        "function",
        "arguments",
        "name",
        "tools",
        "options",
        "stream",
        "prompt",
        "input",
        "message",
        "response",
        "done",
        "done_reason",
        "eval_count",
        "eval_duration",
        "prompt_eval_count",
        "thinking",
        "error",
        "embeddings",
    ]
)
SHAPED = st.recursive(
    JSON, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=6), max_leaves=40
)


@settings(max_examples=300, deadline=None)
@given(
    req=SHAPED,
    lines=st.lists(SHAPED, max_size=5),
    tail=st.binary(max_size=20),
    status=st.sampled_from([0, 200, 200, 500]),
    which=st.sampled_from([understand_chat, understand_generate, understand_embed]),
)
def test_arbitrary_json_never_raises(req: Any, lines: list[Any], tail: bytes, status: int, which: Understand) -> None:
    body = b"".join(json.dumps(v).encode() + b"\n" for v in lines) + tail
    x = Exchange(
        "POST",
        "/api/chat",
        "",
        json.dumps(req).encode(),
        body,
        "application/x-ndjson",
        status,
        "ok",
        1.0,
        chunked(body),
    )
    assert isinstance(which(x), Understanding)


# -- ndjson_lines_at (collector/apis/timing.py) -------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(['{"a":1}', '{"b":"é"}', "{", "  ", "\n", "\r\n", "x", "[1]"]), max_size=20))
def test_ndjson_lines_at_matches_parse_ndjson_lines(pieces: list[str]) -> None:
    text = "".join(pieces)
    lines, complete = ndjson_lines_at(text.encode())
    expected, expected_complete = parse_ndjson_lines(text)
    got = [line for line, _ in lines]
    tail = text.rsplit("\n", 1)[-1]
    if expected_complete or not tail.strip():  # on purpose, a blank tail tears nothing (as in parse_sse)
        assert (got, complete) == (expected, True)
    elif got != expected:  # differs on purpose: an unterminated line that is whole JSON is kept
        assert got == [*expected, tail] and complete and isinstance(json.loads(tail), dict | list)
    else:
        assert complete is False
    assert all(text.encode()[:end].endswith(line.encode()) for line, end in lines)
