"""What recording costs the machine: CPU priority (collector/priority.py) and memory.

The policy of a thread is read back from the kernel (/proc/<pid>/task/<tid>/stat, field 41)
and its CPUs with sched_getaffinity, on a running prompttap and in a child process; memory
from /proc/<pid>/smaps.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx

from prompttap.collector.priority import BACKGROUND_CPUS, LOOP_CPUS

SCHED_OTHER, SCHED_IDLE = 0, 5
ROOT = Path(__file__).resolve().parent.parent


def _threads(pid: int) -> dict[int, tuple[str, int, int]]:
    """tid -> (name, scheduling policy, nice) for every thread of ``pid``."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue  # the thread ended
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(tid)] = (name, int(fields[38]), int(fields[16]))
    return out


def test_engine_sink_and_encoder_threads_yield_to_the_event_loop(make_pt):
    pt = make_pt(ui=False)
    for i in range(20):
        body = {"model": "m", "messages": [{"role": "user", "content": f"hi {i}"}]}
        r = httpx.post(f"{pt.url}/v1/chat/completions", json=body)
        assert r.status_code == 200
    pt.drained()
    pid = pt.proc.pid
    threads = _threads(pid)
    name, policy, nice = threads.pop(pid)  # the event loop runs on the main thread, on its own CPUs
    assert (policy, nice) == (SCHED_OTHER, 0)
    assert os.sched_getaffinity(pid) == LOOP_CPUS
    # uvloop's resolver threads (libuv-worker) serve the hot path and rightly keep the loop's settings.
    threads = {tid: t for tid, t in threads.items() if t[0] != "libuv-worker"}
    # The engine's threads are idle-class. Python's threads (sinks, spool fsync) take the GIL the
    # loop needs, so they never are (a preempted holder would stall the loop): they carry the
    # process's name, or "Unknown" once the engine has run a query on them (it renames its caller).
    engine = {tid: t for tid, t in threads.items() if t[1] == SCHED_IDLE}
    python = {tid: t for tid, t in threads.items() if t[1] != SCHED_IDLE}
    assert len(engine) >= 3 and len(python) >= 2, threads
    for tid, (thread, _, _) in engine.items():
        if os.path.exists(f"/proc/{pid}/task/{tid}"):
            assert os.sched_getaffinity(tid) == BACKGROUND_CPUS, thread
    for tid, (thread, policy, nice) in python.items():
        assert thread in (name, "Unknown") and (policy, nice) == (SCHED_OTHER, 0), (thread, policy, nice)
        assert os.sched_getaffinity(tid) == BACKGROUND_CPUS, thread
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    assert children, "the encoder process is missing"
    for child in map(int, children):
        assert _threads(child)[child][1] == SCHED_IDLE
    assert pt.health()["catching_up"] is False
    assert "\nprompttap_recording_catching_up 0\n" in httpx.get(f"{pt.url}/_prompttap/metrics").text


