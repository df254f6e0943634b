"""One secret in every carrier, found nowhere (issue 13, item 10).

One unique secret is planted in every place a credential rides outside a body, through one real
``prompttap serve`` (embedded store, Langfuse and an OTLP endpoint both on a real receiver):

- request headers whose name says they carry one (every gateway name of item 8, ``Authorization``,
  ``Cookie``, ``Proxy-Authorization``, ``x-api-key``, ``x-goog-api-key``) and the upstream's
  response headers (``Set-Cookie``, ``x-session-token``);
- query parameters (``key``, ``api_key``, ``sig``, ``signature``, ``token``), a ``;key=`` matrix
  parameter and a ``%3Fkey=`` in the path;
- the ``user:password@`` of a ``--route`` URL and of an ``--intercept-host HOST=URL``;
- upstreams that refuse the connection, never complete it (connect timeout) and never answer
  (read timeout), with the secret in a Gemini-style ``?key=`` and in their route's userinfo;
- the Langfuse secret key prompttap is configured with.

One capture is refused by both span sinks so it is set aside in ``rejected/``. Once the sinks
drained, the secret is searched for in the store (every column of every table, after the server
stopped), the spool files, ``rejected/`` (and ``prompttap rejected list``), every OTLP and Langfuse
payload the receiver got (raw bytes and decoded), the log, every export format, ``/healthz``,
``/readyz`` and ``/metrics`` on both ports, every inspector page and its JSON twin, and the error
bodies clients got: zero hits. A masked ``...abcd`` (the last four characters) is allowed; any
longer piece of the secret (every 8-character window of it, its last five characters) or of its
base64 forms (Basic auth) is a leak. Each place is also checked to hold what it should (the
masked tail, the capture ids...), so an empty place cannot pass for a clean one.

Secrets inside JSON bodies are not promised (a body is kept as sent; the README says so): the
bodies sent here carry none.
"""

from __future__ import annotations

import base64
import gzip
import itertools
import json
import ssl
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from tests.harness import Prompttap, free_port, query_store
from tests.otlp_receiver import OtlpReceiver, decode_request
from tests.raw_upstream import RawUpstream, Script, Seen
from tests.test_export import FakeLangfuse
from tests.test_export import cli as export_cli
from tests.test_hostile_credentials import HEADERS, files_under, unanswered
from tests.test_rejected import cli, wait_for

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
TAIL = "GHJKLMNPQRSTUVWXYZ"  # no hex digit: the masked tail cannot be mistaken for an id's


def make_secret() -> str:
    """``S3CR3T`` + a uuid in base62 + four letters: no character a URL, JSON or a header escapes."""
    n, body = uuid.uuid4().int, ""
    while n:
        n, d = divmod(n, 62)
        body += BASE62[d]
    m = uuid.uuid4().int
    return "S3CR3T" + body + "".join(TAIL[(m >> (5 * i)) % len(TAIL)] for i in range(4))


SECRET = make_secret()
USER = "svc"
BASICS = {  # the secret as it travels in Basic auth, and the part of it that encodes only the secret
    prefix: base64.b64encode(f"{prefix}{SECRET}".encode()).decode() for prefix in (f"{USER}:", "pk-lf-nowhere:")
}


