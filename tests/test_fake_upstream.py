"""The fake upstream itself: real SDKs against it, stream/non-stream equivalence and every fault control."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

try:
    from tests.fake_upstream import (
        FakeUpstream,
        RecordedRequest,
        embedding_vector,
        parse_ndjson,
        parse_sse,
        reassemble_anthropic,
        reassemble_gemini,
        reassemble_ollama,
        reassemble_openai_chat,
        reassemble_openai_completion,
        reassemble_responses,
        render,
        sse_json,
    )
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from fake_upstream import (  # type: ignore[no-redef]
        FakeUpstream,
        RecordedRequest,
        embedding_vector,
        parse_ndjson,
        parse_sse,
        reassemble_anthropic,
        reassemble_gemini,
        reassemble_ollama,
        reassemble_openai_chat,
        reassemble_openai_completion,
        reassemble_responses,
        render,
        sse_json,
    )

USER = "Hello wörld, tell me a story"
REPLY = "Echo: Hello wörld, tell me a story 🦜你好"
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city"],
}
OPENAI_TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeUpstream) -> FakeUpstream:
    server.reset()
    return server


def oai(fake: FakeUpstream) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-test", max_retries=0)


def chat_body(text: str = USER, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}


# ------------------------------------------------------------------ OpenAI


def test_openai_sync_chat_stream_equals_non_stream(fake: FakeUpstream) -> None:
    client = oai(fake)
    plain = client.chat.completions.create(**chat_body())
    assert plain.choices[0].message.content == REPLY
    assert plain.choices[0].finish_reason == "stop"
    assert plain.usage is not None and plain.usage.prompt_tokens == 6

    chunks = list(client.chat.completions.create(**chat_body(), stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == plain.usage.completion_tokens

    as_json, streamed = fake.requests
    assert streamed.response_bytes.endswith(b"data: [DONE]\n\n")
    assert reassemble_openai_chat(sse_json(streamed.response_bytes)) == json.loads(as_json.response_bytes)
    assert streamed.finished and not streamed.cancelled and as_json.finished


def test_openai_sdk_stream_helper_final_completion(fake: FakeUpstream) -> None:
    client = oai(fake)
    with client.chat.completions.stream(**chat_body(), stream_options={"include_usage": True}) as stream:
        final = stream.get_final_completion()
    plain = client.chat.completions.create(**chat_body())
    assert final.id == plain.id and final.choices[0].message.content == plain.choices[0].message.content
    assert final.usage == plain.usage


async def test_openai_async_stream_parallel_tool_calls(fake: FakeUpstream) -> None:
    client = openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key="sk-test", max_retries=0)
    body = chat_body("please call tool for Paris", tools=OPENAI_TOOLS)
    plain = await client.chat.completions.create(**body)
    assert plain.choices[0].finish_reason == "tool_calls"
    calls = plain.choices[0].message.tool_calls
    assert calls is not None and [c.function.name for c in calls] == ["get_weather", "get_weather"]
    assert [json.loads(c.function.arguments) for c in calls] == [
        {"city": "city-0", "days": 0},
        {"city": "city-1", "days": 1},
    ]

    stream = await client.chat.completions.create(**body, stream=True, stream_options={"include_usage": True})
    pieces: dict[int, list[str]] = {}
    finish = None
    async for chunk in stream:
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or []:
                pieces.setdefault(tc.index, []).append(tc.function.arguments or "")
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert all(len(p) > 3 for p in pieces.values())  # arguments really arrive in several pieces
    assert ["".join(pieces[i]) for i in sorted(pieces)] == [c.function.arguments for c in calls]
    await client.close()
    as_json, streamed = fake.requests
    assert reassemble_openai_chat(sse_json(streamed.response_bytes)) == json.loads(as_json.response_bytes)


def test_openai_n_choices_and_max_tokens(fake: FakeUpstream) -> None:
    client = oai(fake)
    plain = client.chat.completions.create(**chat_body(n=2))
    assert [c.message.content for c in plain.choices] == [REPLY, REPLY.replace("Echo:", "Echo 1:")]
    list(client.chat.completions.create(**chat_body(n=2), stream=True, stream_options={"include_usage": True}))
    as_json, streamed = fake.requests
    assert reassemble_openai_chat(sse_json(streamed.response_bytes)) == json.loads(as_json.response_bytes)

    short = client.chat.completions.create(**chat_body(max_tokens=2))
    assert short.choices[0].message.content == "Echo: Hello" and short.choices[0].finish_reason == "length"


def test_openai_legacy_completions_embeddings_models(fake: FakeUpstream) -> None:
    client = oai(fake)
    legacy: dict[str, Any] = {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi"}
    done = client.completions.create(**legacy)
    assert done.choices[0].text == "Echo: Say hi 🦜你好"
    list(client.completions.create(**legacy, stream=True, stream_options={"include_usage": True}))
    as_json, streamed = fake.requests
    assert reassemble_openai_completion(sse_json(streamed.response_bytes)) == json.loads(as_json.response_bytes)

    emb = client.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta gamma"])  # base64
    assert [d.embedding for d in emb.data] == [embedding_vector("alpha"), embedding_vector("beta gamma")]
    floats = client.embeddings.create(model="m", input="alpha", encoding_format="float", dimensions=4)
    assert floats.data[0].embedding == embedding_vector("alpha", 4)
    assert emb.usage.prompt_tokens == 3

    assert "gpt-4o-mini" in [m.id for m in client.models.list()]


def test_openai_responses_json_and_sse(fake: FakeUpstream) -> None:
    client = oai(fake)
    resp = client.responses.create(model="gpt-4o-mini", input=USER)
    assert resp.output_text == REPLY and resp.status == "completed"
    with client.responses.stream(model="gpt-4o-mini", input=USER) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert final.output_text == REPLY and final.id == resp.id
    wanted = [
        "response.created",
        "response.output_item.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [k for k in dict.fromkeys(kinds) if k in wanted] == wanted
    as_json, streamed = fake.requests
    events = sse_json(streamed.response_bytes)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert reassemble_responses(events) == json.loads(as_json.response_bytes)
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == REPLY


# ------------------------------------------------------------------ Anthropic


def ant(fake: FakeUpstream) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake.base_url, api_key="sk-ant-test", max_retries=0)


def test_anthropic_messages_and_stream(fake: FakeUpstream) -> None:
    client = ant(fake)
    kwargs: dict[str, Any] = {
        "model": "claude-fake-1",
        "max_tokens": 100,
        "system": "Be brief",
        "messages": [{"role": "user", "content": USER}],
    }
    msg = client.messages.create(**kwargs)
    assert msg.content[0].type == "text" and msg.content[0].text == REPLY
    assert msg.stop_reason == "end_turn" and msg.usage.input_tokens == 8
    with client.messages.stream(**kwargs) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == REPLY and final.id == msg.id and final.usage.output_tokens == msg.usage.output_tokens

    as_json, streamed = fake.requests
    assert as_json.header("authorization") == "Bearer sk-ant-test"  # SDK 2.x; 1.x sent x-api-key
    names = [name for name, _ in parse_sse(streamed.response_bytes)]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert reassemble_anthropic(sse_json(streamed.response_bytes)) == json.loads(as_json.response_bytes)


def test_anthropic_tool_use_stream(fake: FakeUpstream) -> None:
    tools = [{"name": "get_weather", "description": "Weather", "input_schema": WEATHER_SCHEMA}]
    kwargs: dict[str, Any] = {
        "model": "claude-fake-1",
        "max_tokens": 100,
        "tools": tools,
        "messages": [{"role": "user", "content": "Please call tool twice"}],
    }
    client = ant(fake)
    with client.messages.stream(**kwargs) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [(b.type, getattr(b, "input", None)) for b in final.content] == [
        ("tool_use", {"city": "city-0", "days": 0}),
        ("tool_use", {"city": "city-1", "days": 1}),
    ]
    plain = client.messages.create(**kwargs)
    assert [b.model_dump() for b in plain.content] == [b.model_dump() for b in final.content]
    streamed, as_json = fake.requests
    events = sse_json(streamed.response_bytes)
    assert sum(e.get("delta", {}).get("type") == "input_json_delta" for e in events) > 4
    assert reassemble_anthropic(events) == json.loads(as_json.response_bytes)


def test_anthropic_requires_api_key(fake: FakeUpstream) -> None:
    body = {"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    resp = httpx.post(fake.url("/v1/messages"), json=body)
    assert resp.status_code == 401
    assert resp.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "x-api-key header is required"},
    }
    assert httpx.post(fake.url("/v1/messages"), json=body, headers={"x-api-key": "k"}).status_code == 200
    assert httpx.post(fake.url("/v1/messages"), json=body, headers={"authorization": "Bearer k"}).status_code == 200


# ------------------------------------------------------------------ Ollama / Gemini


def test_ollama_ndjson_default_and_json(fake: FakeUpstream) -> None:
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": USER}]}
    with httpx.Client() as client:
        with client.stream("POST", fake.url("/api/chat"), json=body) as resp:
            assert resp.headers["content-type"] == "application/x-ndjson"
            lines = [json.loads(line) for line in resp.iter_lines() if line]
        assert all(not line["done"] for line in lines[:-1])
        last = lines[-1]
        assert last["done"] and last["done_reason"] == "stop" and last["prompt_eval_count"] == 6
        assert last["eval_count"] == len(lines) - 1 and last["total_duration"] > 0
        plain = client.post(fake.url("/api/chat"), json={**body, "stream": False}).json()
        assert plain["message"]["content"] == REPLY
        assert reassemble_ollama(lines) == plain

        gen = {"model": "llama3.2", "prompt": "Why is the sky blue?"}
        streamed = parse_ndjson(client.post(fake.url("/api/generate"), json=gen).content)
        assert (
            reassemble_ollama(streamed) == client.post(fake.url("/api/generate"), json={**gen, "stream": False}).json()
        )

        emb = client.post(fake.url("/api/embed"), json={"model": "m", "input": ["a", "b"]}).json()
        assert emb["embeddings"] == [embedding_vector("a"), embedding_vector("b")]

        tools = {**body, "messages": [{"role": "user", "content": "call tool"}], "tools": OPENAI_TOOLS}
        tool_msg = client.post(fake.url("/api/chat"), json={**tools, "stream": False}).json()["message"]
        assert [c["function"]["arguments"]["days"] for c in tool_msg["tool_calls"]] == [0, 1]


def test_gemini_generate_and_stream(fake: FakeUpstream) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": USER}]}]}
    base = fake.url("/v1beta/models/gemini-2.0-flash")
    plain = httpx.post(f"{base}:generateContent", json=body).json()
    assert plain["candidates"][0]["content"]["parts"] == [{"text": REPLY}]
    assert plain["candidates"][0]["finishReason"] == "STOP"
    sse = httpx.post(f"{base}:streamGenerateContent?alt=sse", json=body)
    assert sse.headers["content-type"].startswith("text/event-stream")
    assert reassemble_gemini(sse_json(sse.content)) == plain
    array = httpx.post(f"{base}:streamGenerateContent", json=body).json()  # no alt=sse: one JSON array
    assert reassemble_gemini(array) == plain


# ------------------------------------------------------------------ fault controls


@pytest.mark.parametrize(
    ("path", "status", "expected"),
    [
        ("/v1/chat/completions", 400, {"error": {"type": "invalid_request_error", "code": None}}),
        ("/v1/messages", 529, {"type": "error", "error": {"type": "overloaded_error"}}),
        ("/api/chat", 500, {}),
        ("/v1beta/models/g:generateContent", 503, {"error": {"code": 503, "status": "UNAVAILABLE"}}),
    ],
)
def test_status_errors_use_each_api_shape(fake: FakeUpstream, path: str, status: int, expected: dict) -> None:
    headers = {"x-fake-status": str(status), "x-fake-retry-after": "7"}
    resp = httpx.post(fake.url(path), json={"stream": True}, headers=headers)
    assert resp.status_code == status and resp.headers["retry-after"] == "7"
    body = resp.json()
    if path == "/api/chat":
        assert body == {"error": f"fake upstream error {status}"}
    for key, value in expected.items():
        inner = body[key]
        assert {k: inner[k] for k in value} == value if isinstance(value, dict) else inner == value


def test_status_errors_through_sdks(fake: FakeUpstream) -> None:
    with pytest.raises(openai.RateLimitError) as oerr:
        oai(fake).chat.completions.create(**chat_body(), extra_headers={"x-fake-status": "429"})
    assert oerr.value.code == "rate_limit_exceeded"
    with pytest.raises(anthropic.APIStatusError) as aerr:
        ant(fake).messages.create(
            model="c",
            max_tokens=5,
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-fake-status": "500"},
        )
    assert aerr.value.status_code == 500 and aerr.value.body["error"]["type"] == "api_error"  # type: ignore[index]


def test_gzip_json_and_sse(fake: FakeUpstream) -> None:
    body = chat_body()
    plain = httpx.post(fake.url("/v1/chat/completions"), json=body)
    zipped = httpx.post(fake.url("/v1/chat/completions"), json=body, headers={"x-fake-gzip": "1"})
    assert zipped.headers["content-encoding"] == "gzip" and zipped.json() == plain.json()
    rec = fake.last
    assert rec.response_bytes[:2] == b"\x1f\x8b" and gzip.decompress(rec.response_bytes) == plain.content
    assert int(dict(rec.response_headers)["content-length"]) == len(rec.response_bytes)

    headers = {"x-fake-gzip": "1", "x-fake-chunk-delay-ms": "5"}
    with httpx.stream("POST", fake.url("/v1/chat/completions"), json={**body, "stream": True}, headers=headers) as r:
        events = [line for line in r.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    rec = fake.last
    planned = render("POST", rec.path, "", {}, rec.body).chunks
    assert len(rec.response_chunks) == len(planned)
    # Every event is flushed on its own: each wire prefix decodes to exactly the events sent so far.
    for k in range(1, len(planned) + 1):
        prefix = b"".join(rec.response_chunks[:k])
        assert zlib.decompressobj(wbits=31).decompress(prefix) == b"".join(planned[:k])
    assert gzip.decompress(rec.response_bytes) == rec.planned_body


@pytest.mark.parametrize("mode", ["close", "rst"])
def test_reset_after_cuts_the_stream(fake: FakeUpstream, mode: str) -> None:
    headers = {"x-fake-reset-after": "3", "x-fake-reset-mode": mode}
    got: list[str] = []
    with (
        pytest.raises(httpx.TransportError),
        httpx.stream("POST", fake.url("/v1/chat/completions"), json=chat_body(stream=True), headers=headers) as r,
    ):
        got.extend(line for line in r.iter_lines() if line)
    assert len(got) <= 3
    rec = fake.last
    assert rec.reset and not rec.finished and not rec.cancelled and len(rec.response_chunks) == 3
    if mode == "close":
        assert len(got) == 3

    with pytest.raises(Exception):  # noqa: B017 - the SDK surfaces its HTTP library's error type
        list(oai(fake).chat.completions.create(**chat_body(), stream=True, extra_headers={"x-fake-reset-after": "2"}))
    with pytest.raises(httpx.TransportError):  # non-stream: content-length promised, body never sent
        httpx.post(fake.url("/v1/chat/completions"), json=chat_body(), headers={"x-fake-reset-after": "0"})


def test_echo_headers_any_method_and_path(fake: FakeUpstream) -> None:
    headers = {"x-fake-echo-headers": "1", "x-custom": "abc"}
    got = httpx.get(fake.url("/anything/x?y=1&z=%20"), headers=headers).json()
    assert (got["method"], got["path"], got["query"]) == ("GET", "/anything/x", "y=1&z=%20")
    assert got["headers"]["x-custom"] == "abc" and ["x-custom", "abc"] in got["raw_headers"]
    posted = httpx.request("DELETE", fake.url("/v1/chat/completions"), content=b"payload", headers=headers).json()
    assert posted["method"] == "DELETE" and posted["body_sha256"] == hashlib.sha256(b"payload").hexdigest()
    status = httpx.put(fake.url("/p"), headers={**headers, "x-fake-status": "418"})
    assert status.status_code == 418 and status.json()["method"] == "PUT"


def test_binary_body_is_seeded(fake: FakeUpstream) -> None:
    resp = httpx.get(fake.url("/blob"), headers={"x-fake-binary": "200000"})
    assert resp.headers["content-type"] == "application/octet-stream"
    assert resp.content == random.Random(200000).randbytes(200000)
    assert len(fake.last.response_chunks) == 4  # 64 KiB pieces


def test_delays_and_chunk_times(fake: FakeUpstream) -> None:
    headers = {"x-fake-first-delay-ms": "120", "x-fake-chunk-delay-ms": "30"}
    with httpx.stream("POST", fake.url("/v1/chat/completions"), json=chat_body(stream=True), headers=headers) as r:
        assert r.status_code == 200  # streams send headers before the first-chunk delay
        list(r.iter_lines())
    rec = fake.last
    assert rec.response_start_time is not None and rec.chunk_times[0] - rec.response_start_time >= 0.11
    gaps = [b - a for a, b in zip(rec.chunk_times, rec.chunk_times[1:], strict=False)]
    assert gaps and min(gaps) >= 0.025

    httpx.post(fake.url("/v1/chat/completions"), json=chat_body(), headers={"x-fake-first-delay-ms": "100"})
    rec = fake.last
    assert rec.response_start_time is not None and rec.response_start_time - rec.time >= 0.09


def test_slow_body_arrives_in_pieces(fake: FakeUpstream) -> None:
    headers = {"x-fake-slow-body-ms": "2", "x-fake-slow-body-bytes": "16"}
    resp = httpx.post(fake.url("/v1/chat/completions"), json=chat_body(), headers=headers)
    assert resp.json()["choices"][0]["message"]["content"] == REPLY
    rec = fake.last
    assert len(rec.response_chunks) == -(-len(rec.response_bytes) // 16)
    assert rec.chunk_times[-1] - rec.chunk_times[0] >= 0.002 * (len(rec.response_chunks) - 1)


def test_client_going_away_marks_cancelled(fake: FakeUpstream) -> None:
    long_text = " ".join(f"word{i}" for i in range(40))
    headers = {"x-fake-chunk-delay-ms": "40"}
    with (
        httpx.Client() as client,
        client.stream(
            "POST", fake.url("/v1/chat/completions"), json=chat_body(long_text, stream=True), headers=headers
        ) as r,
    ):
        lines = r.iter_lines()
        assert next(lines).startswith("data: ") and next(lines) == ""
    rec = fake.last
    assert fake.wait_until(lambda: rec.cancelled, timeout=3)
    sent = len(rec.response_chunks)
    time.sleep(0.15)
    assert not rec.finished and len(rec.response_chunks) == sent < 10  # generation stopped


def test_hang_never_responds(fake: FakeUpstream) -> None:
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(fake.url("/v1/chat/completions"), json=chat_body(), headers={"x-fake-hang": "1"}, timeout=0.3)
    rec = fake.last
    assert rec.status is None and rec.response_chunks == []
    assert fake.wait_until(lambda: rec.cancelled, timeout=3)


# ------------------------------------------------------------------ determinism and introspection


def test_determinism_nonce_and_render(fake: FakeUpstream) -> None:
    url = fake.url("/v1/chat/completions")
    first = httpx.post(url, json=chat_body(stream=True)).content
    again = httpx.post(url, json=chat_body(stream=True)).content
    assert first == again
    rec = fake.last
    assert render("POST", rec.path, rec.query, rec.headers, rec.body).body == rec.response_bytes == again

    other = httpx.post(url, json=chat_body(stream=True, nonce=1)).content
    id_a = json.loads(first.split(b"\n")[0][6:])["id"]
    id_b = json.loads(other.split(b"\n")[0][6:])["id"]
    assert id_a != id_b and other.replace(id_b.encode(), id_a.encode()) == first


def test_http_introspection_and_reset(fake: FakeUpstream) -> None:
    httpx.post(fake.url("/v1/chat/completions?x=1"), json=chat_body(), headers={"x-trace": "t1"})
    listed = httpx.get(fake.url("/__fake/requests")).json()["requests"]
    assert len(listed) == 1  # control endpoints are not recorded
    remote = RecordedRequest.from_json(listed[0])
    local = fake.requests[0]
    assert remote == local and remote.query == "x=1" and remote.header("x-trace") == "t1"
    assert httpx.post(fake.url("/__fake/reset")).json() == {"ok": True}
    assert fake.requests == []


def test_script_mode_subprocess() -> None:
    script = Path(__file__).with_name("fake_upstream.py")
    proc = subprocess.Popen(
        [sys.executable, str(script), "--port", "0"], stdout=subprocess.PIPE, text=True, cwd=script.parent
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("FAKE_UPSTREAM_READY http://127.0.0.1:")
        base = line.split()[1]
        assert httpx.get(f"{base}/v1/models").status_code == 200
        listed = httpx.get(f"{base}/__fake/requests").json()["requests"]
        assert [r["path"] for r in listed] == ["/v1/models"]
    finally:
        proc.terminate()
        proc.wait(10)
