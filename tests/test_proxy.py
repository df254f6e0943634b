"""The recording proxy end to end: real prompttap process, real sockets, real SDKs,
the fake upstream, and the records as stored in the embedded ClickHouse."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import itertools
import json
import socket
import threading
import time
import uuid

import anthropic
import httptools
import httpx
import openai
import pytest

from prompttap.collector.exchange import TERMINAL_EVENT, is_terminal
from tests.fake_upstream import FakeUpstream
from tests.harness import Prompttap, free_port

KEY = "sk-test-0123456789abcdefWXYZ"


def nonce() -> str:
    return uuid.uuid4().hex


def upstream_request(fake: FakeUpstream, marker: str):
    for rec in reversed(list(fake.requests)):
        if marker.encode() in rec.body or marker in rec.query:
            return rec
    raise AssertionError(f"the upstream never saw {marker}")


def capture_of(pt: Prompttap, marker: str, timeout: float = 30.0) -> dict:
    """The stored capture whose request body carries ``marker``."""
    deadline = time.monotonic() + timeout
    while True:
        pt.drained()
        for item in pt.captures(limit=200):
            full = pt.capture(item["id"])
            if marker in (full["request_body"] or "") or marker in full["path"]:
                return full
        if time.monotonic() > deadline:
            raise AssertionError(f"no capture carries {marker}")
        time.sleep(0.1)


def test_openai_sdk_non_streaming_is_byte_identical_and_recorded(pt: Prompttap, fake: FakeUpstream):
    n = nonce()
    client = openai.OpenAI(base_url=f"{pt.url}/v1", api_key=KEY)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"hello {n}"}], temperature=0.2
    )
    reply = raw.parse()
    up = upstream_request(fake, n)
    assert raw.http_response.content == up.response_bytes
    assert reply.choices[0].message.content.startswith(f"Echo: hello {n}")

    cap = capture_of(pt, n)
    assert cap["route"] == "default"
    assert cap["method"] == "POST" and cap["path"] == "/v1/chat/completions"
    assert cap["upstream_url"] == f"{fake.base_url}/v1/chat/completions"
    assert cap["status_code"] == 200 and cap["outcome"] == "ok"
    assert cap["response_body"].encode() == up.response_bytes
    assert cap["response_sha256"] == hashlib.sha256(up.response_bytes).hexdigest()
    assert cap["request_body"].encode() == up.body
    assert cap["request"]["messages"][0]["content"] == f"hello {n}"
    assert cap["request_headers"]["authorization"] == "Bearer ...WXYZ"
    assert KEY not in json.dumps(cap)
    assert cap["client"].startswith("OpenAI/Python")
    assert cap["api"] == "openai.chat" and cap["model"] == "gpt-4o-mini"
    assert cap["input_tokens"] == reply.usage.prompt_tokens
    assert cap["output_tokens"] == reply.usage.completion_tokens
    assert cap["duration_ms"] > 0 and cap["ttft_ms"] is not None
    assert cap["request_size"] == len(up.body) and cap["response_size"] == len(up.response_bytes)
    assert len(cap["trace_id"]) == 32 and len(cap["span_id"]) == 16
    uuid.UUID(cap["id"])


def test_openai_sdk_stream_arrives_event_by_event(pt: Prompttap, fake: FakeUpstream):
    n = nonce()

    async def run() -> tuple[list[float], str, float]:
        client = openai.AsyncOpenAI(base_url=f"{pt.url}/v1", api_key=KEY)
        t0 = time.monotonic()
        stream = await client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": f"stream please {n} one two three four"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-fake-chunk-delay-ms": "80"},
        )
        arrivals, text = [], ""
        async for chunk in stream:
            arrivals.append(time.monotonic() - t0)
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
        return arrivals, text, t0

    arrivals, text, _ = asyncio.run(run())
    up = upstream_request(fake, n)
    # Each event reached the client about when the upstream sent it, not all at the end.
    assert len(arrivals) >= 6
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert sum(g > 0.04 for g in gaps) >= len(gaps) - 2, gaps
    assert arrivals[-1] - arrivals[0] > 0.3
    cap = capture_of(pt, n)
    assert cap["response_body"].encode() == up.response_bytes
    assert cap["output_text"] == text
    assert cap["stream"] is True and cap["chunk_count"] >= 6
    assert len(cap["stream_timing"]) >= 6
    offsets = [c["offset_ms"] for c in cap["stream_timing"]]
    assert offsets == sorted(offsets) and offsets[-1] - offsets[0] > 300
    assert sum(c["size"] for c in cap["stream_timing"]) == cap["response_size"]
    assert cap["input_tokens"] is not None and cap["output_tokens"] is not None


def test_openai_sdk_tools(pt: Prompttap):
    n = nonce()
    client = openai.OpenAI(base_url=f"{pt.url}/v1", api_key=KEY)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    reply = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": f"call tool please {n}"}], tools=tools
    )
    calls = reply.choices[0].message.tool_calls
    assert calls and len(calls) == 2
    cap = capture_of(pt, n)
    assert [c["name"] for c in cap["output_tool_calls"]] == ["get_weather", "get_weather"]
    assert cap["tools"][0]["name"] == "get_weather"
    assert cap["finish_reason"] == "tool_calls"


def test_anthropic_sdk_messages_and_stream_through_a_route(pt: Prompttap, fake: FakeUpstream):
    n = nonce()
    client = anthropic.Anthropic(base_url=f"{pt.url}/app", api_key="sk-ant-api03-secretsecret-LAST")
    msg = client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=100,
        system="Be brief.",
        messages=[{"role": "user", "content": f"hi {n}"}],
    )
    assert msg.content[0].text.startswith("Echo")
    m2 = nonce()
    with client.messages.stream(
        model="claude-haiku-4-5", max_tokens=100, messages=[{"role": "user", "content": f"stream {m2}"}]
    ) as stream:
        streamed = "".join(stream.text_stream)
    up = upstream_request(fake, m2)
    assert up.path == "/v1/messages"  # route prefix removed, upstream's /v1 not doubled
    cap = capture_of(pt, n)
    assert cap["route"] == "app" and cap["path"] == "/app/v1/messages"
    # The SDK sends its key as x-api-key or as a bearer token, depending on its version.
    auth = cap["request_headers"].get("x-api-key") or cap["request_headers"]["authorization"]
    assert auth.endswith("...LAST") and "secret" not in json.dumps(cap)
    assert cap["api"] == "anthropic.messages" and cap["system_prompt"] == "Be brief."
    scap = capture_of(pt, m2)
    assert scap["response_body"].encode() == up.response_bytes
    assert scap["output_text"] == streamed
    assert scap["input_tokens"] is not None and scap["output_tokens"] is not None


def test_any_method_path_and_query_are_forwarded_with_clean_headers(pt: Prompttap, fake: FakeUpstream):
    n = nonce()
    r = httpx.request(
        "PATCH",
        f"{pt.url}/anything/deep/path?x=1&y=two&n={n}",
        content=b"payload",
        headers={
            "x-fake-echo-headers": "1",
            "connection": "keep-alive, x-hop",
            "x-hop": "must not pass",
            "keep-alive": "timeout=5",
            "te": "trailers",
            "x-prompttap-session": "sess-1",
            "x-prompttap-user": "ada",
            "x-prompttap-tags": "exp, nightly",
            "x-custom": "passes",
        },
    )
    assert r.status_code == 200
    up = upstream_request(fake, n)
    assert up.method == "PATCH" and up.path == "/anything/deep/path" and up.query == f"x=1&y=two&n={n}"
    names = {k for k, _ in up.headers}
    assert "x-custom" in names
    assert not names & {
        "x-hop",
        "keep-alive",
        "te",
        "x-prompttap-session",
        "x-prompttap-user",
        "x-prompttap-tags",
    }
    assert up.header("host") == fake.base_url.removeprefix("http://")
    assert up.body == b"payload"
    cap = capture_of(pt, n)
    assert cap["session_id"] == "sess-1" and cap["user_id"] == "ada" and cap["tags"] == ["exp", "nightly"]
    assert cap["api"] == "unknown"


def test_gzip_stays_compressed_for_the_client_and_is_stored_decoded(pt: Prompttap, fake: FakeUpstream):
    n = nonce()
    with httpx.Client() as client:
        r = client.post(
            f"{pt.url}/v1/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": f"zip {n}"}]},
            headers={"x-fake-gzip": "1", "accept-encoding": "gzip"},
        )
        raw = b"".join(r.iter_raw()) if not r.is_closed else None
    up = upstream_request(fake, n)
    assert r.headers["content-encoding"] == "gzip"
    if raw is not None:
        assert raw == up.response_bytes
    assert json.loads(gzip.decompress(up.response_bytes))["choices"]
    cap = capture_of(pt, n)
    assert cap["response_body"].encode() == gzip.decompress(up.response_bytes)
    assert cap["response_size"] == len(up.response_bytes)
    assert cap["output_text"].startswith(f"Echo: zip {n}")


def test_upstream_error_status_and_body_pass_through(pt: Prompttap, fake: FakeUpstream):
    n = nonce()
    r = httpx.post(
        f"{pt.url}/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": n}]},
        headers={"x-fake-status": "429"},
    )
    up = upstream_request(fake, n)
    assert r.status_code == 429 and r.content == up.response_bytes
    cap = capture_of(pt, n)
    assert cap["status_code"] == 429 and cap["outcome"] == "upstream_error"


def test_upstream_unreachable_is_a_502_in_openai_shape(make_pt):
    dead = f"http://127.0.0.1:{free_port()}"
    p = make_pt(upstream=dead)
    client = openai.OpenAI(base_url=f"{p.url}/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 502
    body = err.value.response.json()
    assert dead.removeprefix("http://") in body["error"]["message"]
    assert body["error"]["type"] == "upstream_unreachable"
    (cap,) = p.wait_captures(1)
    assert cap["outcome"] == "upstream_unreachable" and cap["status_code"] == 502 and cap["error"]


def test_silent_upstream_times_out_with_504(pt: Prompttap):
    n = nonce()
    r = httpx.post(
        f"{pt.url}/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": n}]},
        headers={"x-fake-hang": "1"},
        timeout=30,
    )
    assert r.status_code == 504 and "timed out" in r.json()["error"]["message"]
    cap = capture_of(pt, n)
    assert cap["status_code"] == 504 and cap["outcome"] == "upstream_unreachable"


def test_upstream_reset_mid_stream_reaches_client_and_capture(pt: Prompttap):
    n = nonce()
    with (
        pytest.raises(httpx.HTTPError),
        httpx.stream(
            "POST",
            f"{pt.url}/v1/chat/completions",
            json={
                "model": "gpt-4o",
                "stream": True,
                "messages": [{"role": "user", "content": f"{n} a b c d e f"}],
            },
            headers={"x-fake-reset-after": "3"},
        ) as r,
    ):
        for _ in r.iter_bytes():
            pass
    cap = capture_of(pt, n)
    assert cap["outcome"] == "upstream_error" and "mid-response" in cap["error"]
    assert cap["response_body"].count("data: ") == 3
    assert cap["incomplete"] is True


def test_client_disconnect_before_finish_cancels_upstream(pt: Prompttap, fake: FakeUpstream):
    n = nonce()
    with httpx.stream(
        "POST",
        f"{pt.url}/v1/chat/completions",
        json={
            "model": "gpt-4o",
            "stream": True,
            "messages": [{"role": "user", "content": f"{n} " + "w " * 40}],
        },
        headers={"x-fake-chunk-delay-ms": "50"},
    ) as r:
        it = r.iter_bytes()
        next(it)
        next(it)
    assert fake.wait_until(lambda: upstream_request(fake, n).cancelled, timeout=5)
    cap = capture_of(pt, n)
    assert cap["outcome"] == "client_cancelled"
    assert 0 < cap["response_size"] < 2000


def test_client_leaving_after_finish_reason_still_gets_usage_recorded(pt: Prompttap, fake: FakeUpstream):
    """AnythingLLM stops at the first chunk with a finish_reason, before usage and [DONE]."""
    n = nonce()
    with httpx.stream(
        "POST",
        f"{pt.url}/v1/chat/completions",
        json={
            "model": "gpt-4o",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": f"{n} short"}],
        },
        headers={"x-fake-chunk-delay-ms": "60"},
    ) as r:
        buf = b""
        for chunk in r.iter_bytes():
            buf += chunk
            if b'"finish_reason":"' in buf or b'"finish_reason": "' in buf:
                break
    cap = capture_of(pt, n)
    up = upstream_request(fake, n)
    assert cap["outcome"] == "ok"
    assert cap["response_body"].encode() == up.response_bytes  # drained to the end
    assert "[DONE]" in cap["response_body"]
    assert cap["output_tokens"] is not None


def test_not_an_open_relay(pt: Prompttap):
    def raw(request: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", pt.port), timeout=5) as s:
            s.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                part = s.recv(65536)
                if not part:
                    break
                data += part
            return data

    absolute = raw(b"GET http://example.com/v1/models HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert absolute.startswith(b"HTTP/1.1 400")
    connect = raw(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert connect.split(b" ")[1] in (b"400", b"405")


def test_binary_and_invalid_json_bodies_are_forwarded_and_recorded(pt: Prompttap, fake: FakeUpstream):
    n = nonce()
    blob = n.encode() + bytes(range(256)) * 4
    r = httpx.post(f"{pt.url}/v1/files?n={n}", content=blob, headers={"content-type": "application/octet-stream"})
    assert r.status_code in (200, 404)
    assert upstream_request(fake, n).body == blob
    cap = capture_of(pt, n)
    assert cap["request_body_encoding"] == "base64" and cap["request"] is None
    assert cap["request_sha256"] == hashlib.sha256(blob).hexdigest()

    m = nonce()
    bad = f'{{"model": "gpt-4o", "messages": [ {m} not json'.encode()
    httpx.post(f"{pt.url}/v1/chat/completions", content=bad, headers={"content-type": "application/json"})
    assert upstream_request(fake, m).body == bad
    cap = capture_of(pt, m)
    assert cap["request_body"].encode() == bad and cap["request"] is None
    assert cap["parse_error"]


def test_oversized_bodies_are_forwarded_whole_and_stored_truncated(make_pt, fake: FakeUpstream):
    p = make_pt("--max-body-bytes", "2000")
    n = nonce()
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": n + " x" * 5000}]}).encode()
    r = httpx.post(f"{p.url}/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200
    assert upstream_request(fake, n).body == body
    (cap,) = p.wait_captures(1)
    full = p.capture(cap["id"])
    assert full["truncated"] is True
    assert len(full["request_body"]) == 2000
    assert full["request_size"] == len(body)
    assert full["request_sha256"] == hashlib.sha256(body).hexdigest()


def test_health_on_both_ports(pt: Prompttap):
    proxy = httpx.get(f"{pt.url}/_prompttap/healthz").json()
    ui = httpx.get(f"{pt.ui_url}/healthz").json()
    assert proxy["status"] == ui["status"] == "ok"
    assert "clickhouse" in ui["sinks"] and "spool" in ui


def test_api_filters_and_bad_input(pt: Prompttap):
    n = nonce()
    httpx.post(
        f"{pt.url}/app/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": n}]},
    )
    capture_of(pt, n)
    assert {c["route"] for c in pt.captures(route="app")} == {"app"}
    assert all(c["model"] == "gpt-4o-mini" for c in pt.captures(model="gpt-4o-mini"))
    assert all(c["status_code"] == 429 for c in pt.captures(status=429))
    times = [c["started_at"] for c in pt.captures()]
    assert times == sorted(times, reverse=True)
    assert httpx.get(f"{pt.ui_url}/api/captures/not-a-uuid").status_code == 400
    assert httpx.get(f"{pt.ui_url}/api/captures/{uuid.uuid4()}").status_code == 404
    assert httpx.get(f"{pt.ui_url}/api/captures", params={"limit": 0}).status_code == 422


@pytest.mark.parametrize(
    ("chunk", "terminal"),
    [
        (b"data: [DONE]\n\n", True),  # OpenAI chat
        (b'event: message_stop\ndata: {"type":"message_stop"}\n\n', True),  # Anthropic
        (b'{"model":"llama3","done": true,"eval_count":9}\n', True),  # Ollama NDJSON
        (b'event: response.completed\ndata: {"type": "response.completed"}\n\n', True),  # Responses
        (b'data: {"type":"response.incomplete"}\n\n', True),
        (b'data: {"choices":[{"delta":{"content":"say [DONE] or done"}}]}\n\n', False),
        (b'data: {"type":"response.output_text.delta","delta":"response.completed"}\n\n', False),
        (b'{"model":"llama3","done":false}\n', False),
        (b'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}\n\n', False),  # finished, not terminal
    ],
)
def test_terminal_event_check_agrees_with_its_pattern(chunk: bytes, terminal: bool) -> None:
    """The fast substring pre-check never changes the verdict of TERMINAL_EVENT."""
    assert is_terminal(chunk) is terminal
    assert (TERMINAL_EVENT.search(chunk) is not None) is terminal


class _KeepAliveUpstream(asyncio.Protocol):
    """Answers every request on a connection with the same small JSON, keeping the connection."""

    connections = 0

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        type(self).connections += 1
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        body = b'{"ok":true}'
        self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body))


def test_upstream_connections_are_kept_alive_and_reused(make_pt):
    """One client making requests one after the other costs one upstream connection, not one each."""
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(_KeepAliveUpstream, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        pt = make_pt(upstream=f"http://127.0.0.1:{port}")
        with httpx.Client() as client:
            for _ in range(20):
                assert client.get(f"{pt.url}/v1/models").status_code == 200
        assert _KeepAliveUpstream.connections == 1
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
