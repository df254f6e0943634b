"""No capture lost: kill -9 under load, store down then back, ambiguous inserts, SIGTERM.

The oracle follows ``durable-spool.md``: every request carries a nonce; an *obligation*
is a nonce whose client received the complete response. After the faults, every
obligation must be stored exactly once (after ReplacingMergeTree dedup), and nothing
else may appear that the upstream never answered.
"""

from __future__ import annotations

import random
import signal
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.fake_upstream import FakeUpstream
from tests.harness import Prompttap, query_store
from tests.otlp_receiver import OtlpReceiver
from tests.sink_faults import FaultyPrompttap

pytestmark = pytest.mark.slow


class Load:
    """Client threads sending a mix of JSON and SSE requests, each with a nonce."""

    def __init__(self, pt: Prompttap, threads: int = 6) -> None:
        self.pt = pt
        self.threads = threads
        self.obligations: set[str] = set()
        self.sent: set[str] = set()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.workers = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self) -> Load:
        for w in self.workers:
            w.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for w in self.workers:
            w.join(30)

    def _run(self, i: int) -> None:
        rnd = random.Random(i)
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                n = uuid.uuid4().hex
                stream = rnd.random() < 0.5
                body = {"model": "gpt-4o", "nonce": n, "messages": [{"role": "user", "content": f"load {n}"}]}
                with self.lock:
                    self.sent.add(n)
                try:
                    if stream:
                        body |= {"stream": True, "stream_options": {"include_usage": True}}
                        with client.stream("POST", f"{self.pt.url}/v1/chat/completions", json=body) as r:
                            data = b"".join(r.iter_bytes())
                        complete = r.status_code == 200 and data.rstrip().endswith(b"data: [DONE]")
                    else:
                        r = client.post(f"{self.pt.url}/v1/chat/completions", json=body)
                        complete = r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
                except (httpx.HTTPError, ValueError):
                    complete = False
                    time.sleep(0.05)  # the proxy is down; let the restart happen
                if complete:
                    with self.lock:
                        self.obligations.add(n)


def stored_nonces(home: Path) -> tuple[dict[str, int], int]:
    """(captures per nonce after dedup, raw rows before dedup)."""
    rows = query_store(
        home, "SELECT JSONExtractString(request_body, 'nonce') AS n, count() FROM captures FINAL GROUP BY n"
    )
    raw = query_store(home, "SELECT count() FROM captures")[0][0]
    return {n: int(c) for n, c in rows if n}, int(raw)


def tried(pt: Prompttap, sink: str, timeout: float = 30.0) -> dict:
    """The health once ``sink`` has tried (and failed) to export at least once."""
    deadline = time.monotonic() + timeout
    while not (health := pt.health())["sinks"][sink]["failed_exports"] and time.monotonic() < deadline:
        time.sleep(0.05)
    return health


def test_kill_9_under_load_loses_nothing(fake: FakeUpstream, tmp_path: Path):
    home = tmp_path / "pt"
    rnd = random.Random(20261125)
    cycles = 4
    pt = Prompttap(home, fake.base_url, ui=False).start()
    load = Load(pt)
    with load:
        for _ in range(cycles):
            time.sleep(rnd.uniform(0.5, 2.0))
            pt.kill()
            pt = Prompttap(home, fake.base_url, ui=False)
            pt.port = load.pt.port  # same address: the clients keep sending to it
            load.pt = pt
            pt.start()
        time.sleep(0.5)
    pt.drained(timeout=60)
    assert pt.stop() == 0
    stored, raw = stored_nonces(home)
    lost = load.obligations - stored.keys()
    dupes = {n: c for n, c in stored.items() if c > 1}
    phantoms = stored.keys() - load.sent
    print(
        f"obligations={len(load.obligations)} stored={len(stored)} raw_rows={raw} lost={len(lost)} dupes={len(dupes)}"
    )
    assert len(load.obligations) > 50
    assert not lost
    assert not dupes
    assert not phantoms


def test_store_down_then_back(fake: FakeUpstream, tmp_path: Path):
    flag = tmp_path / "store-down"
    flag.touch()
    pt = FaultyPrompttap(tmp_path / "pt", fake.base_url, env={"PROMPTTAP_FAULT_SINK_DOWN": str(flag)}).start()
    try:
        nonces = [uuid.uuid4().hex for _ in range(40)]
        with httpx.Client() as client:
            for n in nonces:
                r = client.post(
                    f"{pt.url}/v1/chat/completions",
                    json={"model": "gpt-4o", "nonce": n, "messages": [{"role": "user", "content": n}]},
                )
                assert r.status_code == 200  # the traffic never notices the store is down
        health = tried(pt, "clickhouse")
        assert health["status"] == "degraded"
        assert health["sinks"]["clickhouse"]["pending"] == 40
        assert "down" in health["sinks"]["clickhouse"]["last_error"]
        flag.unlink()
        pt.drained(timeout=60)
        assert pt.health()["status"] == "ok"
        items = pt.captures(limit=100)
        assert len(items) == 40
    finally:
        assert pt.stop() == 0
    stored, _ = stored_nonces(tmp_path / "pt")
    assert stored == dict.fromkeys(nonces, 1)


