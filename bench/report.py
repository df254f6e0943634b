"""The report: one markdown table (metric, measured, target, PASS/FAIL), notes and log excerpts.

Each phase contributes its own rows through a ``RowsOf`` function (``report_harness``,
``report_loss``); ``render`` puts them together in the order of the phases it is given.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Mapping
from typing import Any

MB500_MIB = 500e6 / 2**20  # the "500 MB" in MiB (476.8)

Rows = tuple[list[list[str]], list[str]]  # table rows [metric, measured, target, result], notes under it
RowsOf = Callable[[dict[str, Any]], Rows]  # a phase's result -> its rows and notes


def verdict(ok: bool | None) -> str:
    return "SKIP" if ok is None else ("PASS" if ok else "**FAIL**")


def render(results: dict[str, Any], stamp: str, argv: list[str], rows_of: Mapping[str, RowsOf]) -> str:
    L = [f"# prompttap benchmark {stamp}", ""]
    L.append(f"`bench/run.py {shlex.join(argv)}` — host {os.cpu_count()} CPU, load average at end {os.getloadavg()}")
    L.append("")
    rows: list[list[str]] = []
    notes: list[str] = []
    for phase, phase_rows in rows_of.items():
        r = results.get(phase)
        if r is None:
            continue
        if "error" in r:
            rows.append([f"{phase} phase", f"ERROR: {r['error']}", "completes", "**FAIL**"])
            continue
        pr, pn = phase_rows(r)
        rows += pr
        notes += pn
    L.append("| metric | measured | target | result |")
    L.append("|---|---|---|---|")
    L += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    if notes:
        L.append("")
        L += [f"- {n}" for n in notes]
    for phase in rows_of:
        r = results.get(phase) or {}
        lg = r.get("prompttap_log") or r.get("log")  # the harness's prompttap log, or the phase's own
        if lg and lg.get("first"):
            L.append(f"\nFirst warnings/errors in prompttap's log ({phase}, {lg['path']}):\n")
            L += [f"    {x}" for x in lg["first"]]
    if results.get("harness", {}).get("out"):
        L.append(f"\nFull harness table: {results['harness']['out']}/results.md")
    return "\n".join(L) + "\n"
