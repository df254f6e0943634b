"""HTTPS interception end to end (issue 14): apps that keep their default base URL.

A real ``prompttap serve --intercept``; a fake upstream served over real TLS with a trustme CA,
reached as ``api.openai.com`` / ``api.anthropic.com`` through ``--intercept-host HOST=URL`` and
``--upstream-ca``; the official SDKs with their default base URLs, through the forward proxy,
trusting only prompttap's CA; ``prompttap run`` with Python, curl and Node.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import httpx2
import openai
import pytest
import trustme

from tests.fake_upstream import FakeUpstream
from tests.harness import ROOT, Prompttap, free_port, query_store

KEY = "sk-intercept-0123456789abcdefWXYZ"
HOSTS = ("api.openai.com", "api.anthropic.com")


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test CA (trustme) and a certificate for 127.0.0.1 signed by it: the fake upstream's TLS."""
    d = tmp_path_factory.mktemp("upstream-tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(d / "server.pem"))
    ca.cert_pem.write_to_path(str(d / "upstream-ca.pem"))
    return d


@pytest.fixture(scope="module")
def tls_fake(tls_dir: Path) -> Iterator[FakeUpstream]:
    fake = FakeUpstream(tls=(str(tls_dir / "server.pem"), str(tls_dir / "server.pem")))
    fake.start()
    yield fake
    fake.stop()


def intercept_flags(fake: FakeUpstream, tls_dir: Path, port: int, *extra: str) -> list[str]:
    flags = [
        "--intercept",
        "--intercept-listen",
        f"127.0.0.1:{port}",
        "--upstream-ca",
        str(tls_dir / "upstream-ca.pem"),
    ]
    for host in HOSTS:
        flags += ["--intercept-host", f"{host}={fake.base_url}"]
    return flags + list(extra)


@pytest.fixture(scope="module")
def ipt(tls_fake: FakeUpstream, tls_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prompttap]:
    port = free_port()
    home = tmp_path_factory.mktemp("intercept")
    with Prompttap(home, "http://127.0.0.1:9", *intercept_flags(tls_fake, tls_dir, port)) as p:
        p.forward = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
        yield p


def prompttap_ca(pt: Prompttap) -> ssl.SSLContext:
    """Trust prompttap's CA and nothing else: a certificate from anywhere but prompttap fails."""
    return ssl.create_default_context(cafile=str(pt.home / "ca" / "prompttap-ca.pem"))


def via_proxy(pt: Prompttap, **kw) -> httpx.Client:
    return httpx.Client(proxy=pt.forward, verify=prompttap_ca(pt), **kw)  # type: ignore[attr-defined]


def capture_with(pt: Prompttap, marker: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        pt.drained()
        for item in pt.captures(limit=200):
            full = pt.capture(item["id"])
            if marker in (full["request_body"] or ""):
                return full
        if time.monotonic() > deadline:
            raise AssertionError(f"no capture carries {marker}")
        time.sleep(0.1)


def upstream_request(fake: FakeUpstream, marker: str):
    for rec in reversed(list(fake.requests)):
        if marker.encode() in rec.body:
            return rec
    raise AssertionError(f"the upstream never saw {marker}")


def test_openai_sdk_default_base_url_is_intercepted_and_recorded(ipt: Prompttap, tls_fake: FakeUpstream):
    n = uuid.uuid4().hex
    client = openai.OpenAI(api_key=KEY, http_client=via_proxy(ipt))
    assert str(client.base_url).startswith("https://api.openai.com/")
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"hello {n}"}]
    )
    reply = raw.parse()
    up = upstream_request(tls_fake, n)
    assert raw.http_response.content == up.response_bytes  # byte-identical through two TLS legs
    assert up.body == raw.http_request.content  # and the request reached the upstream unchanged
    cap = capture_with(ipt, n)
    assert cap["route"] == "api.openai.com" and cap["api"] == "openai.chat" and cap["outcome"] == "ok"
    assert cap["path"] == "/v1/chat/completions"
    assert cap["upstream_url"] == f"{tls_fake.base_url}/v1/chat/completions"
    assert cap["response_body"].encode() == up.response_bytes
    assert cap["output_text"] == reply.choices[0].message.content
    assert cap["request_headers"]["authorization"] == "Bearer ...WXYZ"
    assert KEY not in json.dumps(cap)


