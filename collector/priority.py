"""Recording yields the CPU to the traffic, until it falls behind.

The proxy's event loop is the only latency-critical thread. Everything else (the encoder
process, the sink threads, the embedded engine's insert and merge threads) is background
work that the spool lets run late. While recording keeps up:
- the engine's threads and the encoder run under Linux's SCHED_IDLE (only on a CPU nothing
  else wants; a waking event loop preempts them at once, where a nice value lets them
  finish their time slice), on the upper half of the CPUs;
- our own Python threads (sinks, spool fsync, inspector workers) keep normal priority on
  those CPUs: they take the GIL the event loop needs, and an idle-class thread preempted
  while holding it stalls the loop until that CPU is free (a priority inversion; measured
  at concurrency 1: added p99 about +1 ms);
- the event loop keeps to the lower half of the CPUs, where its caches stay warm and no
  background thread runs (measured: added p99 2.2-2.9 ms -> 1.5-2.1 ms).

Under sustained saturation that would starve recording and grow the spool without bound,
so once a sink is ``CATCH_UP_AT`` seconds behind (its oldest waiting capture was spooled that
long ago) everything competes on every CPU again (background at nice 10) until every sink is
under ``CAUGHT_UP_AT``. Seconds, not a count of captures: a burst is let wait whatever the
proxy's speed (a count is crossed sooner the faster the proxy: at one connection, 20,000
captures were 4-7 s of traffic; competing, the nice-10 encoder then kept the client and the
upstream waiting up to a scheduler tick for their CPU, +1-2 ms on the traffic's p99).
Policy and affinity are per thread and inherited by the threads a thread creates; threads
started later (the engine starts some on demand) are classified when the sinks next report.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

log = logging.getLogger("prompttap.priority")

CATCH_UP_AT = 30.0
"""Seconds any one sink is behind (the age of its oldest waiting capture) past which recording
competes for the CPU: how late a capture may reach the store under a burst."""
CAUGHT_UP_AT = 3.0
"""... and under which, in every sink, it yields again."""
CATCH_UP_NICE = 10
GIL_SWITCH_INTERVAL = 0.0005
"""Seconds a Python thread may run before the event loop gets the GIL it asks for (Python's
default: 5 ms). Measured at concurrency 1: added p99 about -0.3 ms, saturation unchanged."""


HOT_PATH_THREADS = frozenset({"libuv-worker"})
"""Helpers of the event loop (uvloop's resolver threads): they keep the loop's settings."""


def _cpus() -> tuple[set[int], set[int], set[int]]:
    try:
        every = os.sched_getaffinity(0)  # at import, on the main thread: the process's CPUs
    except (OSError, AttributeError):
        return set(), set(), set()
    cpus = sorted(every)
    upper = set(cpus[len(cpus) // 2 :])
    return set(every), upper, (set(every) - upper) or set(every)


ALL_CPUS, BACKGROUND_CPUS, LOOP_CPUS = _cpus()
"""While yielding, background work keeps to BACKGROUND_CPUS and the event loop to LOOP_CPUS
(on two cores: one each), so a waking client or upstream always finds a CPU where no
background thread runs, and the loop never lands where background work cooled the caches."""


def background(tid: int = 0) -> None:
    """Make thread ``tid`` (0: the calling thread) yielding background work. Never raises."""
    _set(tid, "idle")


def _set(tid: int, mode: str) -> None:
    """``idle``: SCHED_IDLE on the background CPUs; ``gil``: normal priority there (a thread
    that takes the GIL); ``compete``: nice 10 on every CPU; ``loop``/``loop-compete``: the
    event loop, normal priority on its own CPUs / on every CPU."""
    with contextlib.suppress(OSError, AttributeError, ValueError):  # not Linux, or the thread is gone
        if mode == "idle":
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        else:
            os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
            os.setpriority(os.PRIO_PROCESS, tid, CATCH_UP_NICE if mode == "compete" else 0)
        cpus = {"idle": BACKGROUND_CPUS, "gil": BACKGROUND_CPUS, "loop": LOOP_CPUS}.get(mode, ALL_CPUS)
        os.sched_setaffinity(tid, cpus)


def _threads() -> set[int]:
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def _name(tid: int) -> str:
    try:
        return Path(f"/proc/self/task/{tid}/comm").read_text().strip()
    except OSError:
        return ""  # the thread is gone


class Priority:
    """The CPU priority of everything but the event loop, driven by the spool's backlog."""

    def __init__(self, main_tid: int, other_pids: Callable[[], Iterable[int]] = tuple) -> None:
        self.main_tid = main_tid
        self.other_pids = other_pids  # helper processes (the encoder), by their current pid
        self.catching_up = False
        self.transitions = 0
        self._behind: dict[str, float] = {}
        self._seen: set[int] = set()
        self._lock = threading.Lock()

    def apply(self, only_new: bool = False) -> None:
        """Set the event loop, every other thread and the helper processes to the current
        mode (``only_new``: just the threads not seen before)."""
        compete = self.catching_up
        threads = _threads()
        todo = threads - self._seen if only_new else threads  # run by the sinks every batch: keep it cheap
        python_tids = {t.native_id for t in threading.enumerate()} if todo else set()
        for tid in todo:
            if tid == self.main_tid:
                _set(tid, "loop-compete" if compete else "loop")
            elif _name(tid) not in HOT_PATH_THREADS:
                _set(tid, "compete" if compete else "gil" if tid in python_tids else "idle")
        self._seen = threads
        if not only_new:
            for pid in self.other_pids():
                _set(pid, "compete" if compete else "idle")

    @contextlib.contextmanager
    def engine_work(self) -> Iterator[None]:
        """The calling Python thread runs the embedded engine (the GIL released) for a while:
        idle-class meanwhile, like the engine's own threads and the threads it starts."""
        tid = threading.get_native_id()
        if not self.catching_up:
            _set(tid, "idle")
        try:
            yield
        finally:
            if not self.catching_up:
                _set(tid, "gil")  # a catch-up that began meanwhile has set it already

    def update(self, sink: str, behind: float) -> None:
        """A sink reports how many seconds it is behind; switch modes at the thresholds."""
        with self._lock:
            self._behind[sink] = behind
            worst = max(self._behind.values())
            if not self.catching_up and worst > CATCH_UP_AT:
                self.catching_up = True
                log.info("recording is %.0f s behind: it now competes with the traffic for the CPU", worst)
            elif self.catching_up and worst < CAUGHT_UP_AT:
                self.catching_up = False
                log.info("recording caught up: it yields the CPU to the traffic again")
            else:
                self.apply(only_new=True)  # threads the engine started since
                return
            self.transitions += 1
            self.apply()
