"""Sinks that fail on demand, for the fault tests: a test-only way to start the real ``prompttap serve``.

``python -m tests.sink_faults serve ...`` is ``prompttap serve ...`` with every sink it builds wrapped
in a ``FaultySink``; nothing of this ships in the package. ``FaultyPrompttap`` is the harness's
``Prompttap`` started that way.

``PROMPTTAP_FAULT_SINK_DOWN=/path/flag``: while that file exists, every export fails as if the sink were
unreachable. ``PROMPTTAP_FAULT_SINK_AMBIGUOUS=/path/flag``: while it exists, exports succeed and then
report a failure (the insert happened, the reply was lost), so the same batch is delivered again.
``PROMPTTAP_FAULT_SINKS=a,b`` limits the faults to those sinks (default: every sink).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from prompttap.collector.sinks.base import Sink
from tests.harness import Prompttap


class FaultySink:
    """A real sink whose sends fail while a flag file exists; everything else is the sink's own."""

    def __init__(self, inner: Sink, down_flag: str | None, ambiguous_flag: str | None) -> None:
        self.inner = inner
        self.down = Path(down_flag) if down_flag else None
        self.ambiguous = Path(ambiguous_flag) if ambiguous_flag else None

    def __getattr__(self, name: str) -> object:  # name, kind, options, ...: the real sink's
        return getattr(self.inner, name)

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


def with_faults(sink: Sink, environ: Mapping[str, str]) -> Sink:
    down = environ.get("PROMPTTAP_FAULT_SINK_DOWN")
    ambiguous = environ.get("PROMPTTAP_FAULT_SINK_AMBIGUOUS")
    only = {n for n in environ.get("PROMPTTAP_FAULT_SINKS", "").split(",") if n}
    if not (down or ambiguous) or (only and sink.name not in only):
        return sink
    return FaultySink(sink, down, ambiguous)


class FaultyPrompttap(Prompttap):
    """``Prompttap`` whose sinks obey the ``PROMPTTAP_FAULT_*`` variables in ``env``."""

    def command(self) -> list[str]:
        cmd = super().command()
        i = cmd.index("prompttap")
        assert cmd[i - 1] == "-m", cmd
        return [*cmd[:i], "tests.sink_faults", *cmd[i + 1 :]]


def main() -> int:
    """The real CLI, with every sink the server builds wrapped."""
    from prompttap.cli import main as cli
    from prompttap.collector.server import App

    build = App._sinks
    App._sinks = lambda app: [with_faults(s, os.environ) for s in build(app)]  # type: ignore[method-assign]
    return cli()


if __name__ == "__main__":
    sys.exit(main())