def test_a_backlog_makes_recording_compete_until_it_has_caught_up():
    # In a child process: the test's own threads must not keep a changed policy.
    script = textwrap.dedent(
        """
        import _thread, os, threading
        from prompttap.collector.priority import (
            ALL_CPUS, BACKGROUND_CPUS, CATCH_UP_AT, CAUGHT_UP_AT, LOOP_CPUS, Priority,
        )

        def state(tid):
            return os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid), os.sched_getaffinity(tid)

        done = threading.Event()
        def started(start):
            ready, tids = threading.Event(), []
            def body():
                tids.append(threading.get_native_id()); ready.set(); done.wait()
            start(body); ready.wait()
            return tids[0]
        main = threading.get_native_id()
        python = started(lambda f: threading.Thread(target=f).start())
        engine = started(lambda f: _thread.start_new_thread(f, ()))  # a thread Python did not start

        p = Priority(main)
        p.apply()
        assert state(main) == (os.SCHED_OTHER, 0, LOOP_CPUS), state(main)
        assert state(python) == (os.SCHED_OTHER, 0, BACKGROUND_CPUS), state(python)
        assert state(engine)[0] == os.SCHED_IDLE and state(engine)[2] == BACKGROUND_CPUS, state(engine)

        late = started(lambda f: _thread.start_new_thread(f, ()))  # started by the loop: its settings
        assert state(late) == (os.SCHED_OTHER, 0, LOOP_CPUS), state(late)
        p.update("clickhouse", 10)  # the next backlog report classifies it
        assert state(late)[0] == os.SCHED_IDLE and state(late)[2] == BACKGROUND_CPUS, state(late)

        p.update("clickhouse", CATCH_UP_AT + 1)
        assert p.catching_up and state(main) == (os.SCHED_OTHER, 0, ALL_CPUS), state(main)
        for tid in (python, engine, late):
            assert state(tid) == (os.SCHED_OTHER, 10, ALL_CPUS), state(tid)
        p.update("otel_traces", 0)  # another sink keeping up does not end the catch-up
        p.update("clickhouse", CAUGHT_UP_AT + 1)  # hysteresis: not caught up yet
        assert p.catching_up and state(engine)[0] == os.SCHED_OTHER
        p.update("clickhouse", CAUGHT_UP_AT - 1)
        assert not p.catching_up and state(engine)[0] == os.SCHED_IDLE and state(engine)[2] == BACKGROUND_CPUS
        assert state(python) == (os.SCHED_OTHER, 0, BACKGROUND_CPUS), state(python)
        assert state(main) == (os.SCHED_OTHER, 0, LOOP_CPUS)
        assert p.transitions == 2
        done.set()
        print("ok")
        """
    )
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_a_burst_lets_recording_fall_behind_without_competing_with_the_traffic(tmp_path):
    """A burst spools more captures than the sinks take at once; recording keeps yielding the CPU while
    the oldest waiting capture is younger than CATCH_UP_AT seconds, however many wait (it used to
    compete from 20,000 on: at one connection, a 5 s burst, and the traffic's p99 rose by 1-2 ms)."""
    script = textwrap.dedent(
        f"""
        import threading, orjson
        from prompttap.collector.encoder import Encoder
        from prompttap.collector.priority import CATCH_UP_AT, Priority
        from prompttap.collector.recorder import SinkWorker
        from prompttap.collector.sinks.clickhouse import ClickHouseSink
        from prompttap.collector.spool import Spool
        from prompttap.schemas.store import open_store, migrate
        from tests.test_spans import capture, chat_body

        store = open_store("chdb://memory")
        migrate(store)
        spool = Spool({str(tmp_path / "spool")!r}, ["clickhouse"])
        record = orjson.dumps(capture(body=chat_body()).to_record())
        for _ in range(30_000):
            spool.append(record)
        encoder = Encoder()
        encoder.start()
        priority = Priority(threading.get_native_id(), lambda: [encoder.pid])
        priority.apply()
        worker = SinkWorker(ClickHouseSink(store), spool, encoder, {str(tmp_path / "rejected")!r}, priority)
        assert worker.drain_once()
        worker.report_behind()
        waiting, behind = spool.pending("clickhouse")[0], spool.behind("clickhouse")
        assert waiting > 25_000 and behind < CATCH_UP_AT, (waiting, behind)
        assert not priority.catching_up and priority.transitions == 0
        encoder.close()
        spool.close()
        print("ok")
        """
    )
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def _mapping_kib(pid: int, name: str, field: str) -> int:
    total, inside = 0, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if line[:1] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
            inside = line.rstrip().endswith(name)
        elif inside and line.startswith(field + ":"):
            total += int(line.split()[1])
    return total


def test_start_up_only_library_pages_are_handed_back(make_pt):
    # Starting chDB reads ~160 MiB of its library that steady work never touches again.
    pt = make_pt(ui=False)
    r = httpx.post(f"{pt.url}/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200
    pt.drained()
    # Pages another process maps too (another prompttap of the suite) are shared and stay: only
    # this process's own clean pages can be handed back, so those are what is checked.
    private_mib = _mapping_kib(pt.proc.pid, "_chdb.abi3.so", "Private_Clean") / 1024
    assert private_mib < 110, private_mib  # without the hand-back: about 160 MiB
    assert _mapping_kib(pt.proc.pid, "_chdb.abi3.so", "Rss") > 0
