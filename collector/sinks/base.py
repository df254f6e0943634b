"""What every sink is: a name, an encoding done off-process, and a send.

A capture reaches a sink in two steps (OpenTelemetry's processor → exporter split):
``collector.encoder`` turns a batch of spooled records into the sink's payload with the
encoder named by ``kind`` (``collector/sinks/encoders.py``), then the sink's own thread
calls ``send``. ``send`` raises to ask for a retry (the batch stays in the spool), or
``Rejected`` when the data itself is refused, so the recorder can isolate the record.
"""

from __future__ import annotations

from typing import Any, Protocol


class Rejected(Exception):
    """The sink refuses this batch for what it contains, not because it is unavailable."""


class Sink(Protocol):
    name: str  # spool consumer name: one cursor per sink
    kind: str  # encoder used for its payloads
    options: dict[str, Any]  # keyword arguments for that encoder
    in_engine: bool  # send() runs the embedded engine on the calling thread (GIL released)

    def send(self, payload: bytes, rows: int) -> None: ...

    def close(self) -> None: ...
