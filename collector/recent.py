"""Counts of what happened lately ("drops in the last 5 minutes"), next to the running totals.

Health must say what is wrong *now*: a drop an hour ago, long since recovered from, is history for
the counters and ``/metrics``, not a reason to answer "degraded" until the next restart.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

WINDOW_S = 300.0
"""What "lately" means for ``/readyz``: problems in the last five minutes."""


class Recent:
    """Events in the last ``window`` seconds, kept in ``buckets`` time slices: bounded memory, a count
    that is exact to one slice (the oldest slice leaves the window whole)."""

    def __init__(
        self, window: float = WINDOW_S, buckets: int = 30, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window = window
        self._width = window / buckets
        self._clock = clock
        self._slices: deque[list[int]] = deque()  # [slice number, events], oldest first
        self._lock = threading.Lock()  # sink threads add, the event loop reads

    def add(self, n: int = 1) -> None:
        if n <= 0:
            return
        now = self._slice()
        with self._lock:
            if self._slices and self._slices[-1][0] == now:
                self._slices[-1][1] += n
            else:
                self._slices.append([now, n])
            self._expire(now)

    def count(self) -> int:
        now = self._slice()
        with self._lock:
            self._expire(now)
            return sum(n for _, n in self._slices)

    def _slice(self) -> int:
        return int(self._clock() // self._width)

    def _expire(self, now: int) -> None:
        oldest = now - int(self.window // self._width) + 1
        while self._slices and self._slices[0][0] < oldest:
            self._slices.popleft()
