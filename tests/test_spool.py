"""Fault tests for collector.spool (durable-spool.md F9, F10, F16 and a real kill -9 loop)."""

from __future__ import annotations

import errno
import gc
import os
import pickle
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from prompttap.collector import spool as spool_mod
from prompttap.collector.spool import HDR, Spool, SpoolFull, disk

REC = 22  # record header bytes
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def open_spool(tmp_path):
    opened: list[Spool] = []

    def make(directory: Path | None = None, consumers=("a",), **kw) -> Spool:
        kw.setdefault("fsync_interval", 3600)  # tests call sync() themselves unless they test the thread
        sp = Spool(directory or tmp_path / "spool", consumers, **kw)
        opened.append(sp)
        return sp

    yield make
    for sp in opened:
        sp.close()  # idempotent


def segs(d: Path) -> list[Path]:
    return sorted(p for p in d.glob("*.seg") if p.is_file() and len(p.stem) == 20)


def read_all(sp: Spool, consumer: str = "a") -> list[bytes]:
    return sp.read(consumer, max_records=10**9, max_bytes=1 << 62).records


def drain(sp: Spool, consumer: str = "a", batch_size: int = 7) -> list[bytes]:
    out: list[bytes] = []
    while True:
        batch = sp.read(consumer, max_records=batch_size)
        sp.ack(consumer, batch)
        out += batch.records
        if not batch.records:
            return out


def payloads(n: int, size: int = 40) -> list[bytes]:
    return [f"rec-{i:04d}-".encode().ljust(size, b"x") for i in range(n)]


# -- basics ---------------------------------------------------------------------------------------------


def test_round_trip(open_spool):
    sp = open_spool()
    data = [b"", b"x", b"hello" * 100, os.urandom(1 << 20), *payloads(20)]
    for p in data:
        sp.append(p)
    batch = sp.read("a", max_records=1000)
    assert batch.records == data
    assert batch.seqs == list(range(len(data)))
    assert sp.pending("a") == (len(data), sum(REC + len(p) for p in data))
    sp.ack("a", batch)
    assert sp.pending("a") == (0, 0)
    assert sp.read("a").records == []
    st = sp.stats()
    assert st["appended_total"] == len(data) and st["corrupt_records"] == 0 and st["last_error"] is None


def test_read_limits_and_oversized_record(open_spool):
    sp = open_spool()
    big = b"B" * 5000
    for p in [b"1" * 100, b"2" * 100, big, b"3" * 10]:
        sp.append(p)
    assert sp.read("a", max_records=1).records == [b"1" * 100]
    assert sp.read("a", max_bytes=250).records == [b"1" * 100, b"2" * 100]
    b1 = sp.read("a", max_bytes=250)
    sp.ack("a", b1)
    assert sp.read("a", max_bytes=10).records == [big]  # never starve on a record larger than max_bytes
    assert sp.read("a", max_records=3).records == [big, b"3" * 10]


def test_a_plan_is_read_alike_in_another_process_and_ends_where_it_was_made(open_spool):
    """The encoder process reads a sink's batch from a ReadPlan: same records, seqs and end as read()."""
    sp = open_spool(consumers=("a", "b"), segment_bytes=400)
    data = payloads(30)
    for p in data:
        sp.append(p)
    sp.ack("a", sp.read("a", max_records=7))
    plan = sp.plan("a", max_records=12)
    sp.append(b"after the plan")
    code = (
        "import pickle, sys\n"
        "from prompttap.collector.spool import read_planned\n"
        "sys.stdout.buffer.write(pickle.dumps(read_planned(pickle.loads(sys.stdin.buffer.read()))))\n"
    )
    root = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run(
        [sys.executable, "-c", code], input=pickle.dumps(plan), capture_output=True, check=True, cwd=root
    ).stdout
    there = pickle.loads(out)
    here = sp.read("a", max_records=12)
    assert there.records == here.records == data[7:19]
    assert (there.seqs, there.start, there.end) == (here.seqs, here.start, here.end)
    sp.ack("a", there)  # a batch read elsewhere acks like any other
    rest = sp.plan("a", max_records=1000)
    assert not rest.empty
    assert spool_mod.read_planned(rest).records == [*data[19:], b"after the plan"]
    assert sp.plan("b").start.seq == 0 and not sp.plan("b").empty


