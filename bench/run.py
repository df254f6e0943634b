#!/usr/bin/env python3
"""prompttap benchmark: one interleaved harness run, a zero-loss check at saturation, an RSS soak, HTTPS interception.

    .venv/bin/python bench/run.py [options] [-- harness options]
    make bench ARGS="--no-litellm -- --quick"

Phases (``--phases``, default all four, in this order):

  harness  The shared harness (``run_bench.py``, found at ``../shared/bench`` from the repo root or at
           ``$PROMPTTAP_BENCH_HARNESS``) in ONE interleaved run: direct, nginx, litellm, the minimal
           aiohttp pass-through and prompttap (recording on, embedded ClickHouse), each load
           starting once prompttap has drained the last one's captures (``quiet_harness.py``,
           so its drain never lands on another target's measurement). Everything after
           ``--`` goes to ``run_bench.py`` (``--quick``, ``--rounds``, ``--duration``, ``--scenarios``...).
  lost     prompttap + the harness's mock upstream, wrk at c=64 (unique bodies) then asyncio streams at
           c=64; wait until healthz shows nothing pending, SIGTERM, open the store in a child process
           and compare the rows with what the load generator completed, the upstream received and
           healthz ``recorded``.
  soak     N requests (``--soak``, default 100000) through a fresh prompttap at c=64 in wrk chunks,
           sampling its RSS; RSS after warmup, at 25/50/75/100 % and the max (target < 500 MB, flat).
  intercept  HTTPS through prompttap's forward proxy (``serve --intercept``) to a TLS mock upstream, next to
           direct over TLS and prompttap's routed port, with one HTTPS client (``tls_load.py``): added
           latency at c=1, TTFT of one stream, saturation, the cost of a new CONNECT + TLS handshake,
           bytes identical.

The result is one table (measured value, target, PASS/FAIL), printed and saved as
``bench/results/<timestamp>.md`` (with ``<timestamp>.json``, the harness's output in
``<timestamp>-harness/`` and process logs in ``<timestamp>-logs/``). Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import phase_harness
import phase_intercept
import phase_lost
import phase_soak
from console import log, set_phase
from paths import HARNESS, REPO, RESULTS, RunDirs
from prereqs import ensure_prereqs
from report import RowsOf, render
from report_harness import harness_rows
from report_intercept import intercept_rows
from report_loss import lost_rows, soak_rows
from stack import cleanup, on_signal


@dataclass(frozen=True)
class Phase:
    """A phase: what runs it (its result is a JSON-able dict) and the report rows made from that result."""

    run: Callable[[argparse.Namespace, RunDirs], dict[str, Any]]
    rows: RowsOf


# The phases in the order the report shows them. A new phase is a runner module (phase_*.py), a rows
# function (report_*.py), its options in parse_args() and one entry here.
PHASES: dict[str, Phase] = {
    "harness": Phase(phase_harness.run, harness_rows),
    "lost": Phase(phase_lost.run, lost_rows),
    "soak": Phase(phase_soak.run, soak_rows),
    "intercept": Phase(phase_intercept.run, intercept_rows),
}
INTERCEPT_TARGETS = ("direct", "proxy", "routed")


def parse_args(argv: list[str]) -> argparse.Namespace:
    passthrough: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, passthrough = argv[:i], argv[i + 1 :]
    ap = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s [options] [-- run_bench.py options]",
    )
    every = ",".join(PHASES)
    ap.add_argument("--phases", default=every, help=f"comma list of {every} (default all)")
    ap.add_argument("--no-litellm", action="store_true", help="leave LiteLLM out (quicker; no setup of its venv)")
    ap.add_argument("--soak", type=int, default=100000, metavar="N", help="requests in the soak phase (100000)")
    ap.add_argument("--soak-concurrency", type=int, default=64)
    ap.add_argument("--soak-max-seconds", type=float, default=1800, help="time bound of the soak load (1800)")
    ap.add_argument("--sample-interval", type=float, default=2.0, help="RSS sampling period in the soak (2 s)")
    ap.add_argument("--lost-concurrency", type=int, default=64)
    ap.add_argument("--lost-duration", type=int, default=10, help="seconds of wrk in the loss check (10)")
    ap.add_argument(
        "--lost-stream-duration", type=float, default=5, help="seconds of SSE streams in the loss check (5; 0 = none)"
    )
    ap.add_argument("--drain-timeout", type=float, default=600, help="max wait for pending == 0 (600 s)")
    ap.add_argument("--harness-timeout", type=float, default=3600, help="time bound of the harness phase (3600 s)")
    ap.add_argument("--intercept-rounds", type=int, help="rounds of the intercept phase (3; 1 with -- --quick)")
    ap.add_argument(
        "--intercept-duration", type=float, help="seconds per load in the intercept phase (10; 2 with --quick)"
    )
    ap.add_argument("--intercept-concurrency", type=int, default=64, help="connections of its saturation load (64)")
    ap.add_argument(
        "--intercept-targets",
        default=",".join(INTERCEPT_TARGETS),
        help="its targets: direct and proxy, and routed (prompttap's own port) unless left out",
    )
    ap.add_argument("--strict", action="store_true", help="exit 1 if any row FAILs")
    a = ap.parse_args(argv)
    quick = "--quick" in passthrough  # the harness's smoke test makes the intercept phase one too
    a.intercept_rounds = a.intercept_rounds or (1 if quick else 3)
    a.intercept_duration = a.intercept_duration or (2.0 if quick else 10.0)
    targets = {t.strip() for t in a.intercept_targets.split(",") if t.strip()}
    if not {"direct", "proxy"} <= targets <= set(INTERCEPT_TARGETS):
        ap.error(f"--intercept-targets: direct,proxy and optionally routed (got {a.intercept_targets})")
    phases = [p.strip() for p in a.phases.split(",") if p.strip()]
    unknown = set(phases) - set(PHASES)
    if unknown:
        ap.error(f"unknown phase(s): {', '.join(sorted(unknown))}")
    if passthrough and "harness" not in phases:
        ap.error("options after -- go to the harness, but the harness phase is not selected")
    a.harness_args = passthrough
    a.phase_list = phases
    return a


def main() -> int:
    a = parse_args(sys.argv[1:])
    phases: list[str] = a.phase_list
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    log(f"repo {REPO}; harness {HARNESS}; phases {','.join(phases)}")
    ensure_prereqs(need_litellm="harness" in phases and not a.no_litellm, need_nginx="harness" in phases)

    RESULTS.mkdir(parents=True, exist_ok=True)
    dirs = RunDirs(dt.datetime.now().strftime("%Y%m%d-%H%M%S"), Path(tempfile.mkdtemp(prefix="prompttap-bench-")))
    results: dict[str, Any] = {}
    crashed = False
    try:
        for phase in phases:
            set_phase(phase)
            t = time.monotonic()
            log(f"=== phase {phase} ===")
            try:
                results[phase] = PHASES[phase].run(a, dirs)
            except Exception as exc:
                crashed = True
                results[phase] = {"error": f"{type(exc).__name__}: {exc}"[:600]}
                log(f"phase {phase} FAILED: {exc}")
            log(f"=== phase {phase} done in {time.monotonic() - t:.0f}s ===")
    finally:
        cleanup()
        shutil.rmtree(dirs.work, ignore_errors=True)
    set_phase("report")
    md = render(results, dirs.stamp, sys.argv[1:], {name: p.rows for name, p in PHASES.items()})
    dirs.table.write_text(md)
    # every number but the harness's raw results, which stay in <stamp>-harness/results.json
    slim = {k: {kk: vv for kk, vv in v.items() if kk != "results"} for k, v in results.items()}
    dirs.details.write_text(json.dumps(slim, indent=1, default=str))
    print()
    print(md)
    log(f"wrote {dirs.table} (details: {dirs.details}; logs: {dirs.logs})")
    if crashed:
        return 2
    if a.strict and "**FAIL**" in md:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
