"""Fault injection for a sink, for the fault tests and for trying prompttap's recovery.

``PROMPTTAP_FAULT_SINK_DOWN=/path/flag``: while that file exists, every export fails as
if the store were unreachable. ``PROMPTTAP_FAULT_SINK_AMBIGUOUS=/path/flag``: while it
exists, exports succeed and then report a failure (the insert happened, the reply was
lost), so the same batch is delivered again. Off unless the variables are set.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from collector.recorder import Sink


class FaultySink:
    def __init__(self, inner: Sink, down_flag: str | None, ambiguous_flag: str | None) -> None:
        self.inner = inner
        self.name = inner.name
        self.down = Path(down_flag) if down_flag else None
        self.ambiguous = Path(ambiguous_flag) if ambiguous_flag else None

    def export(self, records: Sequence[dict[str, Any]]) -> None:
        if self.down is not None and self.down.exists():
            raise ConnectionError(f"injected fault: {self.name} is down ({self.down} exists)")
        self.inner.export(records)
        if self.ambiguous is not None and self.ambiguous.exists():
            raise ConnectionError(f"injected fault: {self.name} reply lost after the insert")

    def close(self) -> None:
        self.inner.close()


def with_faults(sink: Sink) -> Sink:
    down = os.environ.get("PROMPTTAP_FAULT_SINK_DOWN")
    ambiguous = os.environ.get("PROMPTTAP_FAULT_SINK_AMBIGUOUS")
    return FaultySink(sink, down, ambiguous) if (down or ambiguous) else sink