def test_ambiguous_inserts_are_deduplicated(fake: FakeUpstream, tmp_path: Path):
    """The store took the batch but the reply was lost: it is delivered again, stored once."""
    flag = tmp_path / "ambiguous"
    flag.touch()
    pt = FaultyPrompttap(tmp_path / "pt", fake.base_url, env={"PROMPTTAP_FAULT_SINK_AMBIGUOUS": str(flag)}).start()
    try:
        nonces = [uuid.uuid4().hex for _ in range(10)]
        for n in nonces:
            httpx.post(
                f"{pt.url}/v1/chat/completions",
                json={"model": "gpt-4o", "nonce": n, "messages": [{"role": "user", "content": n}]},
            )
        time.sleep(1.0)  # a few redeliveries happen
        flag.unlink()
        pt.drained(timeout=60)
        assert len(pt.captures()) == 10  # the API reads deduplicated rows
    finally:
        pt.stop()
    stored, raw = stored_nonces(tmp_path / "pt")
    assert stored == dict.fromkeys(nonces, 1)
    assert raw > 10  # really delivered more than once; FINAL hides it


def test_sigterm_finishes_inflight_streams_and_exits_0(fake: FakeUpstream, tmp_path: Path):
    home = tmp_path / "pt"
    pt = Prompttap(home, fake.base_url, ui=False).start()
    n = uuid.uuid4().hex
    result: dict[str, bytes] = {}

    def stream() -> None:
        with httpx.stream(
            "POST",
            f"{pt.url}/v1/chat/completions",
            json={
                "model": "gpt-4o",
                "stream": True,
                "nonce": n,
                "messages": [{"role": "user", "content": "a b c d e"}],
            },
            headers={"x-fake-chunk-delay-ms": "150"},
            timeout=30,
        ) as r:
            result["body"] = b"".join(r.iter_bytes())

    t = threading.Thread(target=stream)
    t.start()
    time.sleep(0.4)
    pt.proc.send_signal(signal.SIGTERM)
    t.join(30)
    assert pt.proc.wait(30) == 0
    assert result["body"].rstrip().endswith(b"data: [DONE]")
    stored, _ = stored_nonces(home)
    assert stored == {n: 1}


def test_full_spool_drops_are_counted_and_traffic_flows(fake: FakeUpstream, tmp_path: Path):
    flag = tmp_path / "store-down"
    flag.touch()
    pt = FaultyPrompttap(
        tmp_path / "pt",
        fake.base_url,
        "--spool-max-bytes",
        "20000",
        env={"PROMPTTAP_FAULT_SINK_DOWN": str(flag)},
    ).start()
    try:
        ok = 0
        for i in range(30):
            r = httpx.post(
                f"{pt.url}/v1/chat/completions",
                json={"model": "gpt-4o", "messages": [{"role": "user", "content": f"fill {i} " + "x" * 500}]},
            )
            ok += r.status_code == 200
        assert ok == 30  # traffic flows byte for byte even with nowhere to record
        health = pt.health()
        assert health["status"] == "degraded"
        dropped = health["dropped"].get("disk_full", 0)
        assert dropped > 0
        assert health["recorded"] + dropped == 30
        flag.unlink()
        pt.drained(timeout=60)
        assert len(pt.captures()) == health["recorded"]
        r = httpx.post(
            f"{pt.url}/v1/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "after"}]},
        )
        assert r.status_code == 200
        pt.wait_captures(health["recorded"] + 1)  # recording resumed without a restart
    finally:
        pt.stop()


