"""Phase ``lost``: zero captures lost at saturation.

A fresh prompttap with the mock upstream; wrk at c=64 with a unique body per request, then asyncio
SSE streams at c=64; then the loss accounting (``loss.finish_and_count``): drain, SIGTERM, count the
store and compare with what the clients completed, the upstream received and healthz ``recorded``.
"""

from __future__ import annotations

import argparse
from typing import Any

from console import log
from load import run_closed_stream, run_wrk
from loss import finish_and_count, loss_summary
from paths import RunDirs
from stack import Stack


def run(a: argparse.Namespace, dirs: RunDirs) -> dict[str, Any]:
    stack = Stack("lost", dirs.logs, dirs.work / "lost-home")
    try:
        stack.start()
        cpu0 = stack.pt.cpu_s()
        log(f"wrk c={a.lost_concurrency} for {a.lost_duration}s, unique bodies -> {stack.url}")
        w = run_wrk(stack.url, a.lost_concurrency, a.lost_duration, "lost")
        log(
            f"wrk: {w['requests']} requests completed, {w['errors']} errors ({w['error_detail']}), "
            f"{w['rps']:.0f} req/s, p50 {w['lat_p50_ms']:.2f} ms, p99 {w['lat_p99_ms']:.2f} ms"
        )
        s: dict[str, Any] | None = None
        if a.lost_stream_duration > 0:
            log(f"asyncio SSE streams c={a.lost_concurrency} for {a.lost_stream_duration:g}s (closed loop)")
            s = run_closed_stream(stack.url, stack.upstream, a.lost_concurrency, a.lost_stream_duration)
            log(
                f"streams: {s['requests']} sent, {s['ok']} ok, {s['errors']} errors {s.get('error_kinds')}, "
                f"{s['rps']:.0f} streams/s, bytes identical {s.get('bytes_identical')}/{s.get('verified')}"
            )
        cpu = stack.pt.cpu_s() - cpu0
        completed = int(w["ok"]) + (int(s["ok"]) if s else 0)
        res = finish_and_count(stack, a)
        res.update(wrk=w, streams=s, cpu_ms_per_req=cpu * 1000 / completed if completed else None)
        res["summary"] = loss_summary(completed, res)
        sm = res["summary"]
        log(
            f"requests completed {sm['completed']} (wrk {w['ok']}"
            + (f" + streams {s['ok']}" if s else "")
            + f"), reached upstream {sm['upstream_received']}, healthz recorded {sm['recorded']}, "
            f"captures stored {sm['distinct_requests']} distinct ({sm['rows']} rows), lost {sm['lost']}, "
            f"duplicates {sm['duplicate_rows_same_id'] + sm['duplicate_captures_same_request']}"
        )
        return res
    finally:
        stack.stop_all()
