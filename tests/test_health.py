"""Health that means something: liveness apart from readiness, windowed problems, no secret in any of it.

Every test drives the real ``prompttap serve`` over real sockets. ``/healthz`` (and the proxy port's
``/_prompttap/healthz``) answers whether the process serves traffic; ``/readyz`` (and
``/healthz?verbose=1``) says whether recording is healthy right now, with the detail.
"""

from __future__ import annotations

import base64
import http.server
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from prompttap.collector.recent import Recent
from tests.fake_upstream import FakeUpstream
from tests.harness import Prompttap
from tests.otlp_receiver import OtlpReceiver
from tests.sink_faults import FaultyPrompttap

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


# ------------------------------------------------------------------------------ liveness and readiness


def container_checks(port: int) -> dict[str, list[str]]:
    """The healthcheck commands of docker-compose.yml and the Dockerfile, aimed at this test's proxy."""
    root = Path(__file__).resolve().parent.parent
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())["services"]["prompttap"]["healthcheck"]
    dockerfile = (root / "Dockerfile").read_text().replace("\\\n", " ")
    [cmd] = re.findall(r"^HEALTHCHECK .*?CMD (\[.*\])$", dockerfile, re.M)
    checks = {"compose": compose["test"][1:], "Dockerfile": json.loads(cmd)}
    for argv in checks.values():
        assert argv[0] == "python" and "127.0.0.1:8787/_prompttap/healthz" in argv[-1]
        argv[0] = sys.executable
        argv[-1] = argv[-1].replace("127.0.0.1:8787", f"127.0.0.1:{port}")
    return checks


def probe(pt: Prompttap) -> dict[str, int]:
    """Status codes of every health endpoint on both ports, and of the container healthchecks (0 = healthy)."""
    codes = {
        "proxy /healthz": httpx.get(f"{pt.url}/_prompttap/healthz").status_code,
        "inspector /healthz": httpx.get(f"{pt.ui_url}/healthz").status_code,
        "proxy /readyz": httpx.get(f"{pt.url}/_prompttap/readyz").status_code,
        "inspector /readyz": httpx.get(f"{pt.ui_url}/readyz").status_code,
        "proxy ?verbose=1": httpx.get(f"{pt.url}/_prompttap/healthz", params={"verbose": 1}).status_code,
        "inspector ?verbose=1": httpx.get(f"{pt.ui_url}/healthz", params={"verbose": 1}).status_code,
    }
    for name, argv in container_checks(pt.port).items():
        codes[f"{name} healthcheck"] = subprocess.run(argv, capture_output=True, timeout=30).returncode
    return codes


LIVE = {"proxy /healthz": 200, "inspector /healthz": 200, "compose healthcheck": 0, "Dockerfile healthcheck": 0}
NOT_READY = {"proxy /readyz": 503, "inspector /readyz": 503, "proxy ?verbose=1": 503, "inspector ?verbose=1": 503}


def metric_labels(text: str) -> set[str]:
    """Every label name used in a Prometheus exposition."""
    return {name for line in text.splitlines() if not line.startswith("#") for name in re.findall(r'(\w+)="', line)}


def test_a_drop_is_not_a_liveness_failure_and_readiness_says_what_happened(fake: FakeUpstream, tmp_path: Path):
    """Captures dropped (store down, spool full): the proxy still serves, so liveness and the container
    healthchecks stay healthy; readiness answers 503 with the drops of the last minutes (issue 13, item 15).
    Before, /healthz answered 503 from the first drop until a restart."""
    flag = tmp_path / "store-down"
    flag.touch()
    env = {"PROMPTTAP_FAULT_SINK_DOWN": str(flag)}
    with FaultyPrompttap(tmp_path / "pt", fake.base_url, "--spool-max-bytes", "20000", env=env) as pt:
        for i in range(30):
            body = {"model": "gpt-4o", "messages": [{"role": "user", "content": f"fill {i} " + "x" * 500}]}
            assert httpx.post(f"{pt.url}/v1/chat/completions", json=body).status_code == 200
        codes = probe(pt)
        assert codes == {**codes, **LIVE, **NOT_READY}, codes
        ready = httpx.get(f"{pt.url}/_prompttap/readyz").json()
        assert ready["live"] is True and ready["ready"] is False and ready["window_s"] == 300
        assert ready["dropped_recent"]["disk_full"] == ready["dropped"]["disk_full"] > 0
        assert any(p.startswith("captures dropped in the last 5 min") for p in ready["problems"])
        assert httpx.get(f"{pt.ui_url}/readyz").json()["dropped_recent"] == ready["dropped_recent"]
        flag.unlink()
        pt.drained(timeout=60)
        assert probe(pt) == {**codes, **LIVE}  # the store is back; the drops stay news for the window


def test_a_langfuse_outage_keeps_the_container_healthy(fake: FakeUpstream, tmp_path: Path):
    """Langfuse down: liveness and the compose/Dockerfile healthchecks stay healthy (compose restarted a
    working proxy before); readiness says which sink fails and why; no error text in a metric label."""
    with OtlpReceiver(public_key="pk-lf-h", secret_key="sk-lf-h") as rx:
        env = {"LANGFUSE_PUBLIC_KEY": "pk-lf-h", "LANGFUSE_SECRET_KEY": "sk-lf-h", "LANGFUSE_HOST": rx.base_url}
        rx.down()
        with Prompttap(tmp_path / "pt", fake.base_url, env=env) as pt:
            body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "while langfuse is down"}]}
            assert httpx.post(f"{pt.url}/v1/chat/completions", json=body).status_code == 200
            wait_for(lambda: pt.health()["sinks"]["langfuse"]["failed_exports"], what="a failed export")
            codes = probe(pt)
            assert codes == {**codes, **LIVE, **NOT_READY}, codes
            ready = httpx.get(f"{pt.url}/_prompttap/healthz", params={"verbose": 1}).json()
            [problem] = ready["problems"]
            assert problem.startswith("sink langfuse failing: OtlpError") and "unreachable" in problem
            for metrics in (httpx.get(f"{pt.url}/_prompttap/metrics").text, httpx.get(f"{pt.ui_url}/metrics").text):
                assert "unreachable" not in metrics and metric_labels(metrics) <= {"sink", "reason"}
                assert "prompttap_up 0" in metrics
            rx.up()
            pt.drained(timeout=60)
            assert probe(pt) == {**codes, **LIVE, "proxy /readyz": 200, "inspector /readyz": 200,
                                 "proxy ?verbose=1": 200, "inspector ?verbose=1": 200}  # fmt: skip


def test_recent_counts_leave_the_window():
    """What /readyz calls "lately": events older than the window no longer count; totals are elsewhere."""
    now = [1000.0]
    recent = Recent(window=300, buckets=30, clock=lambda: now[0])
    recent.add()
    recent.add(2)
    assert recent.count() == 3
    now[0] += 200
    recent.add()
    assert recent.count() == 4
    now[0] += 110  # the first three are 310 s old
    assert recent.count() == 1
    now[0] += 300
    assert recent.count() == 0
    for _ in range(10_000):  # bounded: one slice per 10 s, whatever the rate
        now[0] += 0.5
        recent.add()
    assert len(recent._slices) <= 30
    assert 580 <= recent.count() <= 600  # 2 a second over the window, exact to one 10 s slice