def test_an_empty_plan_says_so(open_spool):
    sp = open_spool()
    assert sp.plan("a").empty
    sp.append(b"x")
    assert not sp.plan("a").empty
    sp.ack("a", sp.read("a"))
    assert sp.plan("a").empty
    sp.rotate()  # an empty sealed segment and an empty active one: still nothing to read
    assert sp.plan("a").empty and len(sp.plan("a").segments) == 2


def test_multiple_consumers_and_gc_after_all_ack(open_spool, tmp_path):
    sp = open_spool(consumers=("clickhouse", "otlp"), segment_bytes=300)
    data = payloads(30)
    for p in data:
        sp.append(p)
    n_segs = len(segs(tmp_path / "spool"))
    assert n_segs > 5
    assert drain(sp, "clickhouse") == data
    assert len(segs(tmp_path / "spool")) == n_segs  # otlp still needs them
    assert sp.pending("otlp") == (30, sum(REC + len(p) for p in data))
    half = sp.read("otlp", max_records=15)
    sp.ack("otlp", half)
    assert half.records == data[:15]
    assert 1 < len(segs(tmp_path / "spool")) < n_segs
    assert drain(sp, "otlp") == data[15:]
    assert len(segs(tmp_path / "spool")) == 1
    assert sp.stats()["segments"] == 1


def test_reopen_resumes_at_cursors(open_spool, tmp_path):
    sp = open_spool(consumers=("a", "b"), segment_bytes=200)
    data = payloads(10)
    for p in data:
        sp.append(p)
    sp.ack("a", sp.read("a", max_records=4))
    sp.ack("b", sp.read("b", max_records=7))
    sp.close()
    sp = open_spool(consumers=("a", "b"), segment_bytes=200)
    assert read_all(sp, "a") == data[4:]
    assert read_all(sp, "b") == data[7:]
    assert sp.pending("a")[0] == 6 and sp.pending("b")[0] == 3
    sp.append(b"after")
    batch = sp.read("b")
    assert batch.records == [*data[7:], b"after"] and batch.seqs == [7, 8, 9, 10]


def test_behind_is_the_age_of_the_oldest_record_not_acked(open_spool):
    sp = open_spool(consumers=("a", "b"))
    assert sp.behind("a") == 0.0
    for p in payloads(3):
        sp.append(p)
    time.sleep(0.6)
    for p in payloads(2):
        sp.append(p)
    first = sp.behind("a")
    assert first >= 0.6
    sp.ack("a", sp.read("a", max_records=3))
    then = sp.behind("a")  # the second group's age: 0.6 s younger
    assert first - then >= 0.5 and then >= 0.0
    assert sp.behind("b") >= first  # another consumer keeps its own place
    sp.ack("a", sp.read("a"))
    assert sp.behind("a") == 0.0


def test_behind_never_says_a_record_is_older_than_it_is(open_spool, tmp_path, monkeypatch):
    sp = open_spool()
    for p in payloads(4):
        sp.append(p)
    sp.close()
    time.sleep(0.3)
    opened = time.monotonic()
    sp = open_spool()  # spooled by an earlier process: counted from this opening
    assert 0.0 < sp.behind("a") <= time.monotonic() - opened
    sp.close()
    monkeypatch.setattr(spool_mod.spool, "_MARKS", 2)
    monkeypatch.setattr(spool_mod.spool, "_MARK_EVERY", 0.0)  # a mark per record: the oldest are dropped
    sp = open_spool(directory=tmp_path / "other")
    sp.append(b"old")
    time.sleep(0.3)
    since = time.monotonic()
    for p in payloads(3):
        sp.append(p)
    assert sp.behind("a") <= time.monotonic() - since  # "old"'s mark is gone: at least as old as the oldest kept


