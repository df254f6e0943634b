"""Durable, append-only, multi-consumer on-disk spool for captures.

Promises: a record survives kill -9 once ``append`` returned (plain ``os.write`` on an O_APPEND fd), and
power loss once the background fsync (every ``fsync_interval`` s when dirty) or ``sync()`` covered it.
Delivery is at-least-once per consumer; records leave only when every registered consumer acked them,
never by age or count.

Directory layout:
  00000000000000000001.seg  segments, sorted by name. Every open starts a fresh one, so a recovered segment
                            is never appended to again (a cursor ahead of lost data can't land mid-record).
  cursor-<consumer>.pos     acked position, replaced atomically (tmp, fsync, rename, fsync dir)
  LOCK                      flock'd while open: two processes appending to one spool would interleave

Segment header (20 B): b"PTSPOL", version u16, base_seq u64 (seq of its first record), crc32 of the first
16 B. The first 8 bytes stay fixed in future versions, so a newer segment is recognised and left alone.
Record: b"\\xc5\\x01", length u32, seq u64, crc32(payload) u32, crc32(first 18 B) u32, payload. The header
crc tells a flipped length from a torn tail and lets readers resync on the next valid header. seq is only
used for ``pending`` accounting and resync plausibility, never to filter records.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import os
import re
import struct
import threading
import time
import weakref
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

VERSION = 1
_SEG = struct.Struct("<6sHQI")  # magic, version, base_seq, crc
_SEG_MAGIC = b"PTSPOL"
HDR = _SEG.size
_REC = struct.Struct("<2sIQII")  # magic, length, seq, payload crc, header crc
_REC_MAGIC = b"\xc5\x01"
_CUR = struct.Struct("<4sBQQQI")  # magic, version, segment, offset, seq, crc
_CUR_MAGIC = b"PTCU"
_SEG_RE = re.compile(r"^(\d{20})\.seg$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_UNSYNCED_CAP = 256 * 2**20  # memory kept for fsyncgate rewrites; beyond it we can only report
_SCAN_CHUNK = 2**20
_LOCK_TIMEOUT = 5.0  # a crashed predecessor's lock goes away with its fds; a live one is a misconfiguration
_NO_LIMIT = 1 << 62

# Fault-injection seams (tests patch these instead of the global os module).
_write = os.write
_fsync = os.fsync


class SpoolFull(Exception):
    """append refused because max_bytes would be exceeded or the disk is full; nothing was left behind."""


class Pos(NamedTuple):
    seg: int
    off: int
    seq: int  # seq of the next record expected; only feeds pending()


@dataclass
class Batch:
    """Records read for one consumer, from start to end. A reader in another process may leave
    ``records`` empty (the caller has what it made of them); ``seqs`` always lists what was read."""

    consumer: str
    records: list[bytes]
    seqs: list[int]
    start: Pos
    end: Pos
    corrupt: list[tuple[int, int]] = field(default_factory=list)  # (segment, offset) of damage passed


@dataclass(frozen=True)
class ReadPlan:
    """A consumer's next read, fixed under the spool's lock, so that any process can carry it out
    (``read_planned``): the records stay where they are until a reader needs them."""

    consumer: str
    dir: Path
    start: Pos
    segments: tuple[tuple[int, int, int], ...]  # (id, committed size, base seq) from the start segment on
    active: int
    max_records: int
    max_bytes: int

    @property
    def empty(self) -> bool:
        """Nothing written after the start: reading would find no record."""
        return all(size <= max(self.start.off if sid == self.start.seg else 0, HDR) for sid, size, _ in self.segments)


@dataclass
class _Seg:
    id: int
    size: int  # committed bytes; readers never look past it
    base: int  # seq of its first record, 0 when the header is damaged
    header_ok: bool = True


class _Handles:
    """Every fd the spool owns, closable without the Spool object (weakref.finalize must not hold it)."""

    def __init__(self) -> None:
        self.lock: int | None = None
        self.dir: int | None = None
        self.active: int | None = None
        self.sealed: list[int] = []  # rotated-out segments still waiting for their last fsync
        self.stop = threading.Event()

    def close(self) -> None:
        self.stop.set()
        for fd in [*self.sealed, self.active, self.dir, self.lock]:  # lock last: it guards the rest
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.sealed, self.active, self.dir, self.lock = [], None, None, None


def _write_all(fd: int, data: bytes) -> None:
    view, done = memoryview(data), 0
    while done < len(data):
        n = _write(fd, view[done:])
        if n <= 0:
            raise OSError(errno.ENOSPC, "write made no progress")
        done += n


def _frame(seq: int, payload: bytes) -> bytes:
    head = struct.pack("<2sIQI", _REC_MAGIC, len(payload), seq, zlib.crc32(payload))
    return b"".join((head, struct.pack("<I", zlib.crc32(head)), payload))


def _header(buf: bytes) -> tuple[int, int, int] | None:
    """(length, seq, payload crc) if buf starts with a valid record header."""
    if len(buf) < _REC.size:
        return None
    magic, length, seq, pcrc, hcrc = _REC.unpack_from(buf)
    if magic != _REC_MAGIC or zlib.crc32(buf[: _REC.size - 4]) != hcrc:
        return None
    return length, seq, pcrc


def _resync(fd: int, start: int, end: int, min_seq: int) -> int:
    """Offset of the next fully valid record in [start, end), else end."""
    off = start
    while off < end:
        chunk = os.pread(fd, min(_SCAN_CHUNK, end - off), off)
        if not chunk:
            break
        i = chunk.find(_REC_MAGIC)
        while i != -1:
            cand = off + i
            h = _header(os.pread(fd, _REC.size, cand))
            ok = h is not None and h[1] >= min_seq and cand + _REC.size + h[0] <= end
            if ok and h and zlib.crc32(os.pread(fd, h[0], cand + _REC.size)) == h[2]:
                return cand
            i = chunk.find(_REC_MAGIC, i + 1)
        off += max(1, len(chunk) - 1)  # 1-byte overlap: the 2-byte magic may straddle chunks
    return end


def _next(fd: int, off: int, end: int, min_seq: int, budget: int) -> tuple[str, int, int, bytes]:
    """Item at off: ("rec", next, seq, payload); ("bad", next, seq or 0, b"") for a corrupt span;
    ("full", off, 0, b"") if the record exceeds budget; ("end", end, 0, b"")."""
    if off >= end:
        return "end", end, 0, b""
    h = _header(os.pread(fd, _REC.size, off))
    if h is not None and off + _REC.size + h[0] <= end:
        length, seq, pcrc = h
        if length > budget:
            return "full", off, 0, b""
        payload = os.pread(fd, length, off + _REC.size) if length else b""
        nxt = off + _REC.size + length
        if len(payload) == length and zlib.crc32(payload) == pcrc:
            return "rec", nxt, seq, payload
        return "bad", nxt, seq, b""  # header crc vouches for the length: skip exactly this record
    return "bad", _resync(fd, off + 1, end, min_seq), 0, b""


def read_planned(plan: ReadPlan) -> Batch:
    """Carry out a ``ReadPlan``: only the spool's files are read, so this runs in any process. Segments
    only ever grow, and a plan reads no further than their committed size, so no record is half there."""
    pos, records, seqs, used, corrupt = plan.start, [], [], 0, []
    for sid, size, base in plan.segments:
        if sid != pos.seg:
            pos = Pos(sid, HDR, max(pos.seq, base))
        try:
            fd = os.open(_seg_path(plan.dir, sid), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # deleted behind our back: nothing to read there
            pos = pos._replace(off=max(size, HDR))
            continue
        try:
            off, seq, kind = max(pos.off, HDR), pos.seq, "end"
            while len(records) < plan.max_records:
                kind, nxt, rseq, payload = _next(fd, off, size, seq, plan.max_bytes - used if records else _NO_LIMIT)
                if kind in ("end", "full"):
                    break
                if kind == "rec":
                    records.append(payload)
                    seqs.append(rseq)
                    used += len(payload)
                else:
                    corrupt.append((sid, off))
                if kind == "rec" or rseq:  # a corrupt span has a seq only if its header was intact
                    seq = max(seq, rseq + 1)
                off = nxt
            pos = Pos(sid, off, seq)
        finally:
            os.close(fd)
        if kind == "full" or len(records) >= plan.max_records or sid == plan.active:
            break
    return Batch(plan.consumer, records, seqs, plan.start, pos, corrupt)


class Spool:
    """append() from any thread; read/ack from one worker thread per consumer; stop those before close()."""

    def __init__(
        self,
        directory: str | Path,
        consumers: Iterable[str],
        *,
        segment_bytes: int = 64 * 2**20,
        fsync_interval: float = 0.05,
        max_bytes: int | None = None,
    ) -> None:
        names = list(dict.fromkeys(consumers))
        if not names or not all(_NAME_RE.match(c) for c in names):
            raise ValueError(f"need one or more consumer names matching {_NAME_RE.pattern}: {names}")
        self._dir = Path(directory)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._segment_bytes, self._max_bytes = segment_bytes, max_bytes
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._sync_lock = threading.Lock()  # one fsync round at a time; guards the sealed fds it closes
        self._h = _Handles()
        self._finalizer = weakref.finalize(self, self._h.close)  # a dropped Spool leaks no fd or thread
        self._segs: dict[int, _Seg] = {}
        self._skipped: dict[str, str] = {}  # future-version or unreadable segments: never read or deleted
        self._cursors: dict[str, Pos] = {}
        self._unsynced: collections.deque[tuple[int, bytes]] = collections.deque()
        self._unsynced_bytes, self._untracked_upto = 0, -1
        self._corrupt_seen: set[tuple[int, int]] = set()
        self._closed = self._dirty = self._dir_dirty = self._needs_rewrite = False
        counters = "corrupt_records torn_tails_truncated bad_segment_headers cursor_resets appended_total"
        counters += " append_errors_total fsync_errors_total rewritten_records_total"
        self._n = dict.fromkeys(counters.split(), 0)
        self._last_error: str | None = None
        self._h.lock = _lock_dir(self._dir / "LOCK")
        self._h.dir = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY)
        self._recover(names)
        self._thread = threading.Thread(
            target=_fsync_loop, args=(weakref.ref(self), self._h.stop, fsync_interval), daemon=True
        )
        self._thread.start()

    # -- recovery ---------------------------------------------------------------------------------------

    def _recover(self, names: list[str]) -> None:
        ids = sorted(int(m[1]) for n in os.listdir(self._dir) if (m := _SEG_RE.match(n)))
        for sid in ids:
            self._inspect(sid)
        next_seq = max((s.base for s in self._segs.values()), default=0)
        # Only the segment written at the crash is expected to be torn; damage elsewhere (e.g. power loss
        # tearing the segment sealed just before) is skipped and counted by readers.
        if last := max((s for s in self._segs.values() if s.size > HDR), key=lambda s: s.id, default=None):
            try:
                next_seq = max(next_seq, self._recover_tail(last))
            except OSError as e:  # startup must not fail on spool contents; readers resync past damage
                self._last_error = f"recovering segment {last.id}: {e!r}"
        raw = {c: self._load_cursor(c) for c in names}
        known = [p for p in raw.values() if p is not None]
        # Power loss can lose records a consumer already acked: keep new seqs and segment ids above cursors.
        self._next_seq = max([next_seq, *(p.seq for p in known)])
        self._cur = _Seg(max([0, *ids, *(p.seg for p in known)]), 0, 0)
        self._open_segment_locked(self._cur.id + 1, sync_old=False)
        order = sorted(self._segs)
        for c, p in raw.items():
            if p is None:  # missing or corrupt: replay everything still present (duplicates, no loss)
                self._cursors[c] = Pos(order[0], HDR, self._segs[order[0]].base)
                continue
            sid = next(s for s in order if s >= p.seg)  # the new active segment is always >= p.seg
            seg = self._segs[sid]
            self._cursors[c] = p._replace(off=max(p.off, HDR)) if sid == p.seg else Pos(sid, HDR, max(p.seq, seg.base))
        self._unlink(self._gc_locked())

    def _inspect(self, sid: int) -> None:
        path = self._path(sid)
        try:
            with open(path, "rb") as f:
                head, size = f.read(HDR), os.fstat(f.fileno()).st_size
        except OSError as e:  # e.g. a directory or unreadable file named like a segment
            self._skipped[path.name] = f"unreadable: {e.strerror}"
            return
        if head[:6] == _SEG_MAGIC and len(head) >= 8 and struct.unpack_from("<H", head, 6)[0] > VERSION:
            self._skipped[path.name] = f"future format version {struct.unpack_from('<H', head, 6)[0]}"
        elif size < HDR:
            self._segs[sid] = _Seg(sid, size, 0)  # created but header never written: holds nothing
        else:
            magic, version, base, crc = _SEG.unpack(head)
            ok = magic == _SEG_MAGIC and version == VERSION and zlib.crc32(head[:-4]) == crc
            self._n["bad_segment_headers"] += not ok  # records are self-checking: salvage them anyway
            self._segs[sid] = _Seg(sid, size, base if ok else 0, ok)

    def _recover_tail(self, seg: _Seg) -> int:
        """Scan the newest segment: count mid-segment corruption, truncate a torn tail; returns next seq."""
        if seg.size <= HDR:
            return seg.base
        fd = os.open(self._path(seg.id), os.O_RDWR if seg.header_ok else os.O_RDONLY)
        try:
            off, next_seq, bad = HDR, seg.base, []
            while True:
                kind, nxt, seq, _ = _next(fd, off, seg.size, next_seq, _NO_LIMIT)
                if kind == "end":
                    break
                if kind == "rec":
                    for b in bad:  # a valid record follows: these were corrupt, not a tail
                        self._count_corrupt_locked(seg.id, b)
                    bad, next_seq = [], seq + 1
                else:
                    bad.append(off)
                off = nxt
            if bad and seg.header_ok:  # never truncate a file whose header we could not vouch for
                try:
                    os.ftruncate(fd, bad[0])
                    _fsync(fd)
                    seg.size = bad[0]
                    self._n["torn_tails_truncated"] += 1
                except OSError as e:
                    self._last_error = f"truncating torn tail of {seg.id}: {e!r}"
            return next_seq
        finally:
            os.close(fd)

    def _load_cursor(self, consumer: str) -> Pos | None:
        try:
            data = (self._dir / f"cursor-{consumer}.pos").read_bytes()
        except FileNotFoundError:
            return None  # a consumer that never acked
        except OSError:
            data = b""
        if len(data) == _CUR.size:
            magic, version, seg, off, seq, crc = _CUR.unpack(data)
            if magic == _CUR_MAGIC and version == VERSION and zlib.crc32(data[:-4]) == crc:
                return Pos(seg, off, seq)
        self._n["cursor_resets"] += 1
        return None

    # -- writing ----------------------------------------------------------------------------------------

    def append(self, payload: bytes) -> None:
        """Frame and write one record; cheap (one os.write, no fsync). Raises SpoolFull or the OSError."""
        if not isinstance(payload, bytes):
            payload = bytes(payload)  # kept until fsynced for fsyncgate rewrites: must not change under us
        with self._lock:
            if self._closed:
                raise ValueError("spool is closed")
            try:
                self._write_locked(payload, check_limit=True)
            except (OSError, SpoolFull) as e:
                self._n["append_errors_total"] += 1
                self._last_error = f"append: {e!r}"
                if isinstance(e, OSError) and e.errno in _FULL_ERRNOS:
                    raise SpoolFull(str(e)) from e
                raise
            self._n["appended_total"] += 1
            self._cond.notify_all()

    def _write_locked(self, payload: bytes, check_limit: bool) -> None:
        size = _REC.size + len(payload)
        if check_limit and self._max_bytes is not None and self._total + size > self._max_bytes:
            if self._cur.size > HDR:  # acks can only free whole sealed segments: seal the active one
                self._open_segment_locked(self._cur.id + 1, sync_old=True)
                self._unlink(self._gc_locked())
            if self._total + size > self._max_bytes:
                raise SpoolFull(f"spool holds {self._total} bytes, max_bytes={self._max_bytes}")
        if self._cur.size > HDR and self._cur.size + size > self._segment_bytes:
            self._open_segment_locked(self._cur.id + 1, sync_old=True)
        fd, before = self._h.active, self._cur.size
        assert fd is not None
        try:
            _write_all(fd, _frame(self._next_seq, payload))
        except OSError:
            try:
                os.ftruncate(fd, before)  # O_APPEND: the next write lands at `before` again
            except OSError:
                # Can't undo: count the garbage as committed so readers resync past it, and move on.
                with contextlib.suppress(OSError):
                    self._cur.size = os.fstat(fd).st_size
                    self._open_segment_locked(self._cur.id + 1, sync_old=True)
            raise
        self._cur.size += size
        self._unsynced.append((self._next_seq, payload))
        self._unsynced_bytes += len(payload)
        while self._unsynced_bytes > _UNSYNCED_CAP:
            self._untracked_upto, dropped = self._unsynced.popleft()
            self._unsynced_bytes -= len(dropped)
        self._next_seq += 1
        self._dirty = True

    def _open_segment_locked(self, sid: int, sync_old: bool) -> None:
        path = self._path(sid)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            head = struct.pack("<6sHQ", _SEG_MAGIC, VERSION, self._next_seq)
            _write_all(fd, head + struct.pack("<I", zlib.crc32(head)))
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        old, self._h.active = self._h.active, fd
        if old is not None:
            if sync_old:
                self._h.sealed.append(old)
            else:
                os.close(old)
        self._cur = self._segs[sid] = _Seg(sid, HDR, self._next_seq)
        self._dirty = self._dir_dirty = True

    def rotate(self) -> None:
        """Seal the active segment and start a new one."""
        with self._lock:
            if self._closed:
                raise ValueError("spool is closed")
            self._open_segment_locked(self._cur.id + 1, sync_old=True)

    @property
    def _total(self) -> int:  # few segments, and only needed when max_bytes is set
        return sum(s.size for s in self._segs.values())

    # -- durability -------------------------------------------------------------------------------------

    def sync(self) -> None:
        self._sync(force=True)

    def _sync(self, force: bool) -> None:
        with self._sync_lock:
            with self._lock:
                if self._h.active is None or not (force or self._dirty or self._h.sealed or self._needs_rewrite):
                    return
                sealed, self._h.sealed = self._h.sealed, []
                fds, cut, rewrite = [*sealed, self._h.active], self._next_seq, self._needs_rewrite
                dir_dirty, self._dir_dirty, self._dirty = self._dir_dirty, False, False
            err = None
            if not rewrite:
                try:
                    for fd in fds:
                        _fsync(fd)
                    if dir_dirty and self._h.dir is not None:
                        _fsync(self._h.dir)
                except OSError as e:
                    err = e
            with self._lock:
                for fd in sealed:  # done with them either way: a failed fd is never fsynced again
                    with contextlib.suppress(OSError):
                        os.close(fd)
                if err is None and not rewrite:
                    while self._unsynced and self._unsynced[0][0] < cut:
                        self._unsynced_bytes -= len(self._unsynced.popleft()[1])
                    if self._untracked_upto < cut:
                        self._untracked_upto = -1
                    return
                if err is not None:
                    self._n["fsync_errors_total"] += 1
                    self._last_error = f"fsync: {err!r}"
                self._rewrite_locked()

    def _rewrite_locked(self) -> None:
        """fsyncgate: after a failed fsync Linux may have dropped the dirty pages, and a retried fsync can
        then succeed without them. So never fsync that file again: open a new segment and write the records
        since the last good fsync there again (new seqs; readers may get both copies: at-least-once)."""
        if self._untracked_upto >= 0:
            self._last_error = f"{self._last_error}; records up to seq {self._untracked_upto} not kept for rewrite"
            self._untracked_upto = -1
        todo = collections.deque(p for _, p in self._unsynced)
        self._unsynced.clear()
        self._unsynced_bytes = 0
        try:
            self._open_segment_locked(self._cur.id + 1, sync_old=False)
            while todo:
                self._write_locked(todo[0], check_limit=False)
                todo.popleft()
                self._n["rewritten_records_total"] += 1
            self._needs_rewrite = False
        except OSError as e:  # retried next round, into yet another segment
            self._unsynced.extendleft((-1, p) for p in reversed(todo))
            self._unsynced_bytes += sum(len(p) for p in todo)
            self._needs_rewrite = True
            self._last_error = f"fsync rewrite: {e!r}"
        self._cond.notify_all()

    def close(self) -> None:
        self._h.stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        try:
            self._sync(force=True)
        finally:
            with self._sync_lock, self._lock:  # no fsync round may be using the fds we close
                self._closed = True
                self._cond.notify_all()
                self._finalizer()

    # -- reading ----------------------------------------------------------------------------------------

    def read(self, consumer: str, max_records: int = 500, max_bytes: int = 16 * 2**20) -> Batch:
        """Records after the consumer's acked cursor (the same ones again until acked). Returns at least one
        record if any is pending, even one larger than max_bytes. The batch may be empty yet advance past
        empty segments or damage: acking it is cheap and lets those segments go."""
        batch = read_planned(self.plan(consumer, max_records, max_bytes))
        self.note_corrupt(batch)
        return batch

    def plan(self, consumer: str, max_records: int = 500, max_bytes: int = 16 * 2**20) -> ReadPlan:
        """What ``read`` would read now, for ``read_planned`` to read here or in another process."""
        with self._lock:
            start = self._cursors[consumer]
            segs = tuple((s.id, s.size, s.base) for _, s in sorted(self._segs.items()) if s.id >= start.seg)
            return ReadPlan(consumer, self._dir, start, segs, self._cur.id, max_records, max_bytes)

    def note_corrupt(self, batch: Batch) -> None:
        """Count the damage a reader passed (once per place, however many consumers meet it)."""
        if batch.corrupt:
            with self._lock:
                for sid, off in batch.corrupt:
                    self._count_corrupt_locked(sid, off)

    def ack(self, consumer: str, batch: Batch) -> None:
        """Persist the cursor at the end of batch, then delete segments every consumer is past."""
        if batch.consumer != consumer:
            raise ValueError(f"batch was read for {batch.consumer!r}, not {consumer!r}")
        with self._lock:
            if self._closed:
                raise ValueError("spool is closed")
            cur = self._cursors[consumer]
        if batch.end[:2] <= cur[:2]:
            return  # stale or empty batch: never move a cursor backwards
        data = _CUR.pack(_CUR_MAGIC, VERSION, *batch.end, 0)[:-4]
        tmp, final = self._dir / f"cursor-{consumer}.pos.tmp", self._dir / f"cursor-{consumer}.pos"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            _write_all(fd, data + struct.pack("<I", zlib.crc32(data)))
            _fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        assert self._h.dir is not None
        _fsync(self._h.dir)  # the cursor is durable before any segment it releases is unlinked
        with self._lock:
            self._cursors[consumer] = batch.end
            doomed = self._gc_locked()
        self._unlink(doomed)

    def _gc_locked(self) -> list[int]:
        cursors = list(self._cursors.values())
        doomed = [
            s.id for s in self._segs.values() if s is not self._cur and all(c[:2] >= (s.id, s.size) for c in cursors)
        ]
        for sid in doomed:
            del self._segs[sid]
        if doomed:
            self._corrupt_seen = {k for k in self._corrupt_seen if k[0] in self._segs}
        return doomed

    def _unlink(self, ids: list[int]) -> None:
        for sid in ids:
            try:
                os.unlink(self._path(sid))
            except FileNotFoundError:
                pass
            except OSError as e:
                self._last_error = f"deleting segment {sid}: {e!r}"

    # -- introspection ----------------------------------------------------------------------------------

    def _pending_locked(self, consumer: str) -> tuple[int, int]:
        """Exact unless corruption or power loss skipped seqs; then it over-counts until the reader passes
        the damage (and at the latest the next segment boundary, where seq resets to that segment's base)."""
        c = self._cursors[consumer]
        nbytes = sum(
            max(0, s.size - max(HDR, c.off if s.id == c.seg else HDR)) for s in self._segs.values() if s.id >= c.seg
        )
        return max(0, self._next_seq - c.seq), nbytes

    def pending(self, consumer: str) -> tuple[int, int]:
        """(records, framed bytes) not yet acked by consumer."""
        with self._lock:
            return self._pending_locked(consumer)

    def wait(self, timeout: float, consumer: str | None = None) -> bool:
        """Block until an append (or timeout). With consumer, return at once if it has unread data, which
        closes the race between an empty read and the wait."""
        with self._cond:
            if consumer is not None and self._pending_locked(consumer)[1] > 0:
                return True
            return self._cond.wait(timeout)

    def stats(self) -> dict:
        with self._lock:
            return {
                "segments": len(self._segs),
                "bytes": self._total,
                "skipped_segments": dict(self._skipped),
                **self._n,
                "pending": {c: {"records": r, "bytes": b} for c in self._cursors for r, b in [self._pending_locked(c)]},
                "last_error": self._last_error,
            }

    def _count_corrupt_locked(self, sid: int, off: int) -> None:
        if (sid, off) not in self._corrupt_seen:  # each consumer meets the same damage; count it once
            self._corrupt_seen.add((sid, off))
            self._n["corrupt_records"] += 1

    def _path(self, sid: int) -> Path:
        return _seg_path(self._dir, sid)


def _seg_path(directory: Path, sid: int) -> Path:
    return directory / f"{sid:020d}.seg"


def _lock_dir(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    deadline = time.monotonic() + _LOCK_TIMEOUT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise RuntimeError(f"spool {path.parent} is in use by another process") from None
            time.sleep(0.02)


def _fsync_loop(ref: weakref.ref[Spool], stop: threading.Event, interval: float) -> None:
    # Holds only a weakref so a Spool dropped without close() is collected (and its thread ends).
    while not stop.wait(interval):
        spool = ref()
        if spool is None:
            return
        try:
            spool._sync(force=False)
        except Exception as e:  # keep syncing: a dead fsync thread would silently void power-loss safety
            spool._last_error = f"fsync thread: {e!r}"
        del spool
