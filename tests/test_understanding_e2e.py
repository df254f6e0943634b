"""API understanding through the real proxy: every API, streamed and not, with the
official SDKs and httpx; the stored normalized fields are read back from ClickHouse.

The fake upstream produces the same generation both ways, so a stream's reassembled
``response`` must equal the non-streamed capture's ``response``.
"""

from __future__ import annotations

import json
import time
import uuid

import anthropic
import httpx
import openai
import pytest

from tests.harness import Prompttap

KEY = "sk-test-understand-0000"


def by_nonce(pt: Prompttap, nonce: str, expected: int = 1, timeout: float = 30) -> list[dict]:
    """Stored captures whose request body carries ``nonce`` (oldest first)."""
    deadline = time.monotonic() + timeout
    while True:
        pt.drained()
        found = []
        for item in pt.captures(limit=300):
            full = pt.capture(item["id"])
            if nonce in (full["request_body"] or ""):
                found.append(full)
        if len(found) >= expected:
            return sorted(found, key=lambda c: c["started_at"])
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(found)} captures carry {nonce}, expected {expected}")
        time.sleep(0.1)


def pair(pt: Prompttap, nonce: str) -> tuple[dict, dict]:
    a, b = by_nonce(pt, nonce, 2)
    return (a, b) if not a["stream"] else (b, a)


def test_openai_chat_stream_equals_non_stream(pt: Prompttap):
    n = uuid.uuid4().hex
    client = openai.OpenAI(base_url=f"{pt.url}/v1", api_key=KEY)
    kw = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": f"hi {n} 你好"}],
        "temperature": 0.3,
        "n": 2,
        "extra_body": {"nonce": n},
    }
    plain = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert chunks
    ns, st = pair(pt, n)
    assert st["response"] == ns["response"]
    assert st["api"] == ns["api"] == "openai.chat"
    assert ns["system_prompt"] == "You are terse."
    assert ns["messages"][0]["role"] == "user" and n in ns["messages"][0]["content"]
    assert ns["params"]["temperature"] == 0.3 and ns["params"]["n"] == 2
    assert ns["output_text"] == plain.choices[0].message.content
    assert ns["input_tokens"] == plain.usage.prompt_tokens == st["input_tokens"]
    assert ns["finish_reason"] == "stop"
    assert st["chunk_count"] > 1
    assert st["tokens_per_second"] is None or st["tokens_per_second"] > 0
    assert ns["cost_usd"] is not None and ns["cost_usd"] > 0  # gpt-4o-mini is in the price database
    assert ns["prompt_template_id"] == st["prompt_template_id"] != ""


def test_openai_parallel_tool_calls_stream_equals_non_stream(pt: Prompttap):
    n = uuid.uuid4().hex
    client = openai.OpenAI(base_url=f"{pt.url}/v1", api_key=KEY)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}, "k": {"type": "integer"}}},
            },
        }
    ]
    kw = {"model": "gpt-4o", "messages": [{"role": "user", "content": f"call tool {n}"}], "tools": tools}
    client.chat.completions.create(**kw, extra_body={"nonce": n})
    list(client.chat.completions.create(**kw, stream=True, extra_body={"nonce": n}))
    ns, st = pair(pt, n)
    assert st["output_tool_calls"] == ns["output_tool_calls"]
    assert len(ns["output_tool_calls"]) == 2
    for call in ns["output_tool_calls"]:
        assert call["name"] == "lookup" and isinstance(json.loads(call["arguments"]), dict)
    assert ns["finish_reason"] == st["finish_reason"] == "tool_calls"


def test_openai_responses_api(pt: Prompttap):
    n = uuid.uuid4().hex
    client = openai.OpenAI(base_url=f"{pt.url}/v1", api_key=KEY)
    r = client.responses.create(model="gpt-4o", instructions="Be kind.", input=f"hello {n}", extra_body={"nonce": n})
    with client.responses.stream(
        model="gpt-4o", instructions="Be kind.", input=f"hello {n}", extra_body={"nonce": n}
    ) as s:
        s.get_final_response()
    ns, st = pair(pt, n)
    assert ns["api"] == "openai.responses" and ns["system_prompt"] == "Be kind."
    assert ns["output_text"] == r.output_text == st["output_text"]
    assert ns["input_tokens"] == st["input_tokens"] is not None


def test_openai_embeddings_and_models(pt: Prompttap):
    n = uuid.uuid4().hex
    client = openai.OpenAI(base_url=f"{pt.url}/v1", api_key=KEY)
    client.embeddings.create(model="text-embedding-3-small", input=[f"one {n}", "two"])
    (cap,) = by_nonce(pt, n)
    assert cap["api"] == "openai.embeddings" and len(cap["messages"]) == 2
    models = client.models.list()
    assert models.data
    pt.drained()
    assert pt.wait_captures(1, api="openai.models")[0]["api"] == "openai.models"


