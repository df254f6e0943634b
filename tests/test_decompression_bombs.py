"""Decompression bombs (issue 13, item 1): a small encoded body that expands to 1 GiB.

A real ``prompttap serve`` with ``--max-body-bytes`` of 4 MiB sits between httpx and a bomb
upstream (a real HTTP server). For each coding prompttap decodes (gzip, deflate, br, zstd), a
bomb goes one way: as the request body, or as the upstream's response. Each time:

- the client gets the upstream's bytes unchanged, and the upstream the client's;
- the capture is stored, with ``truncated`` true, the full encoded size and sha256, and a stored
  body of at most the cap (the first bytes of the expansion);
- the peak RSS of every prompttap process (``serve`` and its encoder child), sampled every 2 ms
  while the bomb is forwarded, decoded and stored, stays under its usual level plus 2x the cap.
  The usual level is the peak the same process reached just before, carrying ordinary bodies at
  the cap (plain and gzip, both ways): a bomb may cost what an ordinary body at the cap costs,
  plus twice the cap, never what it expands to.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import brotli
import httpx
import psutil
import pytest
import uvicorn
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from prompttap.collector.enrich import Enricher, decode_body
from tests.harness import Prompttap
from tests.servers import start_in_thread, stop_thread

CAP = 4 * 2**20
EXPANDED = 2**30
MIB = 2**20
HEAD = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"'


def expansion() -> Iterator[bytes]:
    """The 1 GiB a bomb decodes to: the start of a chat request, then one long string, in 1 MiB pieces."""
    yield HEAD + b"a" * (MIB - len(HEAD))
    piece = b"a" * MIB
    for _ in range(EXPANDED // MIB - 1):
        yield piece


def compress(make: Callable[[], Any], finish: str) -> bytes:
    c = make()
    step = c.compress if hasattr(c, "compress") else c.process
    out = [step(piece) for piece in expansion()]
    return b"".join([*out, getattr(c, finish)()])


ENCODERS: dict[str, Callable[[], bytes]] = {
    "gzip": lambda: compress(lambda: zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS), "flush"),
    "deflate": lambda: compress(lambda: zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS), "flush"),
    "br": lambda: compress(lambda: brotli.Compressor(quality=5), "finish"),
    "zstd": lambda: compress(lambda: zstandard.ZstdCompressor(level=3).compressobj(), "flush"),
}
CASES = [(d, c) for c in ENCODERS for d in ("request", "response")]


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    return {coding: make() for coding, make in ENCODERS.items()}


@dataclass
class BombUpstream:
    """A real HTTP server: answers every request with ``answer`` (encoded as ``coding``) and keeps the
    size and sha256 of each request body it read."""

    answer: bytes = b'{"id":"x","object":"chat.completion","choices":[]}'
    coding: str = ""
    received: list[tuple[int, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        config = uvicorn.Config(self.app, lifespan="off", log_level="warning", http="h11", interface="asgi3")
        self.server = uvicorn.Server(config)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.thread = start_in_thread(self.server, lambda: self.server.serve(sockets=[sock]), "bomb-upstream")

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        sha, size = hashlib.sha256(), 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            sha.update(chunk)
            size += len(chunk)
            if not message.get("more_body"):
                break
        self.received.append((size, sha.hexdigest()))
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(self.answer)).encode())]
        if self.coding:
            headers.append((b"content-encoding", self.coding.encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i in range(0, len(self.answer), 64 * 1024):
            await send({"type": "http.response.body", "body": self.answer[i : i + 64 * 1024], "more_body": True})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture(scope="module")
def upstream() -> Iterator[BombUpstream]:
    up = BombUpstream()
    yield up
    stop_thread(up.server, up.thread)


@dataclass
class Usual:
    """A prompttap after its usual traffic, and the peak RSS each of its processes reached doing it."""

    pt: Prompttap
    peak: dict[str, int]


@pytest.fixture(scope="module")
def usual(upstream: BombUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Usual]:
    """Usual traffic: JSON bodies at the cap, both ways, plain and gzip-encoded. Carrying one already
    costs a few times the cap for a moment (the body, its text, its parsed JSON, the store's insert):
    the level a bomb is held to is the peak of that work."""
    with Prompttap(tmp_path_factory.mktemp("bombs"), upstream.base_url, "--max-body-bytes", str(CAP)) as pt:
        body = HEAD + b"a" * (CAP - len(HEAD) - 4) + b'"}]}'
        with PeakRSS(processes(pt)) as rss:
            for _ in range(5):  # enough to fill the encoder's enrichment cache (its body-bytes bound)
                for direction in ("request", "response"):
                    for coding, sent in (("identity", body), ("gzip", zlib.compress(body, wbits=31))):
                        send(pt, direction, coding, sent, upstream, "usual")
                        pt.drained(timeout=120)
        yield Usual(pt, rss.peak)


def processes(pt: Prompttap) -> dict[str, psutil.Process]:
    """prompttap's processes by role: ``serve`` and its ``encoder`` child."""
    assert pt.proc is not None
    serve = psutil.Process(pt.proc.pid)
    found = {"serve": serve}
    for child in serve.children(recursive=True):
        if "prompttap.collector.encoder" in " ".join(child.cmdline()):
            found["encoder"] = child
    assert set(found) == {"serve", "encoder"}, found
    return found


class PeakRSS:
    """Samples the RSS of each process every 2 ms on a thread until stopped; keeps the peak."""

    def __init__(self, procs: dict[str, psutil.Process]) -> None:
        self.procs = procs
        self.peak = {name: p.memory_info().rss for name, p in procs.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, p in self.procs.items():
                # a process that died shows as no growth; the capture checks catch it
                with contextlib.suppress(psutil.Error):
                    self.peak[name] = max(self.peak[name], p.memory_info().rss)
            time.sleep(0.002)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def find(pt: Prompttap, tag: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        items = pt.captures(tag=tag)
        if items:
            return pt.capture(items[0]["id"])
        if time.monotonic() > deadline:
            raise AssertionError(f"no capture tagged {tag}:\n{pt.log()[-3000:]}")
        time.sleep(0.1)


def send(pt: Prompttap, direction: str, coding: str, bomb: bytes, upstream: BombUpstream, tag: str) -> bytes:
    """One exchange with the bomb going ``direction``; returns the raw bytes the client got."""
    headers = {"content-type": "application/json", "x-prompttap-tags": tag, "accept-encoding": coding}
    content = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
    upstream.answer, upstream.coding = (bomb, coding) if direction == "response" else (upstream.answer, "")
    if direction == "request":
        headers["content-encoding"] = coding
        content = bomb
    with (
        httpx.Client(timeout=120, trust_env=False) as client,
        client.stream("POST", f"{pt.url}/v1/chat/completions", content=content, headers=headers) as r,
    ):
        assert r.status_code == 200
        return b"".join(r.iter_raw())


@pytest.mark.parametrize(("direction", "coding"), CASES, ids=[f"{d}-{c}" for d, c in CASES])
def test_bomb_is_bounded_and_kept(
    direction: str, coding: str, bombs: dict[str, bytes], upstream: BombUpstream, usual: Usual
) -> None:
    bomb, pt = bombs[coding], usual.pt
    assert len(bomb) < EXPANDED // 500  # it is a bomb: over 500x expansion
    procs = processes(pt)
    tag = f"bomb-{uuid.uuid4().hex[:12]}"
    upstream.received.clear()
    with PeakRSS(procs) as rss:
        got = send(pt, direction, coding, bomb, upstream, tag)
        pt.drained(timeout=120)  # forwarded, decoded, encoded and stored
    capture = find(pt, tag)

    # Forwarded untouched, both ways.
    if direction == "request":
        assert upstream.received == [(len(bomb), hashlib.sha256(bomb).hexdigest())]
        assert got == upstream.answer
    else:
        assert got == bomb

    # Kept: truncated, the whole encoded body's size and sha256, at most the cap stored.
    assert capture["truncated"] is True
    assert capture[f"{direction}_size"] == len(bomb)
    assert capture[f"{direction}_sha256"] == hashlib.sha256(bomb).hexdigest()
    stored = capture[f"{direction}_body"].encode()
    assert capture[f"{direction}_body_encoding"] == "utf-8"
    kept = len(stored)
    assert 0 < kept <= CAP
    assert stored == (HEAD + b"a" * CAP)[:kept], "not the start of the expansion"
    assert "size limit" in capture["parse_error"]

    # Bounded: no prompttap process went past its usual level by twice the cap.
    over = {name: rss.peak[name] - usual.peak[name] for name in procs}
    assert all(o < 2 * CAP for o in over.values()), {k: f"{v / MIB:+.1f} MiB" for k, v in over.items()}


# -- the bounded decoder itself ----------------------------------------------------------------


def encode(coding: str, data: bytes) -> bytes:
    if coding == "gzip":  # two members, as gzip.decompress reads them
        return gzip.compress(data[: len(data) // 2]) + gzip.compress(data[len(data) // 2 :])
    if coding == "deflate":
        return zlib.compress(data)
    if coding == "raw-deflate":  # what some servers send as deflate
        c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        return c.compress(data) + c.flush()
    if coding == "br":
        return brotli.compress(data)
    return zstandard.ZstdCompressor().compress(data)


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=3000) | st.builds(bytes.__mul__, st.sampled_from([b"a", b"xyz"]), st.integers(0, 300_000)),
    coding=st.sampled_from(["gzip", "deflate", "raw-deflate", "br", "zstd"]),
    limit=st.integers(1, 400_000),
)
def test_decode_keeps_exactly_the_first_limit_bytes(data: bytes, coding: str, limit: int) -> None:
    wire = encode(coding, data)
    decoded = decode_body(wire, coding.removeprefix("raw-"), limit)
    assert decoded.note == ""
    if data or coding == "gzip":  # an empty body decodes to nothing
        assert (decoded.body, decoded.cut) == (data[:limit], len(data) > limit)


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br"])
def test_a_broken_stream_keeps_what_decoded_before_the_break(coding: str) -> None:
    data = bytes(range(256)) * 2000
    wire = encode(coding, data)
    decoded = decode_body(wire[: len(wire) * 2 // 3], coding, 10 * MIB)
    assert decoded.note.startswith(f"content-encoding {coding!r} did not decode fully")
    assert decoded.body and data.startswith(decoded.body) and not decoded.cut


def test_a_body_cut_inside_a_character_stays_text() -> None:
    """The cap may fall inside a multi-byte character: the torn character goes, the text stays UTF-8."""
    text = "é" * 1000  # two bytes each: a cap of 1001 bytes cuts the 501st in half
    record = {
        "id": "0192d5a0-0000-7000-8000-000000000000",
        "method": "POST",
        "upstream_url": "http://upstream/v1/chat/completions",
        "status_code": 200,
        "outcome": "ok",
        "request_headers": {"content-type": "application/json"},
        "response_headers": {"content-type": "application/json", "content-encoding": "gzip"},
        "request_body": "{}",
        "response_body": base64.b64encode(gzip.compress(text.encode())).decode(),
        "response_body_encoding": "base64",
    }
    row = Enricher(max_body_bytes=1001)(record)
    assert (row["response_body"], row["response_body_encoding"]) == ("é" * 500, "utf-8")
    assert row["truncated"] is True and "response body decodes to more than the size limit" in row["parse_error"]