def needles() -> set[str]:
    """Every piece of the secret longer than the masked tail it may show."""
    out = {SECRET[i : i + 8] for i in range(len(SECRET) - 7)} | {SECRET[-5:]}
    for prefix, b64 in BASICS.items():
        start = (len(prefix) // 3 + 1) * 4  # from here on, the base64 encodes the secret's bytes only
        out |= {b64[i : i + 8] for i in range(start, len(b64) - 7)}
    return {n.lower() for n in out}


NEEDLES = needles()


def leaks(text: str | bytes) -> list[str]:
    """The pieces of the secret in ``text`` (case-insensitive), each with some context."""
    low = (text.decode("latin-1") if isinstance(text, bytes) else text).lower()
    found = []
    for needle in sorted(NEEDLES):
        at = low.find(needle)
        if at >= 0:
            found.append(low[max(0, at - 60) : at + 60])
    return found


# -- the upstream ----------------------------------------------------------------------------------

CHAT_ANSWER = json.dumps(
    {
        "id": "chatcmpl-nowhere",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "All clear."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }
).encode()
MODELS_ANSWER = b'{"object":"list","data":[{"id":"gpt-4o","object":"model","created":1700000000,"owned_by":"x"}]}'


def answer(seen: Seen) -> Script:
    """A chat or models answer carrying the secret in Set-Cookie and x-session-token; ``/hang`` never answers."""
    if b"/hang/" in seen.target:
        return Script([], hold=True)
    body = MODELS_ANSWER if b"/models" in seen.target else CHAT_ANSWER
    head = (
        f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        f"set-cookie: sid={SECRET}; Path=/; HttpOnly\r\nx-session-token: {SECRET}\r\nconnection: close\r\n\r\n"
    )
    return Script([head.encode() + body])


class RecordingReceiver(OtlpReceiver):
    """The test receiver, keeping every request body it got (delivered or refused), decompressed."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.bodies: list[tuple[str, bytes]] = []

    def _record(self, path: str, headers: dict[str, str], spans: list, reply: Any, body: bytes, delivered=False):  # type: ignore[no-untyped-def, override]
        raw = gzip.decompress(body) if headers.get("content-encoding", "").lower() == "gzip" else body
        with self._lock:
            self.bodies.append((path, raw))
        return super()._record(path, headers, spans, reply, body, delivered)


# -- planting ----------------------------------------------------------------------------------------

REQUEST_HEADERS = {
    **{name: scheme + SECRET for name, scheme in HEADERS},
    "authorization": f"Bearer {SECRET}",
    "cookie": f"sid={SECRET}; theme=dark",
    "proxy-authorization": f"Basic {BASICS[f'{USER}:']}",
    "x-api-key": SECRET,
    "x-goog-api-key": SECRET,
}
QUERY = "&".join(f"{name}={SECRET}" for name in ("key", "api_key", "sig", "signature", "token"))
GEMINI = "/v1beta/models/gemini-2.0-flash:generateContent"


@dataclass
class Scene:
    pt: Prompttap
    tag: str
    captures: list[dict[str, Any]] = field(default_factory=list)
    places: dict[str, str | bytes] = field(default_factory=dict)  # where -> what it shows
    upstream: list[Seen] = field(default_factory=list)
    client_headers: list[httpx.Headers] = field(default_factory=list)


def chat_body(text: str) -> dict[str, Any]:
    return {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You answer questions about the weather, briefly."},
            {"role": "user", "content": text},
        ],
    }


def plant(pt: Prompttap, up: RawUpstream, forward: str, tag: str) -> tuple[list[httpx.Response], list[httpx.Response]]:
    """Send every carrier through prompttap; returns the answers (forwarded, and failed)."""
    own = {"x-prompttap-tags": tag, "x-prompttap-session": f"sess-{tag}"}
    failed: list[httpx.Response] = []
    slow = threading.Thread(  # the connect timeout takes 10 s: meanwhile, the rest
        target=lambda: failed.append(
            httpx.post(f"{pt.url}/blackhole{GEMINI}?key={SECRET}", json={"contents": []}, headers=own, timeout=60)
        )
    )
    slow.start()
    ok = []
    with httpx.Client(headers=own, timeout=30) as client:
        for text in ("Is it raining in Paris?", "And in Lyon?"):
            ok.append(
                client.post(f"{pt.url}/v1/chat/completions?{QUERY}", json=chat_body(text), headers=REQUEST_HEADERS)
            )
        poison = {**REQUEST_HEADERS, "x-prompttap-user": "poison"}  # both span sinks refuse this one
        ok.append(client.post(f"{pt.url}/v1/chat/completions?{QUERY}", json=chat_body("Snow?"), headers=poison))
        ok.append(client.get(f"{pt.url}/v1/models;key={SECRET}"))
        ok.append(client.get(f"{pt.url}/v1/models%3Fkey={SECRET}"))
        ok.append(client.post(f"{pt.url}/basic/v1/chat/completions", json=chat_body("Wind in Nice?")))
        failed.append(client.post(f"{pt.url}/refused{GEMINI}?key={SECRET}", json={"contents": []}))
        failed.append(client.post(f"{pt.url}/hang/v1/chat/completions?key={SECRET}", json=chat_body("Fog?")))
    ca = ssl.create_default_context(cafile=str(pt.home / "ca" / "prompttap-ca.pem"))
    with httpx.Client(proxy=forward, verify=ca, headers=own, timeout=30) as client:
        ok.append(client.post("https://llm.nowhere.example/v1/chat/completions", json=chat_body("Sun in Rome?")))
    slow.join(60)
    return ok, failed


# -- searching ---------------------------------------------------------------------------------------


def get(url: str) -> str:
    r = httpx.get(url, timeout=60)
    assert r.status_code == 200, (url, r.status_code, r.text[:500])
    return r.text


def inspector_pages(ui: str, captures: list[dict[str, Any]]) -> dict[str, str]:
    """Every inspector page and JSON answer about these captures."""
    pages = {}
    for path in ("/", "/captures/rows", "/api/captures?limit=1000", "/api/filters", "/templates", "/api/templates",
                 "/stats", "/api/stats", "/rejected", "/api/rejected", "/diff", "/api/export/info"):  # fmt: skip
        pages[path] = get(ui + path)
    for c in captures:
        for path in ("/captures/{}", "/api/captures/{}", "/api/captures/{}/replays",
                     "/api/captures/{}/compare-candidates"):  # fmt: skip
            pages[path.format(c["id"])] = get(ui + path.format(c["id"]))
    for a, b in itertools.pairwise(captures):
        for path in (f"/diff?a={a['id']}&b={b['id']}", f"/api/diff?a={a['id']}&b={b['id']}"):
            pages[path] = get(ui + path)
    for thread in {c["thread_id"] for c in captures if c.get("thread_id")}:
        pages[f"/threads/{thread}"] = get(f"{ui}/threads/{thread}")
        pages[f"/api/threads/{thread}"] = get(f"{ui}/api/threads/{thread}")
    for template in {c["prompt_template_id"] for c in captures if c.get("prompt_template_id")}:
        pages[f"/templates/{template}"] = get(f"{ui}/templates/{template}")
        pages[f"/api/templates/{template}"] = get(f"{ui}/api/templates/{template}")
    return pages


def health(pt: Prompttap) -> dict[str, str]:
    out = {}
    for base, prefix in ((pt.url, "/_prompttap"), (pt.ui_url, "")):
        for path in ("/healthz", "/healthz?verbose=1", "/readyz", "/metrics"):
            r = httpx.get(f"{base}{prefix}{path}", timeout=30)
            out[f"{base}{prefix}{path}"] = r.text
    return out


def exports(pt: Prompttap, out: Path) -> dict[str, str | bytes]:
    """Every export format of every capture, through the running server."""
    where = ["--home", str(pt.home), "--ui", f"127.0.0.1:{pt.ui_port}", "--json", "--no-progress"]
    every = ["--outcome", "any", "--include-incomplete", "--per-capture", "--no-dedupe"]
    found: dict[str, str | bytes] = {}
    for fmt, ext in (("openai-chat", "jsonl"), ("anthropic", "jsonl"), ("sharegpt", "jsonl"), ("parquet", "parquet")):
        path = out / f"export.{ext}"
        r = export_cli("--format", fmt, "--out", str(path), *every, *where)
        assert r.returncode == 0, r.stderr
        found[f"export {fmt} report"] = r.stdout + r.stderr
        found[f"export {fmt} file"] = path.read_bytes()
        if fmt == "parquet":
            found["export parquet rows"] = json.dumps(pq.read_table(path).to_pylist(), default=str)
        else:
            found[f"export {fmt} file"] = path.read_text()
    with FakeLangfuse() as lf:
        env = {"LANGFUSE_PUBLIC_KEY": "pk-lf-export", "LANGFUSE_SECRET_KEY": "sk-lf-export", "LANGFUSE_HOST": lf.url}
        r = export_cli("--format", "langfuse", "--dataset", "nowhere", *every, *where, env=env)
        assert r.returncode == 0, r.stderr
        found["export langfuse report"] = r.stdout + r.stderr
        found["export langfuse items"] = json.dumps([lf.datasets, lf.items])
        assert lf.items, "the langfuse export sent nothing"
    return found


def store_dump(home: Path) -> str:
    """Every row of every table of a stopped prompttap's store, every column as JSON."""
    tables = query_store(home, "SELECT name FROM system.tables WHERE database = currentDatabase() AND "
                               "engine NOT LIKE '%View%' ORDER BY name")  # fmt: skip
    sql = " UNION ALL ".join(f"SELECT '{t}', formatRow('JSONEachRow', *) FROM `{t}`" for (t,) in tables)
    rows = query_store(home, sql)
    assert {t for t, _ in rows} >= {"captures", "otel_traces"}, rows[:3]
    return "\n".join(f"{t}: {row}" for t, row in rows)


# -- the scene ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def up() -> Iterator[RawUpstream]:
    with RawUpstream(answer) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def scene(up: RawUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    tmp = tmp_path_factory.mktemp("nowhere")
    home = tmp / "pt"
    userinfo = f"http://{USER}:{SECRET}@127.0.0.1"
    forward = free_port()
    with (
        RecordingReceiver(public_key="pk-lf-nowhere", secret_key=SECRET) as rx,
        unanswered() as dead,
    ):
        rx.fault(poison=("user.id", "poison"))
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": rx.base_url,
            "LANGFUSE_PUBLIC_KEY": "pk-lf-nowhere",
            "LANGFUSE_SECRET_KEY": SECRET,
            "LANGFUSE_HOST": rx.base_url,
        }
        flags = [
            "--upstream-timeout", "3",
            "--route", f"basic={userinfo}:{up.port}",
            "--route", f"refused={userinfo}:{free_port()}",
            "--route", f"blackhole={dead.replace('http://', f'http://{USER}:{SECRET}@')}",
            "--route", f"hang={userinfo}:{up.port}/hang",
            "--intercept", "--intercept-listen", f"127.0.0.1:{forward}",
            "--intercept-host", f"llm.nowhere.example={userinfo}:{up.port}",
        ]  # fmt: skip
        pt = Prompttap(home, up.base_url, *flags, env=env).start()
        tag = uuid.uuid4().hex
        s = Scene(pt, tag)
        try:
            ok, failed = plant(pt, up, f"http://127.0.0.1:{forward}", tag)
            assert [r.status_code for r in ok] == [200] * len(ok), [(r.status_code, r.text[:200]) for r in ok]
            assert sorted(r.status_code for r in failed) == [502, 504, 504], [(r.status_code, r.text) for r in failed]
            s.client_headers = [r.headers for r in ok]
            s.places.update({f"error body {r.status_code} {r.url.path}": r.text for r in failed})
            items = pt.wait_captures(len(ok) + len(failed), tag=tag, timeout=60)
            pt.drained(timeout=60)
            wait_for(lambda: pt.health()["rejected"]["count"] == 2, what="both span sinks refusing the poison")
            s.captures = [pt.capture(item["id"]) for item in sorted(items, key=lambda i: i["started_at"])]
            s.places.update(inspector_pages(pt.ui_url, s.captures))
            s.places.update(health(pt))
            s.places.update(exports(pt, tmp))
            listed = cli("rejected", "list", "--home", str(home))
            s.places["prompttap rejected list"] = listed.stdout + listed.stderr
            s.places["rejected/"] = files_under(home / "rejected")
        finally:
            assert pt.stop() == 0
        s.places["spool files"] = files_under(home / "spool")
        s.places["log"] = pt.log()
        for i, (path, body) in enumerate(rx.bodies):
            s.places[f"receiver {path} #{i} raw"] = body
            s.places[f"receiver {path} #{i} decoded"] = json.dumps(decode_request(body, path), default=str)
    s.places["store"] = store_dump(home)
    s.upstream = list(up.seen)
    yield s


# -- the tests -----------------------------------------------------------------------------------------


def test_every_carrier_reached_the_upstream_with_the_secret(scene: Scene):
    """The planting worked: the upstream got every carrier untouched and the client every response header,
    so a clean search below means prompttap kept the secret out, not that it never had it."""
    targets = [s.target for s in scene.upstream]
    assert sum(f"?{QUERY}".encode() in t for t in targets) == 3
    assert any(t == f"/v1/models;key={SECRET}".encode() for t in targets)
    assert any(t == f"/v1/models%3Fkey={SECRET}".encode() for t in targets)
    assert any(t == f"/hang/v1/chat/completions?key={SECRET}".encode() for t in targets)
    with_headers = [s for s in scene.upstream if f"?{QUERY}".encode() in s.target]
    for seen in with_headers:
        for name, value in REQUEST_HEADERS.items():
            if name != "proxy-authorization":  # hop-by-hop: prompttap's own, not the upstream's
                assert seen.header(name.encode()) == value.encode(), name
    basic = f"Basic {BASICS[f'{USER}:']}".encode()
    by_userinfo = [s for s in scene.upstream if s.header(b"authorization") == basic]
    assert len(by_userinfo) >= 3  # the basic route, the intercepted host, the hanging route
    for headers in scene.client_headers:
        assert headers["x-session-token"] == SECRET and SECRET in headers["set-cookie"]


PLACES = ["store", "spool files", "rejected", "receiver", "log", "export", "healthz/readyz/metrics", "inspector",
          "error body"]  # fmt: skip


def group(where: str) -> str:
    if where.startswith(("/", "/api")):
        return "inspector"
    if "/healthz" in where or "/readyz" in where or "/metrics" in where:
        return "healthz/readyz/metrics"
    return next(p for p in PLACES if where.startswith(p) or where.startswith(f"prompttap {p}"))


def test_every_place_searched_holds_what_it_should(scene: Scene):
    """No place is clean because it is empty: each holds the captures (or their masked tail)."""
    groups = {group(where) for where in scene.places}
    assert groups == set(PLACES), groups
    masked = f"...{SECRET[-4:]}"
    for where in ("store", "spool files", "rejected/"):
        assert masked.encode() in (p if isinstance(p := scene.places[where], bytes) else p.encode()), where
    for c in scene.captures:
        assert c["id"] in scene.places["store"]
        assert c["id"] in scene.places[f"/captures/{c['id']}"]
    assert masked in scene.places[f"/api/captures/{scene.captures[0]['id']}"]
    spans = "".join(v for k, v in scene.places.items() if k.startswith("receiver") and k.endswith("decoded"))
    assert all(c["span_id"] in spans for c in scene.captures)  # both receivers got (or refused) every span
    assert "Is it raining in Paris?" in scene.places["export openai-chat file"]
    assert "poison" in scene.places["prompttap rejected list"]


@pytest.mark.parametrize("place", PLACES)
def test_the_secret_is_nowhere(scene: Scene, place: str):
    found = {where: hits for where, text in scene.places.items() if group(where) == place and (hits := leaks(text))}
    assert not found, found
