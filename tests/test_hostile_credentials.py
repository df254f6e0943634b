"""Hostile traffic, no credential stored, logged or shown (issue 13, items 8 and 9).

Against the real ``prompttap serve``, with ``RawUpstream`` recording exactly what reached the
upstream (credentials must be forwarded untouched) and the real embedded store:

- item 8: a header, query or matrix parameter whose *name* says it carries a secret is masked
  (``...abcd``, a scheme kept) in the stored capture, whatever gateway invented the name;
- item 9: the password of a route URL's ``user:password@`` reaches the upstream as Basic auth
  and nowhere else (502 bodies, logs, captures, spool files, health and metrics), and an upstream
  that cannot be reached leaves the client's ``?key=`` out of the error, the span and the log.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import Prompttap, free_port, query_store
from tests.raw_upstream import RawUpstream


@pytest.fixture(scope="module")
def up() -> Iterator[RawUpstream]:
    with RawUpstream() as upstream:
        yield upstream


def marker() -> str:
    return uuid.uuid4().hex


def secret(label: str) -> str:
    """A unique secret, long enough that its mask keeps its last four characters."""
    return f"{label}-{marker()}{marker()[:4]}"


def tagged(pt: Prompttap, tag: str) -> dict:
    (item,) = pt.wait_captures(1, tag=tag, timeout=30)
    return pt.capture(item["id"])


# -- item 8: by name ------------------------------------------------------------------------------

HEADERS = [
    ("x-litellm-api-key", ""),
    ("helicone-auth", "Bearer "),
    ("cf-aig-authorization", "Bearer "),
    ("x-portkey-api-key", ""),
    ("ocp-apim-subscription-key", ""),
    ("anthropic-api-key", ""),
    ("x-auth-token", ""),
    ("x-amz-security-token", ""),
]


def test_credentials_are_masked_by_name_in_the_capture_and_forwarded_untouched(up: RawUpstream, tmp_path: Path):
    n = marker()
    values = {name: scheme + secret(name) for name, scheme in HEADERS}
    sig, signature, matrix = secret("sig"), secret("signature"), secret("matrix")
    path = f"/v1/models;key={matrix}?sig={sig}&model=gpt-4o&signature={signature}"
    with Prompttap(tmp_path / "pt", up.base_url) as pt:
        r = httpx.get(f"{pt.url}{path}", headers={**values, "x-prompttap-tags": n}, timeout=30)
        assert r.status_code == 200
        cap = tagged(pt, n)
    # Forwarded untouched.
    (seen,) = up.to(matrix.encode())
    assert seen.target == path.encode()
    for name, value in values.items():
        assert seen.header(name.encode()) == value.encode()
    # Stored masked: the scheme and the last four characters only.
    for (name, scheme), value in zip(HEADERS, values.values(), strict=True):
        assert cap["request_headers"][name] == f"{scheme}...{value[-4:]}", name
    masked = f"/v1/models;key=...{matrix[-4:]}?sig=...{sig[-4:]}&model=gpt-4o&signature=...{signature[-4:]}"
    assert cap["path"] == masked
    assert cap["upstream_url"] == up.base_url + masked
    stored = json.dumps(cap)
    for value in [*values.values(), sig, signature, matrix]:
        assert value.removeprefix("Bearer ") not in stored


# -- item 9: credentials inside URLs and errors --------------------------------------------------------


def files_under(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_a_route_url_password_reaches_the_upstream_as_basic_auth_and_nowhere_else(up: RawUpstream, tmp_path: Path):
    password = secret("pw")
    basic = base64.b64encode(f"user:{password}".encode()).decode()
    dead = free_port()
    n_ok, n_dead = marker(), marker()
    live = f"http://user:{password}@127.0.0.1:{up.port}"  # the default upstream: named in the start-up log
    routes = ["--route", f"dead=http://user:{password}@127.0.0.1:{dead}"]
    home = tmp_path / "pt"
    with Prompttap(home, live, *routes) as pt:
        ok = httpx.get(f"{pt.url}/v1/models?n={n_ok}", headers={"x-prompttap-tags": n_ok}, timeout=30)
        failed = httpx.get(f"{pt.url}/dead/v1/models?n={n_dead}", headers={"x-prompttap-tags": n_dead}, timeout=30)
        caps = [tagged(pt, n_ok), tagged(pt, n_dead)]
        shown = {
            "502 body": failed.text,
            "proxy /healthz": httpx.get(f"{pt.url}/_prompttap/healthz").text,
            "proxy /metrics": httpx.get(f"{pt.url}/_prompttap/metrics").text,
            "inspector /healthz": httpx.get(f"{pt.ui_url}/healthz").text,
            "inspector /metrics": httpx.get(f"{pt.ui_url}/metrics").text,
            "captures": json.dumps(caps),
            "spool files": files_under(home / "spool").decode("latin-1"),
        }
    shown["log"] = pt.log()
    assert ok.status_code == 200 and failed.status_code == 502
    (seen,) = up.to(n_ok.encode())
    assert seen.header(b"authorization") == f"Basic {basic}".encode()
    assert seen.target == f"/v1/models?n={n_ok}".encode()
    assert caps[0]["upstream_url"] == f"http://127.0.0.1:{up.port}/v1/models?n={n_ok}"
    assert caps[1]["upstream_url"] == f"http://127.0.0.1:{dead}/v1/models?n={n_dead}"
    assert f"127.0.0.1:{up.port}" in shown["log"]  # the start-up log names the upstream
    for where, text in shown.items():
        assert password not in text, where
        assert basic not in text, where


@pytest.fixture
def blackhole() -> Iterator[str]:
    with unanswered() as url:
        yield url


@contextlib.contextmanager
def unanswered() -> Iterator[str]:
    """An address whose connections never complete: a listener with a full accept queue drops
    every further SYN, so connecting times out (the error aiohttp wrote the whole URL into)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        queued = [socket.socket() for _ in range(3)]
        for s in queued:
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            for s in queued:
                s.close()


def test_an_unreachable_upstream_keeps_the_clients_key_out_of_error_span_and_log(blackhole: str, tmp_path: Path):
    """Gemini takes its key in the query. One upstream refuses the connection, the other never
    answers the handshake (prompttap gives up after its 10 s connect timeout)."""
    home = tmp_path / "pt"
    refused = f"http://127.0.0.1:{free_port()}"
    keys, replies = {}, {}
    with Prompttap(home, blackhole, "--route", f"refused={refused}") as pt:
        for prefix in ("", "/refused"):
            n, key = marker(), "AIzaSy" + secret("gemini")
            keys[n] = key
            replies[n] = httpx.post(
                f"{pt.url}{prefix}/v1beta/models/gemini-2.0-flash:generateContent?key={key}",
                json={"contents": [{"parts": [{"text": "hi"}]}]},
                headers={"x-prompttap-tags": n},
                timeout=60,
            )
        caps = {n: tagged(pt, n) for n in keys}
        pt.drained()
    spans = json.dumps(query_store(home, "SELECT * FROM otel_traces"), default=str)
    for n, key in keys.items():
        assert replies[n].status_code in (502, 504) and key not in replies[n].text
        cap = caps[n]
        assert cap["outcome"] == "upstream_unreachable" and cap["error"]
        assert key not in cap["error"], cap["error"]
        assert key not in json.dumps(cap)
        assert cap["id"] in spans  # the failed exchange's span is stored...
        assert key not in spans  # ...without the key, in its status or anywhere else
        assert key not in pt.log()
