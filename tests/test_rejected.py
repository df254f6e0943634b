"""Values the store refuses (issue 13, item 12): what a client sends never costs a capture, and what a
sink still refuses for a fault of prompttap's own is visible and can be sent again.

Every test drives the real ``prompttap serve`` (and the real ``prompttap rejected`` command) over real
sockets, with the real embedded store and a real OTLP receiver.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson

from prompttap.collector.spool import Spool
from prompttap.schemas.capture import Capture, new_capture_id
from tests.fake_upstream import FakeUpstream
from tests.harness import ROOT, Prompttap
from tests.otlp_receiver import OtlpReceiver

CHAT = "/v1/chat/completions"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real ``prompttap`` command line."""
    return subprocess.run(
        [sys.executable, "-m", "prompttap", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def store_command(home: Path, sql: str) -> None:
    """Run DDL on a stopped prompttap's embedded store (in a child process: one process per store)."""
    code = "import sys\nfrom schemas.store import open_store\nopen_store(sys.argv[1]).command(sys.argv[2])\n"
    store = f"chdb://{(home / 'store').resolve()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code, store, sql], cwd=ROOT, env=env, check=True, timeout=120)


def wait_for(predicate: Any, timeout: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def chat(pt: Prompttap, body: dict[str, Any] | bytes, **headers: str) -> httpx.Response:
    if isinstance(body, bytes):
        headers["content-type"] = "application/json"
        return httpx.post(f"{pt.url}{CHAT}", content=body, headers=headers, timeout=30)
    return httpx.post(f"{pt.url}{CHAT}", json=body, headers=headers, timeout=30)


def tagged(pt: Prompttap, tag: str) -> dict[str, Any]:
    [item] = wait_for(lambda: pt.captures(tag=tag), what=f"the capture tagged {tag}")
    return pt.capture(item["id"])


# ------------------------------------------------------------------------------ what a client sends


def test_values_a_client_controls_never_cost_a_capture(fake: FakeUpstream, tmp_path: Path):
    """Lone surrogates (JSON escapes of half an emoji) in the text a store column holds, and a
    Replay-Of that is no capture id: every capture is stored and shown; nothing is set aside."""
    with Prompttap(tmp_path / "pt", fake.base_url) as pt:
        raw = (
            b'{"model":"gpt-4o","messages":[{"role":"system","content":"be brief \\udc00 and \\ud83d"},'
            b'{"role":"user","content":"hello"}]}'
        )
        assert chat(pt, raw, **{"x-prompttap-tags": "surrogates"}).status_code == 200
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "replay?"}]}
        assert chat(pt, body, **{"x-prompttap-tags": "replayof", "x-prompttap-replay-of": "not-a-uuid"}).is_success
        pt.drained()
        surrogates, replay = tagged(pt, "surrogates"), tagged(pt, "replayof")
        assert surrogates["system_prompt"] == "be brief \\udc00 and \\ud83d"  # kept, as the escape it was sent as
        assert surrogates["messages"][-1]["content"] == "hello"
        assert replay["replay_of"] is None and "X-Prompttap-Replay-Of" in replay["error"]
        for c in (surrogates, replay):
            assert httpx.get(f"{pt.ui_url}/captures/{c['id']}").status_code == 200
        health = pt.health()
        assert health["rejected"] == {"count": 0, "items": []}
        assert all(s["rejected"] == 0 for s in health["sinks"].values())
    assert not (pt.home / "rejected").exists() or not list((pt.home / "rejected").iterdir())


def test_a_record_spooled_with_unstorable_ids_is_stored(fake: FakeUpstream, tmp_path: Path):
    """A record already in the spool (written by an older prompttap) with a Replay-Of that is no UUID and
    a trace id that is no W3C id: the encoder makes them fit rather than have the store refuse the row."""
    home = tmp_path / "pt"
    capture_id = new_capture_id()
    record = Capture(
        id=capture_id,
        trace_id="not-hex-and-far-too-long-for-a-trace-id",
        span_id="0123456789abcdef",
        parent_span_id="",
        started_at=time.time(),
        route="default",
        method="POST",
        path=CHAT,
        upstream_url=f"{fake.base_url}{CHAT}",
        status_code=200,
        request_body=b'{"model":"gpt-4o","messages":[{"role":"user","content":"old"}]}',
        replay_of="not-a-uuid",
    ).to_record()
    spool = Spool(home / "spool", ["clickhouse", "otel_traces"])
    spool.append(orjson.dumps(record))
    spool.close()
    with Prompttap(home, fake.base_url) as pt:
        pt.drained()
        stored = wait_for(lambda: pt.captures(), what="the spooled capture")
        assert [c["id"] for c in stored] == [str(capture_id)]
        full = pt.capture(str(capture_id))
        assert full["replay_of"] is None and full["trace_id"] == "0" * 32
        assert pt.health()["rejected"]["count"] == 0


# ------------------------------------------------------------------------------ what a sink refuses


