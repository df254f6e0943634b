"""The run's console: one log line format (clock, elapsed, phase) and how numbers print."""

from __future__ import annotations

import time
from typing import Any

T0 = time.monotonic()
_PHASE = ["setup"]


def set_phase(name: str) -> None:
    """Name the phase that the following log lines belong to."""
    _PHASE[0] = name


def log(msg: str) -> None:
    el = time.monotonic() - T0
    print(f"[{time.strftime('%H:%M:%S')} +{el:6.0f}s {_PHASE[0]}] {msg}", flush=True)


def f(v: Any, nd: int = 2) -> str:
    """A number with ``nd`` decimals, ``-`` for a value not measured."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)
