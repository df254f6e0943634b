"""Opening a spool directory after a clean stop or a crash: what is there, and where each consumer resumes.

Only the segment written at the crash is expected to be torn: its tail is truncated. Damage elsewhere
(e.g. power loss tearing the segment sealed just before) is left for readers, which skip and count it.
Power loss can lose records a consumer already acked, so new seqs and segment ids start above every
cursor too; a cursor that is missing or damaged replays everything still present (duplicates, no loss).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from prompttap.collector.spool import disk
from prompttap.collector.spool.disk import HDR, NO_LIMIT, SEG_RE, Pos, Seg


@dataclass
class Found:
    """What a spool directory holds."""

    segs: dict[int, Seg] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # future-version or unreadable: never read or deleted
    next_seq: int = 0  # above every record and cursor found
    next_segment: int = 1  # id of the fresh active segment: above every segment and cursor found
    cursors: dict[str, Pos | None] = field(default_factory=dict)  # None: never acked, or damaged
    counts: dict[str, int] = field(default_factory=dict)  # bad_segment_headers, torn_tails_truncated, cursor_resets
    corrupt: list[tuple[int, int]] = field(default_factory=list)  # (segment, offset) of damage in the newest one
    error: str | None = None


def scan(directory: Path, consumers: list[str]) -> Found:
    found = Found(counts=dict.fromkeys(("bad_segment_headers", "torn_tails_truncated", "cursor_resets"), 0))
    ids = sorted(int(m[1]) for n in os.listdir(directory) if (m := SEG_RE.match(n)))
    for sid in ids:
        path = disk.seg_path(directory, sid)
        seg = disk.inspect_segment(path, sid)
        if isinstance(seg, str):
            found.skipped[path.name] = seg
            continue
        found.counts["bad_segment_headers"] += not seg.header_ok
        found.segs[sid] = seg
    next_seq = max((s.base for s in found.segs.values()), default=0)
    if last := max((s for s in found.segs.values() if s.size > HDR), key=lambda s: s.id, default=None):
        try:
            next_seq = max(next_seq, _recover_tail(directory, last, found))
        except OSError as e:  # startup must not fail on spool contents; readers resync past damage
            found.error = f"recovering segment {last.id}: {e!r}"
    for c in consumers:
        try:
            found.cursors[c] = disk.load_cursor(directory, c)
        except ValueError:
            found.cursors[c] = None
            found.counts["cursor_resets"] += 1
    known = [p for p in found.cursors.values() if p is not None]
    found.next_seq = max([next_seq, *(p.seq for p in known)])
    found.next_segment = max([0, *ids, *(p.seg for p in known)]) + 1
    return found


def place(cursor: Pos | None, segs: dict[int, Seg]) -> Pos:
    """Where a recovered cursor resumes among the segments there are (the active one included, so one
    always follows): its own segment, else the start of the next one, else the first one there is."""
    order = sorted(segs)
    if cursor is None:
        return Pos(order[0], HDR, segs[order[0]].base)
    sid = next(s for s in order if s >= cursor.seg)
    if sid == cursor.seg:
        return cursor._replace(off=max(cursor.off, HDR))
    return Pos(sid, HDR, max(cursor.seq, segs[sid].base))


def _recover_tail(directory: Path, seg: Seg, found: Found) -> int:
    """Scan the newest segment: note mid-segment corruption, truncate a torn tail; returns next seq."""
    if seg.size <= HDR:
        return seg.base
    fd = os.open(disk.seg_path(directory, seg.id), os.O_RDWR if seg.header_ok else os.O_RDONLY)
    try:
        off, next_seq, bad = HDR, seg.base, []
        while True:
            kind, nxt, seq, _ = disk.next_item(fd, off, seg.size, next_seq, NO_LIMIT)
            if kind == "end":
                break
            if kind == "rec":
                found.corrupt += [(seg.id, b) for b in bad]  # a valid record follows: corrupt, not a tail
                bad, next_seq = [], seq + 1
            else:
                bad.append(off)
            off = nxt
        if bad and seg.header_ok:  # never truncate a file whose header we could not vouch for
            try:
                os.ftruncate(fd, bad[0])
                disk.fsync(fd)
                seg.size = bad[0]
                found.counts["torn_tails_truncated"] += 1
            except OSError as e:
                found.error = f"truncating torn tail of {seg.id}: {e!r}"
        return next_seq
    finally:
        os.close(fd)