def test_real_full_disk_under_the_spool(fake: FakeUpstream, tmp_path: Path):
    """F8: the spool's filesystem fills up (an 8 MiB tmpfs). Traffic keeps flowing, every
    capture that could not be written is counted, and recording resumes without a restart."""
    import os
    import subprocess

    assert os.geteuid() == 0, "this test mounts a tmpfs: run the suite as root (CI does)"
    home = tmp_path / "pt"
    spool = home / "spool"
    spool.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(spool)], check=True)
    flag = tmp_path / "store-down"
    flag.touch()
    try:
        pt = FaultyPrompttap(home, fake.base_url, env={"PROMPTTAP_FAULT_SINK_DOWN": str(flag)}).start()
        try:
            sent = []
            with httpx.Client(timeout=30) as client:
                for _ in range(40):
                    n = uuid.uuid4().hex
                    body = {
                        "model": "gpt-4o",
                        "nonce": n,
                        "messages": [{"role": "user", "content": n + " x" * 150_000}],
                    }
                    r = client.post(f"{pt.url}/v1/chat/completions", json=body)
                    assert r.status_code == 200 and n in r.text  # the client never notices
                    sent.append(n)
            health = pt.health()
            dropped = health["dropped"].get("disk_full", 0)
            assert dropped > 0 and health["status"] == "degraded"
            assert health["recorded"] + dropped == len(sent)
            metrics = httpx.get(f"{pt.ui_url}/metrics").text
            assert f'prompttap_captures_dropped_total{{reason="disk_full"}} {dropped}' in metrics
            flag.unlink()
            pt.drained(timeout=120)
            after = uuid.uuid4().hex
            httpx.post(
                f"{pt.url}/v1/chat/completions",
                json={"model": "gpt-4o", "nonce": after, "messages": [{"role": "user", "content": after}]},
            )
            pt.drained(timeout=60)
            assert pt.health()["recorded"] == health["recorded"] + 1  # resumed, no restart
        finally:
            assert pt.stop() == 0
        stored, _ = stored_nonces(home)
        assert after in stored
        missing = [n for n in sent if n not in stored]
        assert len(missing) == dropped  # exactly the counted drops are missing, nothing else
        assert all(stored[n] == 1 for n in sent if n in stored)
    finally:
        subprocess.run(["umount", str(spool)], check=False)


def test_a_dead_sink_never_costs_the_store_a_capture_on_a_full_disk(fake: FakeUpstream, tmp_path: Path):
    """Langfuse refuses our key (401, forever) while more than twice the spool's disk (an 8 MiB tmpfs)
    passes through. The store gets every capture; Langfuse gives up its oldest backlog instead: counted,
    logged, on /healthz and /metrics. The store keeps up between bursts, as it does under real traffic."""
    import os
    import subprocess

    assert os.geteuid() == 0, "this test mounts a tmpfs: run the suite as root (CI does)"
    home = tmp_path / "pt"
    spool = home / "spool"
    spool.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(spool)], check=True)
    try:
        with OtlpReceiver(public_key="pk-lf-d", secret_key="sk-lf-right") as rx:
            env = {"LANGFUSE_PUBLIC_KEY": "pk-lf-d", "LANGFUSE_SECRET_KEY": "sk-lf-wrong", "LANGFUSE_HOST": rx.base_url}
            pt = Prompttap(home, fake.base_url, env=env).start()
            try:
                sent = []
                with httpx.Client(timeout=30) as client:
                    for _ in range(16):
                        for _ in range(8):
                            n = uuid.uuid4().hex
                            content = n + " x" * 75_000
                            body = {"model": "gpt-4o", "nonce": n, "messages": [{"role": "user", "content": content}]}
                            r = client.post(f"{pt.url}/v1/chat/completions", json=body)
                            assert r.status_code == 200 and n in r.text
                            sent.append(n)
                        deadline = time.monotonic() + 60
                        while any(pt.health()["sinks"][s]["pending"] for s in ("clickhouse", "otel_traces")):
                            assert time.monotonic() < deadline
                            time.sleep(0.05)
                health = pt.health()
                assert health["dropped"] == {} and health["recorded"] == len(sent)
                langfuse = health["sinks"]["langfuse"]
                assert langfuse["status"] == "misconfigured" and langfuse["given_up"] > 0
                assert langfuse["given_up"] + langfuse["pending"] == len(sent)  # each waits or was given up
                assert health["sinks"]["clickhouse"]["given_up"] == 0
                assert [p for p in health["problems"] if p.startswith("sink langfuse gave up ")]
                metrics = httpx.get(f"{pt.ui_url}/metrics").text
                assert f'prompttap_sink_given_up_total{{sink="langfuse"}} {langfuse["given_up"]}' in metrics
                assert 'prompttap_sink_given_up_total{sink="clickhouse"} 0' in metrics
                assert "sink langfuse (misconfigured) lags while the spool runs short of room" in pt.log()
                assert not rx.deliveries
            finally:
                assert pt.stop() == 0
        stored, _ = stored_nonces(home)
        assert {n: stored.get(n) for n in sent} == dict.fromkeys(sent, 1)  # the store lost nothing
    finally:
        subprocess.run(["umount", str(spool)], check=False)
