"""Fault injection for a sink, for the fault tests and for trying prompttap's recovery.

``PROMPTTAP_FAULT_SINK_DOWN=/path/flag``: while that file exists, every export fails as
if the store were unreachable. ``PROMPTTAP_FAULT_SINK_AMBIGUOUS=/path/flag``: while it
exists, exports succeed and then report a failure (the insert happened, the reply was
lost), so the same batch is delivered again. ``PROMPTTAP_FAULT_SINKS=a,b`` limits the
faults to those sinks. Off unless the variables are set.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from prompttap.collector.sinks.base import Sink


class FaultySink:
    def __init__(self, inner: Sink, down_flag: str | None, ambiguous_flag: str | None) -> None:
        self.inner = inner
        self.name = inner.name
        self.kind = inner.kind
        self.options = inner.options
        self.in_engine = inner.in_engine
        self.down = Path(down_flag) if down_flag else None
        self.ambiguous = Path(ambiguous_flag) if ambiguous_flag else None

    def send(self, payload: bytes, rows: int) -> None:
        self._faulty(lambda: self.inner.send(payload, rows))

    def send_file(self, path: Path, rows: int) -> None:
        self._faulty(lambda: self.inner.send_file(path, rows))

    def _faulty(self, send: Callable[[], None]) -> None:
        if self.down is not None and self.down.exists():
            raise ConnectionError(f"injected fault: {self.name} is down ({self.down} exists)")
        send()
        if self.ambiguous is not None and self.ambiguous.exists():
            raise ConnectionError(f"injected fault: {self.name} reply lost after the insert")

    def close(self) -> None:
        self.inner.close()


def with_faults(sink: Sink) -> Sink:
    down = os.environ.get("PROMPTTAP_FAULT_SINK_DOWN")
    ambiguous = os.environ.get("PROMPTTAP_FAULT_SINK_AMBIGUOUS")
    only = {n for n in os.environ.get("PROMPTTAP_FAULT_SINKS", "").split(",") if n}
    if not (down or ambiguous) or (only and sink.name not in only):
        return sink
    return FaultySink(sink, down, ambiguous)
