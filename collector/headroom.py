"""Room in the spool for the system of record: one failing sink never costs the store a capture.

Segments leave the spool only when every sink's cursor has passed them, so a sink that is down (or
refuses our key forever) holds everything written since. When the spool's use reaches the high-water
mark (``HIGH_WATER`` of what it may hold: ``--spool-max-bytes``, or what its disk has room for), or
an append finds it full, the lagging *secondary* sinks give up their oldest backlog, down to the
low-water mark: counted per sink, logged, shown on ``/healthz``. The primary sink's (the store's
``captures``) backlog is never given up: when the store itself is down, the spool fills and new
captures are dropped (counted), as there is nowhere else to keep them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from prompttap.collector.spool import Spool

if TYPE_CHECKING:
    from prompttap.collector.drain import SinkWorker

log = logging.getLogger("prompttap.recorder")

HIGH_WATER = 0.8
"""Share of the spool's room at which the secondary sinks start giving up their oldest backlog ..."""
LOW_WATER = 0.6
"""... down to this share, so that a burst finds room again before the next check."""


class Headroom:
    def __init__(self, spool: Spool, workers: Sequence[SinkWorker]) -> None:
        self.spool = spool
        self.secondary = {w.sink.name: w for w in workers if not w.sink.primary}
        self._lock = threading.Lock()  # one give-up at a time: the sinks' threads and the event loop call in

    def check(self, full: bool = False) -> bool:
        """At the high-water mark, or when an append found the spool ``full``, let the secondary sinks
        give up their oldest backlog: first the failing ones; the ones that work but lag behind the store
        only if that was not enough. True if any record was given up."""
        if not self.secondary:
            return False
        used, room = self.spool.usage()
        if not full and used < HIGH_WATER * room:
            return False
        failing = [name for name, w in self.secondary.items() if w.status != "ok"]
        lost = self._give_up(failing, used, room) if failing else 0
        enough = lost > 0 if full else self.spool.usage()[0] < HIGH_WATER * room
        if not enough:
            lost += self._give_up(list(self.secondary), used, room)
        return bool(lost)

    def _give_up(self, names: list[str], used: int, room: int) -> int:
        with self._lock:
            lost = self.spool.give_up(names, int(LOW_WATER * room))
        for name, n in lost.items():
            worker = self.secondary[name]
            worker.gave_up(n)
            log.error(
                "sink %s (%s) lags while the spool runs short of room (%d of %d bytes): it gave up its %d oldest "
                "captures, never to be sent (%d so far); the store keeps them",
                name,
                worker.status,
                used,
                room,
                n,
                worker.given_up,
            )
        return sum(lost.values())