def test_anthropic_messages_stream_equals_non_stream(pt: Prompttap):
    n = uuid.uuid4().hex
    client = anthropic.Anthropic(base_url=pt.url, api_key="sk-ant-test-0000")
    kw = {
        "model": "claude-haiku-4-5",
        "max_tokens": 200,
        "system": [{"type": "text", "text": "You answer in haiku."}],
        "messages": [{"role": "user", "content": f"hello {n}"}],
        "extra_body": {"nonce": n},
    }
    msg = client.messages.create(**kw)
    with client.messages.stream(**kw) as s:
        s.get_final_message()
    ns, st = pair(pt, n)
    assert st["response"] == ns["response"]
    assert ns["api"] == "anthropic.messages" and ns["system_prompt"] == "You answer in haiku."
    assert ns["output_text"] == msg.content[0].text
    assert ns["input_tokens"] == msg.usage.input_tokens and ns["output_tokens"] == msg.usage.output_tokens
    assert ns["finish_reason"] == "end_turn"
    assert st["ttft_ms"] is not None and st["chunk_count"] > 3


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate"])
def test_ollama_ndjson_stream_equals_non_stream(pt: Prompttap, path: str):
    n = uuid.uuid4().hex
    if path == "/api/chat":
        body = {"model": "llama3.2", "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": n}]}
    else:
        body = {"model": "llama3.2", "system": "S", "prompt": n}
    body["nonce"] = n
    streamed = httpx.post(f"{pt.url}{path}", json=body)  # Ollama streams unless told not to
    assert streamed.headers["content-type"].startswith("application/x-ndjson")
    httpx.post(f"{pt.url}{path}", json={**body, "stream": False})
    ns, st = pair(pt, n)
    assert st["response"] == ns["response"]
    assert ns["api"] == ("ollama.chat" if path == "/api/chat" else "ollama.generate")
    assert ns["system_prompt"] == "S" and ns["output_tokens"] is not None


def test_gemini_sse_stream_equals_non_stream(pt: Prompttap):
    n = uuid.uuid4().hex
    body = {
        "nonce": n,
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [{"role": "user", "parts": [{"text": f"hi {n}"}]}],
    }
    base = f"{pt.url}/v1beta/models/gemini-2.0-flash"
    httpx.post(f"{base}:generateContent?key=AIzaSySECRETSECRET0000", json=body)
    httpx.post(f"{base}:streamGenerateContent?alt=sse&key=AIzaSySECRETSECRET0000", json=body)
    caps = by_nonce(pt, n, 2)
    ns = next(c for c in caps if "stream" not in c["path"])
    st = next(c for c in caps if "stream" in c["path"])
    assert st["response"] == ns["response"]
    assert ns["api"] == "gemini.generate" and ns["model"] == "gemini-2.0-flash"
    assert "SECRETSECRET" not in ns["path"] + ns["upstream_url"]


def test_cut_stream_is_marked_incomplete_not_invented(pt: Prompttap):
    n = uuid.uuid4().hex
    with (
        pytest.raises(httpx.HTTPError),
        httpx.stream(
            "POST",
            f"{pt.url}/v1/chat/completions",
            json={
                "model": "gpt-4o",
                "stream": True,
                "nonce": n,
                "messages": [{"role": "user", "content": "a b c d e f"}],
            },
            headers={"x-fake-reset-after": "3"},
        ) as r,
    ):
        for _ in r.iter_bytes():
            pass
    (cap,) = by_nonce(pt, n)
    assert cap["incomplete"] is True
    assert cap["finish_reason"] == "" and cap["output_tokens"] is None


def test_conversation_turns_share_a_thread(pt: Prompttap):
    """No session header: the thread is inferred from the growing message list."""
    n = uuid.uuid4().hex
    client = openai.OpenAI(base_url=f"{pt.url}/app/v1", api_key=KEY)
    system = f"You are a helpful assistant for conversation {n}."
    history: list[dict] = [{"role": "system", "content": system}]
    for turn in range(3):
        history.append({"role": "user", "content": f"question {turn}"})
        reply = client.chat.completions.create(model="gpt-4o", messages=history)
        history.append({"role": "assistant", "content": reply.choices[0].message.content})
    caps = by_nonce(pt, n, 3)
    assert len({c["thread_id"] for c in caps}) == 1 and caps[0]["thread_id"]
    other = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "system", "content": system}, {"role": "user", "content": "question 0"}]
    )
    assert other
    caps = by_nonce(pt, n, 4)
    assert len({c["thread_id"] for c in caps}) == 2  # a fresh conversation starts a new thread
