"""Health that means something: liveness apart from readiness, windowed problems, no secret in any of it.

Every test drives the real ``prompttap serve`` over real sockets. ``/healthz`` (and the proxy port's
``/_prompttap/healthz``) answers whether the process serves traffic; ``/readyz`` (and
``/healthz?verbose=1``) says whether recording is healthy right now, with the detail.
"""

from __future__ import annotations

import base64
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fake_upstream import FakeUpstream
from tests.harness import Prompttap

ECHOED = "echoedsecret-0123456789abcdef"
LANGFUSE_SECRET = "sk-lf-echoed-9876543210"


class _Echo(http.server.BaseHTTPRequestHandler):
    """A receiver that refuses every export and quotes the credentials it got back, as some do."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        quoted = "; ".join(f"{k}={v}" for k, v in self.headers.items())
        basic = self.headers.get("authorization", "").removeprefix("Basic ")
        pair = base64.b64decode(basic).decode() if basic else ""
        body = f"unknown credentials {pair!r} in: {quoted}".encode()
        self.send_response(401)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def wait_for(predicate, timeout: float = 30.0, what: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_sink_errors_that_quote_a_credential_never_show_it(fake: FakeUpstream, echo: str, tmp_path: Path):
    """A receiver that quotes the credentials it refused: /healthz, /metrics and the log show the refusal
    (HTTP 401), never the credential (issue 13, item 9)."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": echo,
        "OTEL_EXPORTER_OTLP_HEADERS": f"x-api-key={ECHOED}",
        "LANGFUSE_PUBLIC_KEY": "pk-lf-echo",
        "LANGFUSE_SECRET_KEY": LANGFUSE_SECRET,
        "LANGFUSE_HOST": echo,
    }
    with Prompttap(tmp_path / "pt", fake.base_url, env=env) as pt:
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}
        assert httpx.post(f"{pt.url}/v1/chat/completions", json=body).status_code == 200
        wait_for(lambda: all(pt.health()["sinks"][s]["failed_exports"] for s in ("otlp", "langfuse")), what="a refusal")
        shown = {
            "proxy healthz": httpx.get(f"{pt.url}/_prompttap/healthz").text,
            "proxy readyz": httpx.get(f"{pt.url}/_prompttap/healthz?verbose=1").text,
            "proxy metrics": httpx.get(f"{pt.url}/_prompttap/metrics").text,
            "inspector healthz": httpx.get(f"{pt.ui_url}/healthz").text,
            "inspector metrics": httpx.get(f"{pt.ui_url}/metrics").text,
        }
        health = pt.health()
        assert "HTTP 401" in health["sinks"]["otlp"]["last_error"]
        assert "HTTP 401" in health["sinks"]["langfuse"]["last_error"]
    shown["log"] = pt.log()
    assert "HTTP 401" in shown["log"]
    leaks = [(where, secret) for secret in (ECHOED, LANGFUSE_SECRET) for where, text in shown.items() if secret in text]
    assert not leaks, leaks
