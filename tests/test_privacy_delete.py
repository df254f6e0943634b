"""Deleting for privacy deletes (issue 13, item 16): a deleted capture never comes back from the spool, a
re-delivery, ``rejected/`` or a restart, and Langfuse is asked to delete its trace.

The real ``prompttap serve`` (with ``tests.sink_faults`` where the store must re-deliver), a real
Langfuse-shaped receiver (``tests/otlp_receiver.py``: OTLP ingestion and ``DELETE
/api/public/traces/{id}``), real sockets, the real embedded store.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from prompttap.collector.tombstones import KEEP_S, PRUNE_EVERY_S, Tombstones
from tests.fake_upstream import FakeUpstream
from tests.harness import Prompttap, query_store
from tests.otlp_receiver import OtlpReceiver
from tests.sink_faults import FaultyPrompttap
from tests.test_rejected import chat, cli, tagged, wait_for

LANGFUSE = {"LANGFUSE_PUBLIC_KEY": "pk-lf-del", "LANGFUSE_SECRET_KEY": "sk-lf-del"}


def send(pt: Prompttap, who: str) -> dict[str, Any]:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": f"private words of {who}"}]}
    assert chat(pt, body, **{"x-prompttap-user": who, "x-prompttap-tags": who}).status_code == 200
    return tagged(pt, who)


def test_a_deleted_capture_never_comes_back_and_langfuse_deletes_its_trace(fake: FakeUpstream, tmp_path: Path):
    """Langfuse is down, so the capture waits in the spool for it; the store keeps re-delivering its batch
    (each insert's reply is lost). Deleted meanwhile, the capture is never inserted again, survives a
    restart as deleted, never reaches Langfuse when it is back, and Langfuse gets the DELETE for its trace."""
    home = tmp_path / "pt"
    ambiguous = tmp_path / "store-reply-lost"
    ambiguous.touch()
    with OtlpReceiver(public_key="pk-lf-del", secret_key="sk-lf-del") as rx:
        rx.down()
        env = {
            **LANGFUSE,
            "LANGFUSE_HOST": rx.base_url,
            "PROMPTTAP_FAULT_SINK_AMBIGUOUS": str(ambiguous),
            "PROMPTTAP_FAULT_SINKS": "clickhouse",
        }
        with FaultyPrompttap(home, fake.base_url, env=env) as pt:
            keep, victim = send(pt, "keep"), send(pt, "victim")
            failed = pt.health()["sinks"]["clickhouse"]["failed_exports"]
            r = httpx.delete(f"{pt.ui_url}/api/captures/{victim['id']}", timeout=60)
            assert r.status_code == 200, r.text
            # The store re-delivers the batch the capture was in, twice more: it is not inserted again.
            wait_for(lambda: pt.health()["sinks"]["clickhouse"]["failed_exports"] >= failed + 2, what="redeliveries")
            assert httpx.get(f"{pt.ui_url}/api/captures/{victim['id']}").status_code == 404
            assert pt.capture(keep["id"])["user_id"] == "keep"
            answer = r.json()
            assert answer["deleted"] == victim["id"] and answer["rejected"] == 0
            assert answer["recalled"]["langfuse"].startswith("pending: ")  # down: asked again later
            ambiguous.unlink()
            wait_for(lambda: pt.health()["sinks"]["clickhouse"]["pending"] == 0, what="the store's backlog")
            assert pt.health()["sinks"]["langfuse"]["pending"] == 2  # both still wait for Langfuse
        with FaultyPrompttap(home, fake.base_url, env=env) as pt:  # the tombstone is on disk
            rx.up()
            pt.drained(timeout=60)
            assert wait_for(lambda: victim["trace_id"] in rx.deleted_traces, what="the trace's DELETE")
            assert pt.health()["sinks"]["langfuse"]["recalls_pending"] == 0
            delivered = {s["span_id"] for s in rx.spans}
            assert keep["span_id"] in delivered and victim["span_id"] not in delivered
            assert rx.deliveries[keep["span_id"]] == 1
            assert not [s for s in rx.spans if "victim" in str(s["attributes"])]
            assert httpx.get(f"{pt.ui_url}/api/captures/{victim['id']}").status_code == 404
    rows = query_store(home, f"SELECT count() FROM captures WHERE toString(id) = '{victim['id']}'")
    assert rows == [[0]]
    assert query_store(home, f"SELECT count() FROM captures WHERE toString(id) = '{keep['id']}'")[0][0] >= 1


def test_a_deleted_capture_leaves_rejected_and_says_what_an_otlp_endpoint_keeps(fake: FakeUpstream, tmp_path: Path):
    """A capture an OTLP endpoint refused waits in rejected/: the delete removes that copy too, so no
    retry can send it; the answer names the endpoint as one that keeps whatever it was sent."""
    with OtlpReceiver() as rx:
        rx.fault(poison=("user.id", "victim"))
        with Prompttap(tmp_path / "pt", fake.base_url, env={"OTEL_EXPORTER_OTLP_ENDPOINT": rx.base_url}) as pt:
            victim = send(pt, "victim")
            wait_for(lambda: pt.health()["rejected"]["count"] == 1, what="the refusal")
            r = httpx.post(f"{pt.ui_url}/api/captures/{victim['id']}/delete", timeout=60)
            assert r.status_code == 200, r.text
            assert pt.health()["rejected"] == {"count": 0, "items": []}
            assert not list((pt.home / "rejected").iterdir())
            assert r.json() == {"deleted": victim["id"], "rejected": 1, "recalled": {}, "not_recallable": ["otlp"]}
            rx.clear()
            assert "0 delivered" in cli("rejected", "retry", "--home", str(pt.home)).stdout
            assert rx.deliveries[victim["span_id"]] == 0
            assert httpx.delete(f"{pt.ui_url}/api/captures/{victim['id']}").status_code == 404  # nothing left


def test_tombstones_go_once_nothing_can_bring_their_capture_back(tmp_path: Path):
    """A tombstone stays while a recall is pending, for a day, and until every record spooled by then
    has left the spool's files; it survives reopening, and is gone from the file once dropped."""
    path = tmp_path / "tombstones.jsonl"
    t = Tombstones(path)
    t.add("a", "0" * 32, ["langfuse"])
    t.add("b", "1" * 32, [])
    assert Tombstones(path).ids == {"a", "b"} and Tombstones(path).pending("langfuse") == [("a", "0" * 32)]
    t.recalled("a", "langfuse")
    assert Tombstones(path).pending("langfuse") == []
    day = time.time() + KEEP_S + 1
    assert not t.prune((0, 100), now=time.time() + PRUNE_EVERY_S)  # too young
    assert not t.prune((50, 100), now=day)  # a day has passed: records before seq 100 must leave first
    assert not t.prune((99, 120), now=day + PRUNE_EVERY_S)
    assert t.prune((100, 130), now=day + 2 * PRUNE_EVERY_S)
    assert t.ids == frozenset() and Tombstones(path).ids == frozenset()
    t.add("c", "2" * 32, ["langfuse"])
    assert not t.prune((10**9, 10**9), now=time.time() + 10 * KEEP_S)  # its recall is still pending
    assert Tombstones(path).ids == {"c"}
