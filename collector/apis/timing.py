"""Locate stream events in the recorded body and map them to arrival times.

``Exchange.stream_timing`` holds ``(offset_ms, size)`` per response chunk as it arrived.
An event's arrival time is the offset of the chunk holding its last byte: the cumulative
chunk sizes say which chunk that is. Works on bytes so multi-byte characters split across
chunks cost nothing.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Sequence
from itertools import accumulate

from prompttap.collector.apis.events import SSEEvent, parse_sse

_EOL = re.compile(rb"\r\n|\r|\n")


class ChunkClock:
    """Arrival time (ms after request start) of a byte offset in the response body."""

    __slots__ = ("_ends", "_offsets", "_scale")

    def __init__(self, timing: Sequence[tuple[float, int]], body_len: int) -> None:
        self._offsets = [float(t[0]) for t in timing]
        self._ends = list(accumulate(max(int(t[1]), 0) for t in timing))
        total = self._ends[-1] if self._ends else 0
        # Chunk sizes are wire bytes. A stored body longer than the wire total was
        # compressed in transit: fall back to proportional positions. A shorter one was
        # cut at the size limit, and its prefix still maps exactly.
        self._scale = total / body_len if body_len > total > 0 else 1.0

    def at(self, end: int) -> float | None:
        """Arrival of the chunk holding byte ``end - 1`` (``end`` exclusive); None if unknown."""
        if not self._ends or end <= 0:
            return None
        i = bisect_left(self._ends, max(1, round(end * self._scale)))
        return self._offsets[i] if i < len(self._ends) else None


def sse_events_at(body: bytes) -> tuple[list[tuple[SSEEvent, int]], bool]:
    """The events ``events.parse_sse`` finds, each with the offset just past its last byte.

    Blocks are cut on blank lines here (to know where they are) and each block is parsed
    by ``parse_sse`` itself, so field rules stay in one place. The flag says whether the
    body ended on an event boundary (a torn tail is dropped, as ``parse_sse`` does).
    """
    out: list[tuple[SSEEvent, int]] = []
    block_start = pos = last_end = 0
    for m in _EOL.finditer(body):
        line_start, pos = pos, m.end()
        if m.start() > line_start:
            last_end = m.start()
            continue
        if last_end > block_start:
            events, _ = parse_sse(body[block_start:last_end].decode("utf-8", "replace") + "\n\n")
            out.extend((ev, last_end) for ev in events)
        block_start = pos
    tail = body[block_start:]
    return out, tail.strip() == b""


def ndjson_lines_at(body: bytes) -> tuple[list[tuple[str, int]], bool]:
    """Non-empty NDJSON lines with the offset just past each, and whether none was torn.

    Like ``events.parse_ndjson_lines``, but an unterminated last line that is itself a
    complete JSON value is kept: only a line cut mid-value is torn.
    """
    import json

    out: list[tuple[str, int]] = []
    start = 0
    while True:
        nl = body.find(b"\n", start)
        if nl < 0:
            break
        line = body[start:nl]
        if line.strip():
            out.append((line.decode("utf-8", "replace"), nl))
        start = nl + 1
    tail = body[start:]
    if not tail.strip():
        return out, True
    try:
        text = tail.decode("utf-8")
        whole = isinstance(json.loads(text), dict | list)
    except (UnicodeDecodeError, ValueError):
        whole = False
    if not whole:
        return out, False
    out.append((text, len(body)))
    return out, True


def tokens_per_second(tokens: int | None, first_ms: float | None, last_ms: float | None) -> float | None:
    """Output rate between the first and last content arrival; None when not measurable."""
    if not tokens or first_ms is None or last_ms is None or last_ms <= first_ms:
        return None
    return tokens / ((last_ms - first_ms) / 1000.0)