def test_openai_stream_with_tools_arrives_event_by_event(ipt: Prompttap, tls_fake: FakeUpstream):
    n = uuid.uuid4().hex

    async def run() -> tuple[list[float], list]:
        http = httpx.AsyncClient(proxy=ipt.forward, verify=prompttap_ca(ipt))  # type: ignore[attr-defined]
        client = openai.AsyncOpenAI(api_key=KEY, http_client=http)
        t0 = time.monotonic()
        stream = await client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": f"call tool please {n}"}],
            tools=[
                {
                    "type": "function",
                    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
                }
            ],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-fake-chunk-delay-ms": "60"},
        )
        arrivals, chunks = [], []
        async for chunk in stream:
            arrivals.append(time.monotonic() - t0)
            chunks.append(chunk)
        await http.aclose()
        return arrivals, chunks

    arrivals, _ = asyncio.run(run())
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert len(arrivals) >= 4 and sum(g > 0.03 for g in gaps) >= len(gaps) - 2, gaps  # not buffered
    up = upstream_request(tls_fake, n)
    cap = capture_with(ipt, n)
    assert cap["stream"] is True and cap["route"] == "api.openai.com"
    assert cap["response_body"].encode() == up.response_bytes
    assert cap["ttft_ms"] is not None and cap["ttft_ms"] > 0
    assert len(cap["stream_timing"]) >= 4
    assert cap["output_tool_calls"], "the tool calls were understood"


def test_anthropic_sdk_stream_and_message(ipt: Prompttap, tls_fake: FakeUpstream):
    n = uuid.uuid4().hex
    # This SDK builds on httpx2 (a fork of httpx), so it takes that package's client.
    http = httpx2.Client(proxy=ipt.forward, verify=prompttap_ca(ipt))  # type: ignore[attr-defined]
    client = anthropic.Anthropic(api_key=KEY, http_client=http)
    msg = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": f"hi {n}"}]
    )
    with client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": f"stream {n}"}]
    ) as stream:
        text = "".join(stream.text_stream)
    plain = capture_with(ipt, f"hi {n}")
    streamed = capture_with(ipt, f"stream {n}")
    assert plain["route"] == streamed["route"] == "api.anthropic.com"
    assert plain["api"] == "anthropic.messages" and plain["output_text"] == msg.content[0].text
    assert streamed["stream"] is True and streamed["output_text"] == text
    assert streamed["request_headers"]["authorization"] == "Bearer ...WXYZ"  # this SDK sends a bearer key
    assert upstream_request(tls_fake, f"stream {n}").header("authorization") == f"Bearer {KEY}"  # untouched
    assert KEY not in json.dumps(streamed)


def test_plain_http_absolute_form_to_an_intercepted_host_is_recorded(ipt: Prompttap, tls_fake: FakeUpstream):
    n = uuid.uuid4().hex
    with httpx.Client(proxy=ipt.forward) as c:  # type: ignore[attr-defined]
        r = c.post(
            "http://api.openai.com/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": n}]},
        )
    assert r.status_code == 200
    assert capture_with(ipt, n)["route"] == "api.openai.com"