def test_ack_is_monotonic_and_checks_consumer(open_spool):
    sp = open_spool(consumers=("a", "b"))
    for p in payloads(5):
        sp.append(p)
    first, second = sp.read("a", max_records=2), sp.read("a", max_records=4)
    sp.ack("a", second)
    sp.ack("a", first)  # stale: must not move the cursor back
    assert sp.pending("a")[0] == 1
    with pytest.raises(ValueError):
        sp.ack("b", first)
    with pytest.raises(KeyError):
        sp.read("nope")


def test_wait(open_spool):
    sp = open_spool()
    assert sp.wait(0.05) is False
    threading.Timer(0.05, sp.append, args=(b"x",)).start()
    assert sp.wait(5) is True
    assert sp.wait(0.01, consumer="a") is True  # unread data: no blocking, no lost wake-up


def test_background_fsync_thread_runs(open_spool):
    sp = open_spool(fsync_interval=0.01)
    sp.append(b"x")
    deadline = time.monotonic() + 5
    while sp._unsynced and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not sp._dirty and not sp._unsynced  # synced and the rewrite buffer released


def test_second_open_is_locked(open_spool, tmp_path, monkeypatch):
    open_spool()
    monkeypatch.setattr(disk, "LOCK_TIMEOUT", 0.1)
    with pytest.raises(RuntimeError, match="in use"):
        Spool(tmp_path / "spool", ["a"])


def test_dropped_without_close_keeps_data_and_releases_everything(tmp_path):
    sp = Spool(tmp_path / "s", ["a"], fsync_interval=0.01)
    sp.append(b"survives")
    thread = sp._thread
    del sp
    gc.collect()
    thread.join(5)
    assert not thread.is_alive()
    sp = Spool(tmp_path / "s", ["a"])
    try:
        assert read_all(sp) == [b"survives"]
    finally:
        sp.close()


# -- kill -9 --------------------------------------------------------------------------------------------

CHILD = """
import random, sys
from prompttap.collector.spool import Spool
sp = Spool(sys.argv[1], ["a"], segment_bytes=256 * 1024)
rng, i = random.Random(int(sys.argv[2])), int(sys.argv[2])
while True:
    sp.append(b"%d:" % i + b"x" * rng.choice((10, 1000, 30000, 200000)))
    print(i, flush=True)
    i += 1
"""


