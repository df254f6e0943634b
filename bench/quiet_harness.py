#!/usr/bin/env python3
"""Run the shared harness (``run_bench.py``), letting prompttap finish recording before every load.

    python bench/quiet_harness.py HARNESS_DIR [run_bench.py options]

Why: prompttap records off the request path, so a 10 s measurement at c=1 (about 25k captures) is
still draining into the store when the harness moves on to the next target. That drain then lands
on whichever target is measured next, usually ``direct``, which makes the added latency look
smaller than it is. Measured in the 2026-11-25 runs: direct's p99 went from about 0.4 ms to 1.4-1.9 ms.

So before every warmup and every measurement, of every target, and before the idle-CPU reading
(which follows the last warmup, prompttap's), this wrapper waits until each prompttap target's
``/_prompttap/healthz`` shows no capture pending in any sink. The wait is bounded; a wait that runs
out is logged and recorded. Every target starts from the same quiet machine, and prompttap's own
measurement still includes recording all of that measurement's traffic. The waits go to
``<out>/quiet.json``. The shared harness is not changed: its ``main`` runs as is, with its
``wait_ready``, ``run_one``, ``tree_cpu`` and ``loadgen`` calls wrapped.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

QUIET_TIMEOUT_S = 120.0
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only


def pending(base_url: str) -> int | None:
    """Captures waiting in prompttap's sinks (None if healthz does not answer)."""
    try:
        with _OPENER.open(base_url.rstrip("/") + "/_prompttap/healthz", timeout=5) as r:
            health = json.load(r)
    except (OSError, ValueError):
        return None
    sinks = health.get("sinks") or {}
    return sum(int(s.get("pending") or 0) for s in sinks.values()) + int(health.get("inflight") or 0)


class Quiet:
    """Remembers prompttap targets as the harness readies them; waits for them to drain."""

    def __init__(self) -> None:
        self.targets: list[Any] = []
        self.waits: list[dict[str, Any]] = []

    def wait(self, before: str) -> None:
        for t in self.targets:
            t0, first = time.monotonic(), pending(t.base_url)
            left = first
            while left and time.monotonic() - t0 < QUIET_TIMEOUT_S:
                time.sleep(0.25)
                left = pending(t.base_url)
            waited = time.monotonic() - t0
            if first:
                self.waits.append(
                    {"target": t.name, "before": before, "pending": first, "waited_s": round(waited, 2), "left": left}
                )
                note = "" if not left else f"; {left} still pending after {QUIET_TIMEOUT_S:.0f}s, going on"
                print(f"quiet: {t.name} drained {first} captures in {waited:.1f}s before {before}{note}", flush=True)


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit(__doc__)
    harness, args = Path(argv[0]).resolve(), argv[1:]
    sys.path.insert(0, str(harness))
    import loadgen  # the harness's modules, found at run time
    import run_bench

    quiet = Quiet()
    ready = run_bench.wait_ready

    def wait_ready(t: Any, timeout: float) -> float:
        s = ready(t, timeout)
        if t.name.startswith("prompttap") and pending(t.base_url) is not None:
            quiet.targets.append(t)
        return s

    # measurements: wait before run_one, which starts its CPU and wall clocks; warmups: wait before the load
    run_one, run_wrk, run_python = run_bench.run_one, loadgen.run_wrk, loadgen.run_python
    in_measurement = [False]

    def quiet_run_one(sc: dict[str, Any], t: Any, *a: Any, **kw: Any) -> Any:
        quiet.wait(f"{sc['id']} on {t.name}")
        in_measurement[0] = True
        try:
            return run_one(sc, t, *a, **kw)
        finally:
            in_measurement[0] = False

    def quiet_wrk(url: str, *a: Any, **kw: Any) -> Any:
        if not in_measurement[0]:
            quiet.wait(f"warmup on {url}")
        return run_wrk(url, *a, **kw)

    def quiet_python(mode: str, url: str, *a: Any, **kw: Any) -> Any:
        if not in_measurement[0]:
            quiet.wait(f"warmup on {url}")
        return run_python(mode, url, *a, **kw)

    tree_cpu = run_bench.tree_cpu

    def quiet_tree_cpu(procs: Any) -> float:  # outside run_one only the idle-CPU reading calls it
        if not in_measurement[0]:
            quiet.wait("the idle-CPU reading")
        return tree_cpu(procs)

    run_bench.wait_ready, run_bench.run_one, run_bench.tree_cpu = wait_ready, quiet_run_one, quiet_tree_cpu
    loadgen.run_wrk, loadgen.run_python = quiet_wrk, quiet_python
    try:
        run_bench.main(args)
    finally:
        out = args[args.index("--out") + 1] if "--out" in args else None
        if out and Path(out).is_dir():
            (Path(out) / "quiet.json").write_text(json.dumps({"timeout_s": QUIET_TIMEOUT_S, "waits": quiet.waits}))


if __name__ == "__main__":
    main(sys.argv[1:])