def test_other_hosts_are_tunnelled_untouched_and_not_recorded(ipt: Prompttap):
    """CONNECT to a host that is not intercepted: bytes pass both ways unchanged, nothing is decrypted."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    payload = os.urandom(300_000)
    received = bytearray()

    def echo() -> None:
        conn, _ = server.accept()
        with conn:
            while len(received) < len(payload):
                data = conn.recv(65536)
                if not data:
                    break
                received.extend(data)
                conn.sendall(data[::-1])

    t = threading.Thread(target=echo, daemon=True)
    t.start()
    before = len(ipt.captures())
    with socket.create_connection(("127.0.0.1", int(ipt.forward.rsplit(":", 1)[1]))) as s:  # type: ignore[attr-defined]
        s.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        head = s.recv(4096)
        assert head.startswith(b"HTTP/1.1 200")
        s.sendall(payload)
        back = bytearray()
        s.settimeout(10)
        while len(back) < len(payload):
            back.extend(s.recv(65536))
    t.join(5)
    server.close()
    assert bytes(received) == payload
    assert len(back) == len(payload)
    assert ipt.health()["intercept"]["tunnelled_connections"] >= 1
    assert len(ipt.captures()) == before


def test_intercept_only_refuses_other_hosts(tls_fake: FakeUpstream, tls_dir: Path, tmp_path: Path):
    port = free_port()
    with Prompttap(tmp_path / "h", "http://127.0.0.1:9", *intercept_flags(tls_fake, tls_dir, port, "--intercept-only")):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 403")
        with httpx.Client(proxy=f"http://127.0.0.1:{port}") as c:
            assert c.get("http://example.org/").status_code == 403


def test_token_is_required_when_set(tls_fake: FakeUpstream, tls_dir: Path, tmp_path: Path):
    port = free_port()
    token = "tok-" + uuid.uuid4().hex
    flags = intercept_flags(tls_fake, tls_dir, port, "--intercept-token", token)
    with Prompttap(tmp_path / "h", "http://127.0.0.1:9", *flags) as pt:
        ca = ssl.create_default_context(cafile=str(pt.home / "ca" / "prompttap-ca.pem"))
        with (
            pytest.raises(httpx.ProxyError, match="407"),
            httpx.Client(proxy=f"http://127.0.0.1:{port}", verify=ca) as c,
        ):
            c.get("https://api.openai.com/v1/models")
        with httpx.Client(proxy=f"http://prompttap:{token}@127.0.0.1:{port}", verify=ca) as c:
            assert c.get("https://api.openai.com/v1/models").status_code == 200
        assert token not in pt.log()


def test_a_client_that_does_not_trust_the_ca_is_counted_and_told_how(ipt: Prompttap):
    with pytest.raises(httpx.ConnectError), httpx.Client(proxy=ipt.forward) as c:  # type: ignore[attr-defined]
        c.get("https://api.anthropic.com/v1/models")  # the system store does not know prompttap's CA
    deadline = time.monotonic() + 10
    while not ipt.health()["intercept"]["handshake_failures"].get("api.anthropic.com"):
        assert time.monotonic() < deadline, ipt.health()
        time.sleep(0.1)
    assert "rejected prompttap's certificate for api.anthropic.com" in ipt.log()
    assert "prompttap run" in ipt.log()


def test_the_proxy_port_still_refuses_connect(ipt: Prompttap):
    with socket.create_connection(("127.0.0.1", ipt.port)) as s:
        s.sendall(b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 405")


def run_env(ipt: Prompttap, tls_fake: FakeUpstream) -> list[str]:
    """``prompttap run`` with the same home and forward-proxy address as the running serve."""
    cmd = [sys.executable, "-m", "prompttap", "run", "--home", str(ipt.home)]
    cmd += ["--intercept-listen", ipt.forward.removeprefix("http://")]  # type: ignore[attr-defined]
    for host in HOSTS:
        cmd += ["--intercept-host", f"{host}={tls_fake.base_url}"]
    return [*cmd, "--"]


def test_prompttap_run_python_and_curl(ipt: Prompttap, tls_fake: FakeUpstream):
    n = uuid.uuid4().hex
    code = (
        "import openai, sys\n"
        f"c = openai.OpenAI(api_key={KEY!r})\n"
        f"r = c.chat.completions.create(model='gpt-4o', messages=[{{'role': 'user', 'content': 'run {n}'}}])\n"
        "print(r.choices[0].message.content)\n"
        "sys.exit(7)\n"
    )
    env = {k: v for k, v in os.environ.items() if "PROXY" not in k.upper() and not k.startswith("SSL_")}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([*run_env(ipt, tls_fake), sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 7, out.stderr
    assert f"run {n}" in out.stdout
    assert capture_with(ipt, f"run {n}")["route"] == "api.openai.com"

    m = uuid.uuid4().hex
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": f"curl {m}"}]})
    headers = ["-H", "content-type: application/json", "-H", f"authorization: Bearer {KEY}"]
    curl = ["curl", "-sS", "--fail", "https://api.openai.com/v1/chat/completions", *headers, "-d", body]
    out = subprocess.run([*run_env(ipt, tls_fake), *curl], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["choices"][0]["message"]["content"]
    assert capture_with(ipt, f"curl {m}")["client"].startswith("curl/")


NODE_CLIENT = r"""
// Node's https through the forward proxy: CONNECT, then TLS to api.openai.com trusting
// NODE_EXTRA_CA_CERTS (set by `prompttap run`). Node 24 does this itself with NODE_USE_ENV_PROXY=1.
const http = require("http"), https = require("https"), tls = require("tls");
const proxy = new URL(process.env.HTTPS_PROXY);
const body = JSON.stringify({model: "gpt-4o", messages: [{role: "user", content: process.argv[1]}]});
http.request({host: proxy.hostname, port: proxy.port, method: "CONNECT", path: "api.openai.com:443"})
  .on("connect", (res, socket) => {
    if (res.statusCode !== 200) { console.error("CONNECT", res.statusCode); process.exit(2); }
    const req = https.request({host: "api.openai.com", path: "/v1/chat/completions", method: "POST",
      headers: {"content-type": "application/json", "authorization": "Bearer KEY"},
      createConnection: () => tls.connect({socket, servername: "api.openai.com"})}, (r) => {
        let data = ""; r.on("data", (c) => data += c);
        r.on("end", () => { console.log(r.statusCode, JSON.parse(data).choices[0].message.content); });
      });
    req.end(body);
  }).end();
