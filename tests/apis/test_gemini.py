"""Gemini generateContent / streamGenerateContent understanding against hand-written fixtures
in the shape Google documents: an SSE stream (``?alt=sse``) and a JSON-array stream, each with
the non-streamed answer of one same generation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prompttap.collector.apis.base import Exchange, Understanding, message
from prompttap.collector.apis.gemini import understand_generate
from tests.apis.support import chunk_at, stream_timings

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "apis" / "gemini"
DELIVERY = {"stream", "chunk_count", "ttft_ms", "tokens_per_second"}
# case -> (model, stream file, query, content type)
CASES = {
    "text_sse": ("gemini-2.5-flash", "stream.txt", "alt=sse", "text/event-stream"),
    "function_call_array": ("gemini-2.0-flash", "stream.json", "", "application/json; charset=UTF-8"),
}


def chunked(body: bytes, size: int = 11, start: float = 450.0, step: float = 25.0) -> tuple[tuple[float, int], ...]:
    return tuple((start + step * i, min(size, len(body) - off)) for i, off in enumerate(range(0, len(body), size)))


def exchange(
    case: str,
    stream: bool,
    *,
    body: bytes | None = None,
    status: int = 200,
    timing: tuple[tuple[float, int], ...] | None = None,
    req: bytes | None = None,
) -> Exchange:
    model, stream_file, query, ctype = CASES[case]
    if body is None:
        body = (FIX / case / (stream_file if stream else "response.json")).read_bytes()
    return Exchange(
        method="POST",
        path=f"/v1beta/models/{model}:{'streamGenerateContent' if stream else 'generateContent'}",
        query=query if stream else "",
        request_body=(FIX / case / "request.json").read_bytes() if req is None else req,
        response_body=body,
        response_content_type=ctype if stream else "application/json; charset=UTF-8",
        status_code=status,
        outcome="ok",
        duration_ms=4000.0,
        stream_timing=chunked(body) if timing is None else timing,
    )


def fields(u: Understanding, skip: set[str] = DELIVERY) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(u).items() if k not in skip}


def handwritten_response(case: str) -> Any:
    return json.loads((FIX / case / "response.json").read_text("utf-8"))


# -- hand-written pairs: merged stream == generateContent -------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_stream_merges_to_the_non_streamed_response(case: str) -> None:
    plain = understand_generate(exchange(case, stream=False))
    streamed = understand_generate(exchange(case, stream=True))
    assert plain.parse_error == streamed.parse_error == ""
    assert plain.response == handwritten_response(case)
    assert streamed.response == handwritten_response(case)
    assert fields(streamed) == fields(plain)
    assert (plain.stream, streamed.stream) == (False, True)
    assert (plain.chunk_count, plain.ttft_ms, plain.tokens_per_second) == (0, None, None)
    assert streamed.chunk_count == {"text_sse": 5, "function_call_array": 3}[case]
    assert streamed.incomplete is False


def test_sse_with_thoughts_and_an_image() -> None:
    u = understand_generate(exchange("text_sse", stream=True))
    req = json.loads((FIX / "text_sse" / "request.json").read_text("utf-8"))
    jpeg = req["contents"][0]["parts"][1]["inlineData"]["data"]
    assert (u.api, u.provider) == ("gemini.generate", "google")
    assert u.model == u.response_model == "gemini-2.5-flash"
    assert u.system_prompt == "Tu es un guide culinaire.\nRéponds brièvement."
    assert u.messages == [
        message(
            "user",
            "Qu'est-ce que c'est ?",
            parts=[
                {"type": "text", "text": "Qu'est-ce que c'est ?"},
                {"type": "image", "url": f"data:image/jpeg;base64,{jpeg}"},
            ],
        )
    ]
    assert u.params == {
        "temperature": 0.4,
        "maxOutputTokens": 512,
        "thinkingConfig": {"includeThoughts": True, "thinkingBudget": 1024},
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}],
    }
    # thought text is not the answer
    assert (
        u.output_text
        == "C'est un bol de ramen 🍜 : nouilles de blé dans un bouillon, porc chashu et œuf mollet (味玉)."
    )
    assert u.finish_reason == "STOP" and u.response_id == "kZ4-aPCHLNXtnvgPnuW_8Q8"
    assert (u.input_tokens, u.output_tokens, u.reasoning_tokens, u.cached_tokens) == (
        270,
        38 + 104,
        104,
        None,
    )
    assert u.cost_usd is not None and 0 < u.cost_usd < 0.01


def test_function_calls_and_responses() -> None:
    u = understand_generate(exchange("function_call_array", stream=True))
    assert u.messages == [
        message("user", "Convert 100 EUR to JPY."),
        message(
            "assistant",
            "",
            tool_calls=[
                {
                    "id": "get_exchange_rate",
                    "name": "get_exchange_rate",
                    "arguments": '{"from":"EUR","to":"JPY"}',
                }
            ],
        ),
        message("tool", '{"rate":161.7}', tool_call_id="get_exchange_rate", name="get_exchange_rate"),
        message("assistant", "100 EUR ≈ 16 170 JPY."),
        message("user", "And to USD and GBP?"),
    ]
    assert u.output_text == "Let me check both rates."
    assert u.output_tool_calls == [
        {"id": "get_exchange_rate", "name": "get_exchange_rate", "arguments": '{"from":"EUR","to":"USD"}'},
        {"id": "get_exchange_rate", "name": "get_exchange_rate", "arguments": '{"from":"EUR","to":"GBP"}'},
    ]
    assert u.tools == [
        {
            "name": "get_exchange_rate",
            "description": "Latest exchange rate",
            "parameters": {
                "type": "OBJECT",
                "properties": {"from": {"type": "STRING"}, "to": {"type": "STRING"}},
                "required": ["from", "to"],
            },
        }
    ]
    assert u.params == {
        "temperature": 0,
        "candidateCount": 1,
        "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
    }
    assert (u.input_tokens, u.output_tokens) == (151, 30)


def test_snake_case_request_and_builtin_tools() -> None:
    req = {
        "system_instruction": {"parts": [{"text": "Be terse."}]},
        "contents": [
            {
                "parts": [
                    {"text": "Listen"},
                    {"inline_data": {"mime_type": "audio/wav", "data": "UklGRg=="}},
                    {"file_data": {"mime_type": "application/pdf", "file_uri": "gs://b/doc.pdf"}},
                ]
            },
            {
                "role": "model",
                "parts": [
                    {"function_call": {"id": "fc-1", "name": "f", "args": {"a": 1}}},
                    {"text": "hmm", "thought": True},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"function_response": {"id": "fc-1", "name": "f", "response": {"ok": True}}},
                    {"text": "thanks"},
                ],
            },
        ],
        "generation_config": {"max_output_tokens": 5},
        "tools": [
            {"google_search": {}},
            {"function_declarations": [{"name": "f", "parametersJsonSchema": {"type": "object"}}]},
        ],
    }
    u = understand_generate(exchange("text_sse", stream=False, req=json.dumps(req).encode()))
    assert u.system_prompt == "Be terse."
    assert u.params == {"max_output_tokens": 5}
    assert u.messages == [
        message(
            "user",
            "Listen",
            parts=[
                {"type": "text", "text": "Listen"},
                {"type": "audio", "url": "data:audio/wav;base64,UklGRg=="},
                {"type": "file", "url": "gs://b/doc.pdf", "media_type": "application/pdf"},
            ],
        ),
        message(
            "assistant",
            "",
            parts=[{"type": "thinking", "text": "hmm"}],
            tool_calls=[{"id": "fc-1", "name": "f", "arguments": '{"a":1}'}],
        ),
        message("tool", '{"ok":true}', tool_call_id="fc-1", name="f"),
        message("user", "thanks"),
    ]
    assert u.tools == [
        {"name": "google_search", "description": "", "parameters": {}, "type": "google_search"},
        {"name": "f", "description": "", "parameters": {"type": "object"}},
    ]


def test_model_from_vertex_and_tuned_paths() -> None:
    x = exchange("text_sse", stream=True)
    vertex = "/v1/projects/p-1/locations/us-central1/publishers/google/models/gemini-2.0-flash-001"
    vertex += ":streamGenerateContent"
    assert understand_generate(dataclasses.replace(x, path=vertex)).model == "gemini-2.0-flash-001"
    tuned = "/v1beta/tunedModels/my-tune-42:generateContent"
    u = understand_generate(dataclasses.replace(x, path=tuned))
    assert (u.model, u.stream) == ("my-tune-42", False)


# -- timing ---------------------------------------------------------------------------------


def first_chunk_end(case: str, body: bytes) -> int:
    """Where the first chunk (content-bearing in both fixtures) ends, found without the parser."""
    if case == "text_sse":
        return body.index(b"\r\n")
    return body.index(b"\n}") + 2


@pytest.mark.parametrize("case", list(CASES))
def test_ttft_and_rate(case: str) -> None:
    body = (FIX / case / CASES[case][1]).read_bytes()
    timing = chunked(body, size=64)
    u = understand_generate(exchange(case, stream=True, timing=timing))
    assert u.ttft_ms == chunk_at(timing, first_chunk_end(case, body))
    last = body.rindex(b"\r\n\r\n") if case == "text_sse" else body.rindex(b"\n}") + 2
    assert u.tokens_per_second == pytest.approx(u.output_tokens / ((chunk_at(timing, last) - u.ttft_ms) / 1000))


@pytest.mark.parametrize("case", list(CASES))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_any_rechunking_gives_the_same_understanding(case: str, data: st.DataObject) -> None:
    body = (FIX / case / CASES[case][1]).read_bytes()
    reference = understand_generate(exchange(case, stream=True))
    timing = data.draw(stream_timings(len(body)))
    u = understand_generate(exchange(case, stream=True, timing=timing))
    assert fields(u, {"ttft_ms", "tokens_per_second"}) == fields(reference, {"ttft_ms", "tokens_per_second"})
    assert u.ttft_ms == chunk_at(timing, first_chunk_end(case, body))


# -- cut-off and failing streams ----------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_cut_never_raises_and_keeps_a_prefix(case: str, data: st.DataObject) -> None:
    full = (FIX / case / CASES[case][1]).read_bytes()
    whole = understand_generate(exchange(case, stream=True))
    cut = data.draw(st.integers(0, len(full)))
    u = understand_generate(exchange(case, stream=True, body=full[:cut]))
    # SSE: a lone "\r" already ends the blank line; the array needs its closing bracket
    complete_from = len(full) - 1 if case == "text_sse" else len(full)
    assert u.incomplete is (cut < complete_from)
    assert whole.output_text.startswith(u.output_text)
    assert u.messages == whole.messages and u.model == whole.model


def test_stream_without_finish_reason_is_incomplete() -> None:
    full = (FIX / "text_sse" / "stream.txt").read_bytes()
    body = b"".join(e + b"\r\n\r\n" for e in full.split(b"\r\n\r\n")[:3])  # three whole events, no finish
    u = understand_generate(exchange("text_sse", stream=True, body=body))
    assert u.incomplete is True and u.parse_error == ""
    assert u.finish_reason == "" and u.output_text == "C'est un bol de ramen 🍜 :"
    assert u.output_tokens is None  # the early chunks report prompt tokens only


def test_error_element_in_a_stream() -> None:
    full = (FIX / "function_call_array" / "stream.json").read_bytes()
    first = full[: full.index(b"\n}") + 2]
    err = {
        "error": {
            "code": 503,
            "message": "The model is overloaded. Please try again later.",
            "status": "UNAVAILABLE",
        }
    }
    body = first + b"\n,\r\n" + json.dumps(err, indent=2).encode() + b"\n]"
    u = understand_generate(exchange("function_call_array", stream=True, body=body))
    assert u.incomplete is True
    assert u.parse_error == "stream error: UNAVAILABLE: The model is overloaded. Please try again later."
    assert u.response["error"] == err["error"]
    assert u.output_text == "Let me check" and u.chunk_count == 2


def test_blocked_prompt_is_a_finished_answer() -> None:
    blocked = {
        "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
        "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8},
        "modelVersion": "gemini-2.0-flash",
    }
    body = f"data: {json.dumps(blocked)}\r\n\r\n".encode()
    u = understand_generate(exchange("text_sse", stream=True, body=body))
    assert (u.finish_reason, u.incomplete, u.input_tokens, u.output_tokens) == ("SAFETY", False, 8, None)


def test_http_error_keeps_the_request() -> None:
    err = {
        "error": {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
        }
    }
    u = understand_generate(exchange("text_sse", stream=True, body=json.dumps(err).encode(), status=400))
    assert u.response == err
    assert u.model == "gemini-2.5-flash" and u.system_prompt and len(u.messages) == 1 and u.stream is True
    assert (u.output_text, u.parse_error, u.incomplete, u.chunk_count) == ("", "", False, 0)


# -- never raises -------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=25,
)
KEYS = st.sampled_from(
    [
        "contents",
        "role",
        "parts",
        "text",
        "thought",
        "inlineData",
        "functionCall",
        "functionResponse",
        "args",
        "name",
        "id",
        "tools",
        "functionDeclarations",
        "systemInstruction",
        "generationConfig",
        "candidates",
        "content",
        "index",
        "finishReason",
        "usageMetadata",
        "promptTokenCount",
        "promptFeedback",
        "error",
    ]
)
SHAPED = st.recursive(
    JSON, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=6), max_leaves=40
)


@settings(max_examples=300, deadline=None)
@given(
    req=SHAPED,
    chunks=st.lists(SHAPED, max_size=5),
    framing=st.sampled_from(["json", "array", "sse"]),
    tail=st.binary(max_size=16),
    status=st.sampled_from([0, 200, 200, 429]),
    path=st.sampled_from(["/v1beta/models/m:generateContent", "/v1beta/models/m:streamGenerateContent", "/x"]),
)
def test_arbitrary_json_never_raises(
    req: Any, chunks: list[Any], framing: str, tail: bytes, status: int, path: str
) -> None:
    if framing == "json":
        body = json.dumps(chunks[0] if chunks else None).encode()
    elif framing == "array":
        body = ("[" + ",\r\n".join(json.dumps(c) for c in chunks) + "]").encode()
    else:
        body = "".join(f"data: {json.dumps(c)}\r\n\r\n" for c in chunks).encode()
    body += tail
    x = Exchange("POST", path, "alt=sse", json.dumps(req).encode(), body, "", status, "ok", 1.0, chunked(body))
    assert isinstance(understand_generate(x), Understanding)
