"""Recording yields the CPU to the traffic, until it falls behind.

The proxy's event loop is the only latency-critical thread. Everything else (the encoder
process, the sink threads, the embedded engine's insert and merge threads) is background
work that the spool lets run late. While recording keeps up, that work runs under Linux's
SCHED_IDLE (only on a CPU nothing else wants; a waking event loop preempts it at once,
where a nice value lets it finish its time slice) and keeps to the upper half of the CPUs.
Measured on the 2-core benchmark machine, added p99 at concurrency 1: nice 10 +4.7 ms,
SCHED_IDLE +3.7 ms, SCHED_IDLE on one CPU +2.6 ms.

Under sustained saturation that would starve recording and grow the spool without bound,
so past ``CATCH_UP_AT`` waiting captures the background competes again (nice 10, every
CPU) until the backlog is under ``CAUGHT_UP_AT``. Policy and affinity are per thread and
inherited by the threads a thread creates, so the engine's later threads follow.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable

log = logging.getLogger("prompttap.priority")

CATCH_UP_AT = 20_000
"""Waiting captures (in any one sink) past which recording competes for the CPU."""
CAUGHT_UP_AT = 2_000
"""... and under which it yields again."""
CATCH_UP_NICE = 10


def _cpus() -> tuple[set[int], set[int]]:
    try:
        every = os.sched_getaffinity(0)  # at import, on the main thread: the process's CPUs
    except (OSError, AttributeError):
        return set(), set()
    cpus = sorted(every)
    return set(every), set(cpus[len(cpus) // 2 :])


ALL_CPUS, BACKGROUND_CPUS = _cpus()
"""While yielding, background work keeps to BACKGROUND_CPUS (on two cores: one), so a waking
event loop, client or upstream always finds a CPU with no background thread on it."""


def background(tid: int = 0) -> None:
    """Make thread ``tid`` (0: the calling thread) yielding background work. Never raises."""
    _set(tid, idle=True)


def _set(tid: int, idle: bool) -> None:
    with contextlib.suppress(OSError, AttributeError, ValueError):  # not Linux, or the thread is gone
        if idle:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            os.sched_setaffinity(tid, BACKGROUND_CPUS)
        else:
            os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
            os.setpriority(os.PRIO_PROCESS, tid, CATCH_UP_NICE)
            os.sched_setaffinity(tid, ALL_CPUS)


def _threads() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return []


class Priority:
    """The CPU priority of everything but the event loop, driven by the spool's backlog."""

    def __init__(self, main_tid: int, other_pids: Callable[[], Iterable[int]] = tuple) -> None:
        self.main_tid = main_tid
        self.other_pids = other_pids  # helper processes (the encoder), by their current pid
        self.catching_up = False
        self.transitions = 0
        self._backlog: dict[str, int] = {}
        self._lock = threading.Lock()

    def apply(self) -> None:
        """Set every thread but the event loop, and the helper processes, to the current mode."""
        idle = not self.catching_up
        for tid in _threads():
            if tid != self.main_tid:
                _set(tid, idle)
        for pid in self.other_pids():
            _set(pid, idle)

    def update(self, sink: str, backlog: int) -> None:
        """A sink reports how many captures wait for it; switch modes at the thresholds."""
        with self._lock:
            self._backlog[sink] = backlog
            worst = max(self._backlog.values())
            if not self.catching_up and worst > CATCH_UP_AT:
                self.catching_up = True
                log.info("recording is %d captures behind: it now competes with the traffic for the CPU", worst)
            elif self.catching_up and worst < CAUGHT_UP_AT:
                self.catching_up = False
                log.info("recording caught up: it yields the CPU to the traffic again")
            else:
                return
            self.transitions += 1
            self.apply()
