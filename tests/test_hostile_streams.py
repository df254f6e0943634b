"""A terminal event split across reads (issue 13, item 17): kill -9 right after the client has it.

A stream's capture must be spooled before the client can see the answer complete, which for a
stream is the moment its terminal event arrives (``data: [DONE]``, Anthropic's
``message_stop``, Ollama's ``"done": true``, the Responses API's ``response.completed``). Real
servers split that event across TCP writes. Here ``RawUpstream`` writes each stream in two
writes, split at every byte offset of its terminal event, a pause between them, and then holds
the connection open (as a slow server finishing its response would). Every client reads until it
has the whole terminal event; then the real ``prompttap serve`` is killed with SIGKILL at once.
After a restart on the same home, every one of those streams is in the store.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import Prompttap
from tests.raw_upstream import RawUpstream, Script, Seen, chunk

pytestmark = pytest.mark.slow

SHAPES: dict[str, tuple[bytes, bytes, bytes]] = {
    # name: (content type, what comes before, the terminal event)
    "openai-chat": (
        b"text/event-stream",
        b'data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o","choices":'
        b'[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\n',
        b"data: [DONE]\n\n",
    ),
    "openai-chat-crlf": (
        b"text/event-stream",
        b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}]}\r\n\r\n',
        b"data: [DONE]\r\n\r\n",
    ),
    "anthropic": (
        b"text/event-stream",
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"hi"}}\n\n',
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
    ),
    "ollama": (
        b"application/x-ndjson",
        b'{"model":"llama3.2","created_at":"2023-11-14T22:13:20Z","message":{"role":"assistant","content":"hi"},'
        b'"done":false}\n',
        b'{"model":"llama3.2","created_at":"2023-11-14T22:13:20Z","message":{"role":"assistant","content":""},'
        b'"done": true,"done_reason":"stop","eval_count":1}\n',
    ),
    "responses": (
        b"text/event-stream",
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"hi"}\n\n',
        b'event: response.completed\ndata: {"type":"response.completed","response":{"id":"resp_1",'
        b'"status":"completed"}}\n\n',
    ),
}


def split_stream(seen: Seen) -> Script:
    """``/<shape>/<offset>``: the stream, its terminal event split at ``offset`` across two writes."""
    _, shape, offset = seen.target.split(b"?")[0].decode().split("/")[:3]
    content_type, before, terminal = SHAPES[shape]
    at = int(offset)
    head = b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\ntransfer-encoding: chunked\r\n\r\n" % content_type
    return Script([head + chunk(before + terminal[:at]), 0.05, chunk(terminal[at:])], hold=True)


@pytest.fixture(scope="module")
def up() -> Iterator[RawUpstream]:
    with RawUpstream(split_stream) as upstream:
        yield upstream


async def read_until_terminal(client: httpx.AsyncClient, url: str, tag: str, expected: bytes) -> None:
    async with client.stream("POST", url, json={"stream": True}, headers={"x-prompttap-tags": tag}) as r:
        assert r.status_code == 200
        got = b""
        async for data in r.aiter_raw():
            got += data
            if got.endswith(expected):
                return
    raise AssertionError(f"the stream ended before its terminal event: {got!r}")


@pytest.mark.parametrize("shape", SHAPES)
def test_kill_9_after_a_split_terminal_event_loses_no_stream(up: RawUpstream, tmp_path: Path, shape: str):
    _, before, terminal = SHAPES[shape]
    offsets = range(1, len(terminal))
    tag = uuid.uuid4().hex
    home = tmp_path / "pt"
    pt = Prompttap(home, up.base_url, ui=False).start()

    async def clients() -> None:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=None)) as client:
            await asyncio.gather(
                *(read_until_terminal(client, f"{pt.url}/{shape}/{k}", tag, before + terminal) for k in offsets)
            )
            pt.kill()  # every client has its whole answer; the upstream has not finished any stream

    try:
        asyncio.run(clients())
    finally:
        pt.kill()
    pt = Prompttap(home, up.base_url).start()
    try:
        pt.drained(timeout=60)
        stored = [pt.capture(item["id"]) for item in pt.captures(tag=tag)]
    finally:
        pt.stop()
    kept = {int(cap["path"].split("/")[2]) for cap in stored}
    lost = sorted(set(offsets) - kept)
    assert not lost, f"{len(lost)} of {len(offsets)} streams lost, split at offsets {lost}"
    for cap in stored:
        assert cap["response_body"].encode().endswith(terminal)