def test_a_refused_record_is_visible_and_retried_through_the_running_server(fake: FakeUpstream, tmp_path: Path):
    """An OTLP receiver refuses one span (400). The record is counted and listed on /healthz, /readyz,
    /metrics, the inspector's Rejected page and its JSON twin, and by `prompttap rejected list`;
    `prompttap rejected retry` (through the running server: it owns the store) keeps it while the cause
    lasts and delivers it, once, when the cause is fixed."""
    with OtlpReceiver() as rx:
        rx.fault(poison=("user.id", "poison"))
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": rx.base_url}
        with Prompttap(tmp_path / "pt", fake.base_url, env=env) as pt:
            for user in ("alice", "poison", "bob"):
                body = {"model": "gpt-4o", "messages": [{"role": "user", "content": f"hi from {user}"}]}
                assert chat(pt, body, **{"x-prompttap-user": user, "x-prompttap-tags": user}).status_code == 200
            victim = tagged(pt, "poison")
            health = wait_for(lambda: (h := pt.health())["rejected"]["count"] and h, what="the refusal")
            pt.drained()
            assert health["rejected"] == {"count": 1, "items": [{"sink": "otlp", "id": victim["id"], "at": health[
                "rejected"]["items"][0]["at"]}]}  # fmt: skip
            ready = httpx.get(f"{pt.url}/_prompttap/readyz")
            assert ready.status_code == 503
            assert any("sink otlp refused 1 captures" in p for p in ready.json()["problems"])
            assert "prompttap_rejected_records 1" in httpx.get(f"{pt.ui_url}/metrics").text
            listing = httpx.get(f"{pt.ui_url}/api/rejected").json()
            assert listing["count"] == 1 and listing["items"][0]["id"] == victim["id"]
            assert "HTTP 400" in listing["items"][0]["reason"]
            page = httpx.get(f"{pt.ui_url}/rejected")
            assert page.status_code == 200 and victim["id"] in page.text and "HTTP 400" in page.text
            listed = cli("rejected", "list", "--home", str(pt.home))
            assert listed.returncode == 0 and victim["id"] in listed.stdout and "otlp" in listed.stdout
            assert json.loads(cli("rejected", "list", "--home", str(pt.home), "--json").stdout)["count"] == 1

            again = cli("rejected", "retry", "--home", str(pt.home), "--json")  # the cause is still there
            assert again.returncode == 1, again.stderr
            report = json.loads(again.stdout)
            assert [i["id"] for i in report["refused"]] == [victim["id"]] and not report["delivered"]
            assert pt.health()["rejected"]["count"] == 1

            rx.clear()  # the cause is fixed
            fixed = cli("rejected", "retry", "--home", str(pt.home))
            assert fixed.returncode == 0, fixed.stdout + fixed.stderr
            assert "1 delivered, 0 refused again, 0 not sent" in fixed.stdout
            assert pt.health()["rejected"] == {"count": 0, "items": []}
            assert httpx.get(f"{pt.ui_url}/api/rejected").json() == {"count": 0, "items": []}
            assert rx.deliveries[victim["span_id"]] == 1  # delivered once, nothing else sent twice
            assert sorted(rx.deliveries.values()) == [1, 1, 1]


def test_retry_into_the_store_with_no_server_running(fake: FakeUpstream, tmp_path: Path):
    """The store refuses one row (a constraint standing for a schema prompttap got wrong): the capture is
    set aside, not shown. `prompttap rejected retry` will not fight a server without its inspector for the
    store; once the server is stopped and the schema fixed, it re-inserts the row itself."""
    home = tmp_path / "pt"
    Prompttap(home, fake.base_url).start().stop()  # the store, migrated
    store_command(home, "ALTER TABLE captures ADD CONSTRAINT broken CHECK user_id != 'poison'")
    with Prompttap(home, fake.base_url) as pt:
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "refused by the store"}]}
        assert chat(pt, body, **{"x-prompttap-user": "poison"}).status_code == 200
        health = wait_for(lambda: (h := pt.health())["rejected"]["count"] and h, what="the refusal")
        [item] = health["rejected"]["items"]
        assert item["sink"] == "clickhouse"
        victim = item["id"]
        pt.drained()
        assert httpx.get(f"{pt.ui_url}/api/captures/{victim}").status_code == 404
    with Prompttap(home, fake.base_url, ui=False):  # a server without its inspector owns the store
        refused = cli("rejected", "retry", "--home", str(home))
        assert refused.returncode == 1 and "--no-ui" in refused.stderr and "stop it" in refused.stderr
    assert len(list((home / "rejected").iterdir())) == 1
    store_command(home, "ALTER TABLE captures DROP CONSTRAINT broken")
    done = cli("rejected", "retry", "--home", str(home), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [i["id"] for i in json.loads(done.stdout)["delivered"]] == [victim]
    assert not list((home / "rejected").iterdir())
    with Prompttap(home, fake.base_url) as pt:
        assert pt.capture(victim)["user_id"] == "poison"
        assert pt.health()["rejected"]["count"] == 0


def test_nothing_to_retry_is_not_an_error(tmp_path: Path):
    home = tmp_path / f"empty-{uuid.uuid4().hex[:6]}"
    r = cli("rejected", "retry", "--home", str(home))
    assert r.returncode == 0 and "0 delivered" in r.stdout
    assert "0 record(s) set aside" in cli("rejected", "list", "--home", str(home)).stdout
