"""Helpers shared by the per-API understanding tests: hand-counted stream timings."""

from __future__ import annotations

from itertools import accumulate, pairwise

from hypothesis import strategies as st

Timing = tuple[tuple[float, int], ...]


def chunk_at(timing: Timing, end: int) -> float:
    """Offset of the chunk holding byte ``end - 1``, counted by hand (the oracle for ttft)."""
    seen = 0
    for offset, size in timing:
        seen += size
        if seen >= end:
            return offset
    raise AssertionError("byte beyond the given chunks")


def stream_timings(n: int) -> st.SearchStrategy[Timing]:
    """Any re-chunking of an ``n``-byte body: random cut points and arrival gaps."""

    @st.composite
    def build(draw: st.DrawFn) -> Timing:
        cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=60)))
        bounds = [0, *cuts, n]
        gaps = draw(st.lists(st.floats(0.5, 400), min_size=len(bounds) - 1, max_size=len(bounds) - 1))
        return tuple(zip(accumulate(gaps), (b - a for a, b in pairwise(bounds)), strict=True))

    return build()
