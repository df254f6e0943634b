"""What a consumer reads: a ``ReadPlan`` fixed under the spool's lock, carried out by ``read_planned``
in any process (the encoder reads its batches itself), giving a ``Batch``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from prompttap.collector.spool.disk import HDR, NO_LIMIT, Pos, next_item, seg_path


@dataclass
class Batch:
    """Records read for one consumer, from start to end. A reader in another process may leave
    ``records`` and ``ends`` empty (the caller has what it made of them); ``seqs`` always lists what was
    read."""

    consumer: str
    records: list[bytes]
    seqs: list[int]
    start: Pos
    end: Pos
    corrupt: list[tuple[int, int]] = field(default_factory=list)  # (segment, offset) of damage passed
    ends: list[Pos] = field(default_factory=list)  # where each record ends

    def upto(self, n: int) -> Batch:
        """The batch of the first ``n`` records, to ack part of this one."""
        if n == len(self.seqs):
            return self
        return Batch(self.consumer, self.records[:n], self.seqs[:n], self.start, self.ends[n - 1])


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


def read_planned(plan: ReadPlan) -> Batch:
    """Carry out a ``ReadPlan``: only the spool's files are read, so this runs in any process. Segments
    only ever grow, and a plan reads no further than their committed size, so no record is half there."""
    pos, records, seqs, ends, used, corrupt = plan.start, [], [], [], 0, []
    for sid, size, base in plan.segments:
        if sid != pos.seg:
            pos = Pos(sid, HDR, max(pos.seq, base))
        try:
            fd = os.open(seg_path(plan.dir, sid), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # deleted behind our back: nothing to read there
            pos = pos._replace(off=max(size, HDR))
            continue
        try:
            off, seq, kind = max(pos.off, HDR), pos.seq, "end"
            while len(records) < plan.max_records:
                kind, nxt, rseq, payload = next_item(fd, off, size, seq, plan.max_bytes - used if records else NO_LIMIT)
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
                if kind == "rec":
                    ends.append(Pos(sid, off, seq))
            pos = Pos(sid, off, seq)
        finally:
            os.close(fd)
        if kind == "full" or len(records) >= plan.max_records or sid == plan.active:
            break
    return Batch(plan.consumer, records, seqs, plan.start, pos, corrupt, ends)