"""


def test_node_client_through_the_forward_proxy(ipt: Prompttap, tls_fake: FakeUpstream):
    n = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if "PROXY" not in k.upper()}
    env["PYTHONPATH"] = str(ROOT)
    script = NODE_CLIENT.replace("KEY", KEY)
    out = subprocess.run([*run_env(ipt, tls_fake), "node", "-e", script, f"node {n}"], env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("200 ")
    cap = capture_with(ipt, f"node {n}")
    assert cap["route"] == "api.openai.com" and cap["request_headers"]["authorization"] == "Bearer ...WXYZ"


def test_kill_9_during_intercepted_streams_loses_no_answer_a_client_saw(
    tls_fake: FakeUpstream, tls_dir: Path, tmp_path: Path
):
    port = free_port()
    home = tmp_path / "h"
    flags = intercept_flags(tls_fake, tls_dir, port)
    pt = Prompttap(home, "http://127.0.0.1:9", *flags).start()
    ca = ssl.create_default_context(cafile=str(home / "ca" / "prompttap-ca.pem"))
    seen: list[str] = []
    stop = threading.Event()

    def client(i: int) -> None:
        with httpx.Client(proxy=f"http://127.0.0.1:{port}", verify=ca, timeout=10) as c:
            while not stop.is_set():
                n = f"{i}-{uuid.uuid4().hex}"
                body = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": n}]}
                try:
                    with c.stream("POST", "https://api.openai.com/v1/chat/completions", json=body) as r:
                        text = b"".join(r.iter_bytes())
                except httpx.HTTPError:
                    return
                if text.rstrip().endswith(b"data: [DONE]"):
                    seen.append(n)  # this client saw the whole answer

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(3)
    pt.kill()
    stop.set()
    for t in threads:
        t.join(15)
    assert len(seen) > 10
    with Prompttap(home, "http://127.0.0.1:9", *flags, ui=False) as again:
        deadline = time.monotonic() + 60
        while any(s["pending"] for s in again.health()["sinks"].values()):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    bodies = "\n".join(str(r[0]) for r in query_store(home, "SELECT request_body FROM captures FINAL"))
    lost = [n for n in seen if n not in bodies]
    assert lost == [], f"{len(lost)} of {len(seen)} completed intercepted streams lost"