def test_kill9_loses_no_returned_append(tmp_path):
    d, start, rng = tmp_path / "spool", 0, random.Random(1234)
    for _cycle in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(d), str(start)], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        printed: list[int] = []
        first = proc.stdout.readline()
        assert first, "child died before its first append"
        printed.append(int(first))
        reader = threading.Thread(target=lambda out=proc.stdout, acc=printed: acc.extend(int(x) for x in out))
        reader.start()
        time.sleep(rng.uniform(0.05, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        reader.join()
        sp = Spool(d, ["a"])
        try:
            got = [int(r.split(b":", 1)[0]) for r in drain(sp, batch_size=1000)]
            # Exactly the acknowledged appends, plus at most the one in flight; each once, in order.
            assert got[: len(printed)] == printed == list(range(start, start + len(printed)))
            assert got == list(range(start, start + len(got))) and len(got) - len(printed) <= 1
            start += len(got)
        finally:
            sp.close()
    assert start > 40


# -- torn and corrupt data at startup -------------------------------------------------------------------


def make_segment(tmp_path: Path, data: list[bytes]) -> bytes:
    """One closed segment holding data; returns its bytes."""
    sp = Spool(tmp_path / "orig", ["a"])
    for p in data:
        sp.append(p)
    sp.close()
    (seg,) = segs(tmp_path / "orig")
    return seg.read_bytes()


def test_torn_last_record_at_every_offset(tmp_path):
    data = [b"a" * 30, b"b" * 40, b"c" * 50]
    raw = make_segment(tmp_path, data)
    start = len(raw) - REC - 50
    for cut in range(start, len(raw)):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / f"{1:020d}.seg").write_bytes(raw[:cut])
        sp = Spool(d, ["a"])
        try:
            assert read_all(sp) == data[:2], cut
            st = sp.stats()
            assert st["torn_tails_truncated"] == (cut > start) and st["corrupt_records"] == 0
            assert (d / f"{1:020d}.seg").stat().st_size == start
            sp.append(b"next")
            assert read_all(sp) == [*data[:2], b"next"]
        finally:
            sp.close()


def _garbage_with_fake_headers() -> bytes:
    rng = random.Random(7)
    junk = bytearray(rng.randbytes(4096))
    for at in range(0, 4000, 97):
        junk[at : at + 2] = b"\xc5\x01"  # record magic all over the place
    head = struct.pack("<2sIQI", b"\xc5\x01", 10**6, 99, 0)  # valid header crc, length past the end
    return bytes(junk) + head + struct.pack("<I", zlib.crc32(head)) + b"zz"


@pytest.mark.parametrize(
    "tail",
    [b"\0" * 4096, random.Random(3).randbytes(4096), _garbage_with_fake_headers()],
    ids=["zeros", "random", "magic"],
)
def test_zero_or_garbage_tail_is_truncated(tmp_path, tail):
    data = payloads(5)
    raw = make_segment(tmp_path, data)
    d = tmp_path / "s"
    d.mkdir()
    (d / f"{1:020d}.seg").write_bytes(raw + tail)
    sp = Spool(d, ["a"])
    try:
        assert read_all(sp) == data
        assert sp.stats()["torn_tails_truncated"] == 1 and sp.stats()["corrupt_records"] == 0
        assert (d / f"{1:020d}.seg").stat().st_size == len(raw)
    finally:
        sp.close()


def test_garbage_with_fake_headers_inside_segment_counts_once(tmp_path):
    data = payloads(4)
    raw = make_segment(tmp_path, data)
    cut = HDR + 2 * (REC + 40)
    fake = struct.pack("<2sIQI", b"\xc5\x01", 5, 99, 0)  # valid header crc, wrong payload crc
    junk = b"\0\xc5\x01garbage" + fake + struct.pack("<I", zlib.crc32(fake)) + b"abcde\xc5\x01"
    d = tmp_path / "s"
    d.mkdir()
    (d / f"{1:020d}.seg").write_bytes(raw[:cut] + junk + raw[cut:])
    sp = Spool(d, ["a"])
    try:
        assert read_all(sp) == data
        assert sp.stats()["corrupt_records"] == 1 and sp.stats()["torn_tails_truncated"] == 0
    finally:
        sp.close()


def test_power_loss_after_ack_keeps_new_seqs_above_the_cursor(tmp_path, open_spool):
    d = tmp_path / "spool"
    sp = open_spool(d)
    for p in payloads(4):
        sp.append(p)
    sp.ack("a", sp.read("a"))
    sp.close()
    # Power loss: the fsynced cursor survived, the last two (acked) records did not.
    os.truncate(segs(d)[0], HDR + 2 * (REC + 40))
    sp = open_spool(d)
    assert read_all(sp) == [] and sp.pending("a") == (0, 0)
    sp.append(b"new")
    assert read_all(sp) == [b"new"] and sp.pending("a") == (1, REC + 3)


FIELDS = {"magic": 0, "length": 2, "seq": 6, "crc": 14, "header_crc": 18, "payload": REC + 5}


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("where", ["last_segment", "sealed_segment"])
def test_bit_flip_in_middle_record(tmp_path, open_spool, field, where):
    d = tmp_path / "spool"
    data = payloads(5)
    sp = open_spool(d)
    for p in data:
        sp.append(p)
    sp.close()
    later = payloads(3, size=60)
    if where == "sealed_segment":  # a later segment exists, so damage is found by the reader, not recovery
        sp = open_spool(d)
        for p in later:
            sp.append(p)
        sp.close()
    else:
        later = []
    seg = segs(d)[0]
    raw = bytearray(seg.read_bytes())
    raw[HDR + 2 * (REC + 40) + FIELDS[field]] ^= 0x10  # record #2
    seg.write_bytes(bytes(raw))
    sp = open_spool(d)
    assert read_all(sp) == [*data[:2], *data[3:], *later]
    assert read_all(sp) == [*data[:2], *data[3:], *later]  # re-reading does not count it twice
    st = sp.stats()
    assert st["corrupt_records"] == 1 and st["torn_tails_truncated"] == 0


def test_damaged_segment_header_is_salvaged(tmp_path, open_spool):
    d = tmp_path / "spool"
    sp = open_spool(d)
    data = payloads(4)
    for p in data:
        sp.append(p)
    sp.close()
    seg = segs(d)[0]
    raw = bytearray(seg.read_bytes())
    raw[0] ^= 0xFF
    seg.write_bytes(bytes(raw))
    sp = open_spool(d)
    assert read_all(sp) == data
    assert sp.stats()["bad_segment_headers"] == 1


# -- cursors --------------------------------------------------------------------------------------------


def _two_consumers_with_progress(open_spool, d: Path) -> list[bytes]:
    sp = open_spool(d, consumers=("a", "b"), segment_bytes=200)
    data = payloads(12)
    for p in data:
        sp.append(p)
    sp.ack("a", sp.read("a", max_records=5))
    sp.close()
    return data


@pytest.mark.parametrize("damage", ["deleted", "garbage", "bit_flip", "truncated"])
def test_bad_cursor_replays_from_oldest_segment(tmp_path, open_spool, damage):
    d = tmp_path / "spool"
    data = _two_consumers_with_progress(open_spool, d)
    cur = d / "cursor-a.pos"
    raw = cur.read_bytes()
    if damage == "deleted":
        cur.unlink()
    elif damage == "garbage":
        cur.write_bytes(b"not a cursor at all")
    elif damage == "bit_flip":
        cur.write_bytes(raw[:10] + bytes([raw[10] ^ 1]) + raw[11:])
    else:
        cur.write_bytes(raw[:7])
    sp = open_spool(d, consumers=("a", "b"), segment_bytes=200)
    assert read_all(sp, "a") == data  # at-least-once: acked records come again, nothing is lost
    assert sp.stats()["cursor_resets"] == (damage != "deleted")


def test_cursor_pointing_at_deleted_segment_moves_to_next(tmp_path, open_spool):
    d = tmp_path / "spool"
    sp = open_spool(d)
    for pair in (payloads(2), payloads(4)[2:], [b"r4", b"r5"]):
        for p in pair:
            sp.append(p)
        sp.rotate()
    sp.ack("a", sp.read("a", max_records=3))  # cursor inside segment 2
    sp.close()
    (d / f"{2:020d}.seg").unlink()
    sp = open_spool(d)
    assert read_all(sp) == [b"r4", b"r5"]
    assert sp.pending("a")[0] >= 2


def test_future_version_segment_is_left_alone(tmp_path, open_spool):
    d = tmp_path / "spool"
    sp = open_spool(d)
    sp.append(b"old")
    sp.close()
    future = d / f"{5:020d}.seg"
    future.write_bytes(b"PTSPOL" + struct.pack("<H", 2) + b"some future layout" * 10)
    sp = open_spool(d)
    assert sp.stats()["skipped_segments"] == {future.name: "future format version 2"}
    sp.append(b"new")
    assert drain(sp) == [b"old", b"new"]
    assert future.exists() and [p.name for p in segs(d)] == [future.name, f"{6:020d}.seg"]
    sp.close()
    sp = open_spool(d)
    assert future.exists() and read_all(sp) == []


def test_stray_files_and_empty_segments_are_ignored(tmp_path, open_spool):
    d = tmp_path / "spool"
    sp = open_spool(d)
    data = payloads(3)
    for p in data:
        sp.append(p)
    sp.close()
    (d / "notes.txt").write_text("hi")
    (d / "123.seg").write_bytes(b"junk")
    (d / "cursor-a.pos.tmp").write_bytes(b"half a cursor")
    (d / "cursor-gone.pos").write_bytes(b"cursor of a consumer no longer configured")
    (d / f"{3:020d}.seg").mkdir()
    (d / f"{4:020d}.seg").write_bytes(b"")
    (d / f"{6:020d}.seg").write_bytes(segs(d)[0].read_bytes()[:10])  # header torn during creation
    sp = open_spool(d)
    assert list(sp.stats()["skipped_segments"]) == [f"{3:020d}.seg"]
    sp.append(b"more")
    assert drain(sp) == [*data, b"more"]
    assert sp.stats()["appended_total"] == 1 and sp.read("a").seqs == []
    assert [p.name for p in segs(d)] == [f"{7:020d}.seg"]
    assert (d / "notes.txt").exists() and (d / "123.seg").exists() and (d / f"{3:020d}.seg").is_dir()


# -- limits and injected I/O faults ---------------------------------------------------------------------


def test_rotation(open_spool, tmp_path):
    sp = open_spool(segment_bytes=500)
    data = payloads(20, size=100)
    for p in data:
        sp.append(p)
    files = segs(tmp_path / "spool")
    assert len(files) == 7 and all(f.stat().st_size <= 500 for f in files)  # 20 + 3 * 122 bytes each
    assert read_all(sp) == data


def test_max_bytes_then_recovers_after_ack(open_spool, tmp_path):
    sp = open_spool(max_bytes=600, segment_bytes=10_000)
    accepted = []
    with pytest.raises(SpoolFull):
        for p in payloads(10, size=100):
            sp.append(p)
            accepted.append(p)
    assert len(accepted) == 4
    with pytest.raises(SpoolFull):
        sp.append(b"y" * 100)
    st = sp.stats()
    assert st["append_errors_total"] == 2 and st["bytes"] <= 600 and "SpoolFull" in st["last_error"]
    assert drain(sp) == accepted
    sp.append(b"z" * 100)  # room again without a restart
    assert read_all(sp) == [b"z" * 100]
    assert sum(f.stat().st_size for f in segs(tmp_path / "spool")) <= 600


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
def test_short_write_then_error_leaves_no_torn_record(open_spool, tmp_path, monkeypatch, err):
    d = tmp_path / "spool"
    sp = open_spool(d)
    sp.append(b"a" * 100)
    (seg,) = segs(d)
    size = seg.stat().st_size
    real, calls = disk.write, []

    def flaky(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real(fd, bytes(data[: len(data) // 2]))  # short write...
        raise OSError(err, os.strerror(err))  # ...and the retry of the rest fails

    monkeypatch.setattr(disk, "write", flaky)
    with pytest.raises(SpoolFull if err == errno.ENOSPC else OSError) as exc:
        sp.append(b"b" * 100)
    assert (exc.type is SpoolFull) == (err == errno.ENOSPC)
    assert seg.stat().st_size == size
    monkeypatch.setattr(disk, "write", real)
    sp.append(b"c" * 100)
    assert read_all(sp) == [b"a" * 100, b"c" * 100]
    assert sp.stats()["append_errors_total"] == 1
    sp.close()
    sp = open_spool(d)
    assert read_all(sp) == [b"a" * 100, b"c" * 100]
    assert sp.stats()["corrupt_records"] == 0 and sp.stats()["torn_tails_truncated"] == 0


def test_short_writes_are_completed(open_spool, monkeypatch):
    sp = open_spool()
    real = disk.write
    monkeypatch.setattr(disk, "write", lambda fd, data: real(fd, bytes(data[:7])))
    sp.append(b"q" * 100)
    monkeypatch.setattr(disk, "write", real)
    assert read_all(sp) == [b"q" * 100]


def test_failed_fsync_rewrites_unsynced_records_into_new_segment(open_spool, tmp_path, monkeypatch):
    d = tmp_path / "spool"
    sp = open_spool(d)
    sp.append(b"r0")
    sp.sync()
    sp.append(b"r1")
    sp.append(b"r2")
    real, failed = disk.fsync, []

    def eio_once(fd):
        if not failed:
            failed.append(fd)
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    monkeypatch.setattr(disk, "fsync", eio_once)
    sp.sync()
    st = sp.stats()
    assert st["fsync_errors_total"] == 1 and st["rewritten_records_total"] == 2 and "Input/output" in st["last_error"]
    assert len(segs(d)) == 2
    sp.sync()  # the new segment syncs fine; the failed file was closed, never fsynced again
    assert sp.stats()["fsync_errors_total"] == 1 and not sp._unsynced
    sp.append(b"r3")
    got = read_all(sp)
    # The old file still serves r1, r2 from the page cache here, so they come twice: at-least-once.
    assert got == [b"r0", b"r1", b"r2", b"r1", b"r2", b"r3"]
    sp.close()
    sp = open_spool(d)
    assert read_all(sp) == got


# -- giving up backlog (a lagging consumer makes room for the others) -----------------------------------


def test_give_up_frees_the_oldest_segments_down_to_the_mark_and_survives_a_restart(open_spool, tmp_path):
    d = tmp_path / "spool"
    sp = open_spool(d, consumers=("store", "dead"), segment_bytes=500)  # 3 records of 122 B a segment
    data = payloads(20, size=100)
    for p in data:
        sp.append(p)
    assert drain(sp, "store") == data
    before = sp.stats()["bytes"]
    lost = sp.give_up(["dead"], down_to=before // 2)
    n = lost["dead"]
    assert 0 < n < 20 and n % 3 == 0  # whole segments, oldest first
    assert sp.stats()["bytes"] <= before // 2
    assert sp.pending("dead")[0] == 20 - n
    assert read_all(sp, "dead") == data[n:]
    sp.close()
    sp = open_spool(d, consumers=("store", "dead"), segment_bytes=500)
    assert read_all(sp, "dead") == data[n:]  # resumes where give_up put it
    assert read_all(sp, "store") == []


def test_give_up_never_frees_what_a_kept_consumer_still_needs(open_spool):
    sp = open_spool(consumers=("store", "dead"), segment_bytes=500)
    data = payloads(20, size=100)
    for p in data:
        sp.append(p)
    sp.ack("store", sp.read("store", max_records=7))
    assert sp.give_up(["dead"], down_to=0) == {"dead": 6}  # the two whole segments the store passed
    assert read_all(sp, "store") == data[7:]
    assert read_all(sp, "dead") == data[6:]
    assert drain(sp, "store") == data[7:]
    assert sp.give_up(["dead"], down_to=0) == {"dead": 14}  # the active segment is sealed to let it go
    assert read_all(sp, "dead") == [] and sp.pending("dead") == (0, 0) and sp.stats()["segments"] == 1
    assert sp.give_up(["dead"], down_to=0) == {}
    sp.append(b"next")
    assert read_all(sp, "dead") == read_all(sp, "store") == [b"next"]


def test_an_ack_after_give_up_never_moves_the_cursor_back(open_spool):
    sp = open_spool(consumers=("store", "dead"), segment_bytes=500)
    data = payloads(20, size=100)
    for p in data:
        sp.append(p)
    drain(sp, "store")
    early = sp.read("dead", max_records=2)  # a send in flight while the backlog is given up
    n = sp.give_up(["dead"], down_to=0)["dead"]
    sp.ack("dead", early)
    assert n == 20 and read_all(sp, "dead") == []


# -- concurrency ----------------------------------------------------------------------------------------


def test_concurrent_appenders_and_reader(open_spool):
    sp = open_spool(segment_bytes=4096, fsync_interval=0.005)
    per_thread, writers = 400, 4
    got: list[bytes] = []

    def write(t: int) -> None:
        for i in range(per_thread):
            sp.append(b"%d:%d:" % (t, i) + b"p" * (i % 50))

    def read() -> None:
        deadline = time.monotonic() + 30
        while len(got) < per_thread * writers and time.monotonic() < deadline:
            batch = sp.read("a", max_records=37)
            sp.ack("a", batch)
            got.extend(batch.records)
            if not batch.records:
                sp.wait(0.05, consumer="a")

    threads = [threading.Thread(target=write, args=(t,)) for t in range(writers)] + [threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    keys = [tuple(int(x) for x in r.split(b":")[:2]) for r in got]
    assert len(keys) == len(set(keys)) == per_thread * writers
    for w in range(writers):
        assert [i for t, i in keys if t == w] == list(range(per_thread))  # per-writer order kept
    assert sp.read("a").records == [] and sp.stats()["segments"] == 1


# -- model-based ----------------------------------------------------------------------------------------

CONSUMERS = ("a", "b")


class SpoolMachine(RuleBasedStateMachine):
    """Spool vs a list: recovered records are exactly the appended-not-acked ones, in order, each once."""

    def __init__(self) -> None:
        super().__init__()
        # tmpfs when there is one: thousands of fsyncs test the logic, not a (possibly busy) disk.
        self.dir = Path(tempfile.mkdtemp(prefix="spool-sm-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
        self.model: list[bytes] = []
        self.acked = dict.fromkeys(CONSUMERS, 0)
        self.reads: dict[str, tuple[spool_mod.Batch, int]] = {}
        self.spool: Spool | None = self._open()

    def _open(self) -> Spool:
        return Spool(self.dir, CONSUMERS, segment_bytes=160, fsync_interval=3600)

    @rule(payload=st.binary(max_size=64))
    def append(self, payload: bytes) -> None:
        self.spool.append(payload)
        self.model.append(payload)

    @rule(c=st.sampled_from(CONSUMERS), n=st.integers(1, 6), max_bytes=st.sampled_from([1, 60, 1 << 20]))
    def read(self, c: str, n: int, max_bytes: int) -> None:
        batch = self.spool.read(c, max_records=n, max_bytes=max_bytes)
        expected, used = [], 0
        for p in self.model[self.acked[c] :]:
            if len(expected) == n or (expected and used + len(p) > max_bytes):
                break
            expected.append(p)
            used += len(p)
        assert batch.records == expected
        self.reads[c] = (batch, self.acked[c] + len(expected))

    @rule(c=st.sampled_from(CONSUMERS))
    def ack(self, c: str) -> None:
        if c in self.reads:
            batch, upto = self.reads[c]
            self.spool.ack(c, batch)
            self.acked[c] = max(self.acked[c], upto)

    @rule()
    def rotate(self) -> None:
        self.spool.rotate()

    @rule()
    def sync(self) -> None:
        self.spool.sync()

    @rule()
    def close_reopen(self) -> None:
        self.spool.close()
        self._reopen()

    @rule()
    def crash(self) -> None:
        ref = weakref.ref(self.spool)
        self.spool = None  # dropped without close: no final fsync, like kill -9 after the last write
        assert ref() is None  # no reference cycles: freed (fds closed, lock released) at once
        self._reopen()

    def _reopen(self) -> None:
        self.reads.clear()
        self.spool = self._open()
        for c in CONSUMERS:
            assert read_all(self.spool, c) == self.model[self.acked[c] :]

    @rule()
    def drain_all(self) -> None:
        for c in CONSUMERS:
            assert drain(self.spool, c) == self.model[self.acked[c] :]
            self.acked[c] = len(self.model)
        self.reads.clear()
        assert len(segs(self.dir)) == 1  # everything acked by everyone: only the active segment is left

    @invariant()
    def pending_is_exact(self) -> None:
        for c in CONSUMERS:
            rest = self.model[self.acked[c] :]
            assert self.spool.pending(c) == (len(rest), sum(REC + len(p) for p in rest))

    def teardown(self) -> None:
        if self.spool is not None:
            self.spool.close()
        shutil.rmtree(self.dir, ignore_errors=True)


SpoolMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_spool_state_machine = SpoolMachine.TestCase
