"""The Spool: append from any thread, fsync in the background, read and ack per consumer, free what
every consumer passed, and let lagging consumers give up their oldest backlog when asked (``give_up``).
Its files are ``disk``'s; opening one is ``recovery``'s; reads are ``reads``'."""

from __future__ import annotations

import bisect
import collections
import contextlib
import os
import re
import threading
import time
import weakref
from collections.abc import Collection, Iterable
from pathlib import Path

from prompttap.collector.spool import disk, recovery
from prompttap.collector.spool.disk import FULL_ERRNOS, HDR, REC, Pos, Seg
from prompttap.collector.spool.reads import Batch, ReadPlan, read_planned

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_UNSYNCED_CAP = 256 * 2**20  # memory kept for fsyncgate rewrites; beyond it we can only report
_MIN_SEGMENT = 2**20
_MARK_EVERY = 0.25
"""Seconds between the marks (seq, when appended) that ``behind`` reads: its precision."""
_MARKS = 1024
"""Marks kept (at one per ``_MARK_EVERY`` while appending: the last 256 s or more)."""


class SpoolFull(Exception):
    """append refused because max_bytes would be exceeded or the disk is full; nothing was left behind."""


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
        self._max_bytes = max_bytes
        # Space comes back a whole segment at a time: on a small disk (or max_bytes), smaller segments.
        self._segment_bytes = min(segment_bytes, max(_MIN_SEGMENT, self._capacity() // 16))
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._sync_lock = threading.Lock()  # one fsync round at a time; guards the sealed fds it closes
        self._h = disk.Handles()
        self._finalizer = weakref.finalize(self, self._h.close)  # a dropped Spool leaks no fd or thread
        self._unsynced: collections.deque[tuple[int, bytes]] = collections.deque()
        self._unsynced_bytes, self._untracked_upto = 0, -1
        self._corrupt_seen: set[tuple[int, int]] = set()
        self._closed = self._dirty = self._dir_dirty = self._needs_rewrite = False
        counters = "corrupt_records torn_tails_truncated bad_segment_headers cursor_resets appended_total"
        counters += " append_errors_total fsync_errors_total rewritten_records_total"
        self._n = dict.fromkeys(counters.split(), 0)
        self._h.lock = disk.lock_dir(self._dir / "LOCK")
        self._h.dir = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY)
        found = recovery.scan(self._dir, names)
        self._segs: dict[int, Seg] = found.segs
        self._skipped = found.skipped
        self._last_error: str | None = found.error
        for key, n in found.counts.items():
            self._n[key] += n
        for sid, off in found.corrupt:
            self._count_corrupt_locked(sid, off)
        self._next_seq = found.next_seq
        self._opened = time.monotonic()
        # (seq, when appended) of the first record appended _MARK_EVERY or more after the previous mark: the
        # records from one mark's seq to the next's were appended within _MARK_EVERY of that mark's time.
        self._marks: collections.deque[tuple[int, float]] = collections.deque(maxlen=_MARKS)
        self._open_segment_locked(found.next_segment, sync_old=False)
        self._cursors = {c: recovery.place(p, self._segs) for c, p in found.cursors.items()}
        self._unlink(self._gc_locked())
        self._thread = threading.Thread(
            target=_fsync_loop, args=(weakref.ref(self), self._h.stop, fsync_interval), daemon=True
        )
        self._thread.start()

    # -- writing ----------------------------------------------------------------------------------------

    def append(self, payload: bytes) -> None:
        """Frame and write one record; cheap (one os.write, no fsync). Raises SpoolFull or the OSError."""
        if not isinstance(payload, bytes):
            payload = bytes(payload)  # kept until fsynced for fsyncgate rewrites: must not change under us
        with self._lock:
            if self._closed:
                raise ValueError("spool is closed")
            now = time.monotonic()
            if not self._marks or now - self._marks[-1][1] >= _MARK_EVERY:
                self._marks.append((self._next_seq, now))
            try:
                self._write_locked(payload, check_limit=True)
            except (OSError, SpoolFull) as e:
                self._n["append_errors_total"] += 1
                self._last_error = f"append: {e!r}"
                if isinstance(e, OSError) and e.errno in FULL_ERRNOS:
                    raise SpoolFull(str(e)) from e
                raise
            self._n["appended_total"] += 1
            self._cond.notify_all()

    def _write_locked(self, payload: bytes, check_limit: bool) -> None:
        size = REC + len(payload)
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
            disk.write_all(fd, disk.frame(self._next_seq, payload))
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
        fd = disk.create_segment(self._path(sid), self._next_seq)
        old, self._h.active = self._h.active, fd
        if old is not None:
            if sync_old:
                self._h.sealed.append(old)
            else:
                os.close(old)
        self._cur = self._segs[sid] = Seg(sid, HDR, self._next_seq)
        self._dirty = self._dir_dirty = True

    def rotate(self) -> None:
        """Seal the active segment and start a new one."""
        with self._lock:
            if self._closed:
                raise ValueError("spool is closed")
            self._open_segment_locked(self._cur.id + 1, sync_old=True)

    @property
    def _total(self) -> int:  # few segments
        return sum(s.size for s in self._segs.values())

    def _capacity(self) -> int:
        """The most the spool could ever hold: max_bytes, or the size of its file system."""
        fs = os.statvfs(self._dir)
        size = fs.f_blocks * fs.f_frsize or disk.NO_LIMIT  # 0: a file system that does not say
        return size if self._max_bytes is None else min(size, self._max_bytes)

    def usage(self) -> tuple[int, int]:
        """(bytes held, bytes it may hold now: what it holds plus the free disk, at most max_bytes)."""
        fs = os.statvfs(self._dir)
        with self._lock:
            used = self._total
        room = used + fs.f_bavail * fs.f_frsize
        return used, room if self._max_bytes is None else min(room, self._max_bytes)

    # -- giving up backlog ------------------------------------------------------------------------------

    def give_up(self, consumers: Collection[str], down_to: int) -> dict[str, int]:
        """Free the oldest segments every other consumer has passed, until the spool holds at most
        ``down_to`` bytes, moving ``consumers``' cursors past them: those records are never read by them.
        Returns how many records each of them gave up. No other consumer's cursor ever moves."""
        lost = dict.fromkeys(consumers, 0)
        doomed: list[int] = []
        with self._lock:
            if self._closed:
                return {}
            kept = [p for c, p in self._cursors.items() if c not in lost]

            def passed(s: Seg) -> bool:
                return all(p[:2] >= (s.id, s.size) for p in kept)

            def free_oldest() -> None:
                for s in sorted(self._segs.values(), key=lambda s: s.id):
                    if self._total <= down_to or s is self._cur or not passed(s):
                        return  # oldest first: never a newer segment while an older one stays
                    nxt = self._segs[min(sid for sid in self._segs if sid > s.id)]
                    for c in lost:
                        p = self._cursors[c]
                        if p[:2] < (s.id, s.size):
                            self._cursors[c] = Pos(nxt.id, HDR, max(p.seq, nxt.base))
                            lost[c] += max(0, nxt.base - p.seq)
                    doomed.extend(self._gc_locked())

            free_oldest()
            if self._total > down_to and self._cur.size > HDR and passed(self._cur):
                try:  # only a sealed segment can go: seal the active one too
                    self._open_segment_locked(self._cur.id + 1, sync_old=True)
                except OSError as e:
                    self._last_error = f"give_up: sealing segment {self._cur.id}: {e!r}"
                else:
                    free_oldest()
        # Cursor files are not rewritten: one left pointing into a deleted segment resumes at the next
        # segment there is when reopened (recovery.place), which is where the cursor was moved.
        self._unlink(doomed)
        return {c: n for c, n in lost.items() if n}

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
                        disk.fsync(fd)
                    if dir_dirty and self._h.dir is not None:
                        disk.fsync(self._h.dir)
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
        assert self._h.dir is not None
        # the cursor is durable before any segment it releases is unlinked
        disk.save_cursor(self._dir, self._h.dir, consumer, batch.end)
        with self._lock:
            if batch.end[:2] > self._cursors[consumer][:2]:  # give_up may have moved it further meanwhile
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

    @property
    def directory(self) -> Path:
        return self._dir

    def seqs(self) -> tuple[int, int]:
        """(seq of the oldest record still on disk, seq of the next record appended): every record spooled
        before ``next`` is gone, for every consumer and any reopening, once ``oldest`` reaches it."""
        with self._lock:
            held = [s.base for s in self._segs.values() if s.size > HDR]
            return min(held, default=self._next_seq), self._next_seq

    def pending(self, consumer: str) -> tuple[int, int]:
        """(records, framed bytes) not yet acked by consumer."""
        with self._lock:
            return self._pending_locked(consumer)

    def behind(self, consumer: str) -> float:
        """Seconds since the oldest record ``consumer`` has not acked was appended (0.0: it has none), to
        within ``_MARK_EVERY``. A record older than every mark (spooled before this process opened the
        spool, or more than ``_MARKS`` marks ago) counts from the oldest time known: never older than it is."""
        with self._lock:
            seq = self._cursors[consumer].seq
            if seq >= self._next_seq:
                return 0.0
            i = bisect.bisect_right(self._marks, seq, key=lambda mark: mark[0])
            if i:
                since = self._marks[i - 1][1]
            elif len(self._marks) == _MARKS:
                since = self._marks[0][1]  # older than every mark kept: at least this old
            else:
                since = self._opened  # spooled before this process opened the spool: at least this old
            return time.monotonic() - since

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
        return disk.seg_path(self._dir, sid)


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
