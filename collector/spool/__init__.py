"""Durable, append-only, multi-consumer on-disk spool for captures.

Promises: a record survives kill -9 once ``append`` returned (plain ``os.write`` on an O_APPEND fd), and
power loss once the background fsync (every ``fsync_interval`` s when dirty) or ``sync()`` covered it.
Delivery is at-least-once per consumer; records leave only when every registered consumer acked them or
gave them up (``Spool.give_up``: the recorder's last resort when the spool runs short of room), never by
age or count.

Directory layout:
  00000000000000000001.seg  segments, sorted by name. Every open starts a fresh one, so a recovered segment
                            is never appended to again (a cursor ahead of lost data can't land mid-record).
  cursor-<consumer>.pos     acked position, replaced atomically (tmp, fsync, rename, fsync dir)
  LOCK                      flock'd while open: two processes appending to one spool would interleave

Modules: ``disk`` (the files' format and the I/O calls), ``recovery`` (opening a directory after a crash),
``reads`` (read plans, batches, reading in any process), ``spool`` (the ``Spool`` itself).
"""

from prompttap.collector.spool.disk import HDR, Pos
from prompttap.collector.spool.reads import Batch, ReadPlan, read_planned
from prompttap.collector.spool.spool import Spool, SpoolFull

__all__ = ["HDR", "Batch", "Pos", "ReadPlan", "Spool", "SpoolFull", "read_planned"]
