"""What every sink is: a name, an encoding done off-process, and a send.

A capture reaches a sink in two steps (OpenTelemetry's processor → exporter split):
``collector.encoder`` turns a batch of spooled records into the sink's payload with the
encoder named by ``kind`` (``collector/sinks/encoders.py``), then the sink's own thread
calls ``send``. ``send`` raises to ask for a retry (the batch stays in the spool),
``Rejected`` when the data itself is refused, so the recorder can isolate the record, or
``Misconfigured`` when the sink refuses prompttap itself (credentials, permissions): retried
too, but the sink is shown as misconfigured until it works.

The ``primary`` sink is the system of record (the store's ``captures`` table): its backlog is
never given up. A secondary sink that lags while the spool runs short of room gives up its
oldest backlog instead (``collector.headroom``), so it never costs the store a capture.

A sink that can delete what it was sent (Langfuse) says so with ``recalls = True`` and deletes a
trace with ``recall(trace_id)`` (raising like ``send``): a privacy delete asks it to
(``collector.tombstones``). Others have no ``recall``; the store's rows are deleted by the inspector.

A sink that runs the embedded engine in this process (``in_engine``) gets its payloads as
a file the encoder wrote (``send_file``): the engine reads it without the GIL, so megabytes
of payload a batch never pass through Python in the proxy's process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class Rejected(Exception):
    """The sink refuses this batch for what it contains, not because it is unavailable."""


class Misconfigured(Exception):
    """The sink refuses prompttap's credentials or permissions (HTTP 401/403 and the like): no retry
    helps until someone fixes the configuration."""


class Sink(Protocol):
    name: str  # spool consumer name: one cursor per sink
    kind: str  # encoder used for its payloads
    options: dict[str, Any]  # keyword arguments for that encoder
    in_engine: bool  # send() runs the embedded engine on the calling thread (GIL released)
    primary: bool  # the system of record: its backlog is never given up to make room in the spool

    def send(self, payload: bytes, rows: int) -> None: ...

    def send_file(self, path: Path, rows: int) -> None: ...  # the payload in a file; only if in_engine

    def close(self) -> None: ...
