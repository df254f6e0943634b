"""Phase ``soak``: N requests through a fresh prompttap at c=64 in wrk chunks, its RSS sampled throughout.

RSS is reported at start, after warmup, at 25/50/75/100 % of N and at its max (target < 500 MB and
flat), followed by the same loss accounting as the ``lost`` phase.
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

from console import T0, f, log
from load import run_wrk
from loss import finish_and_count, loss_summary
from paths import RunDirs
from stack import Stack


class Sampler(threading.Thread):
    def __init__(self, stack: Stack, interval: float) -> None:
        super().__init__(daemon=True)
        self.stack, self.interval = stack, interval
        self.samples: list[dict[str, Any]] = []
        self.halt = threading.Event()

    def sample(self) -> dict[str, Any]:
        s: dict[str, Any] = {"t": time.monotonic() - T0, "rss_mib": self.stack.pt.rss_mib()}
        split = self.stack.pt.rss_split_mib()
        if split:
            s["anon_mib"], s["file_mib"] = split["anon"], split["file"]
        try:
            _, h = self.stack.health(timeout=5)
            s["recorded"] = h.get("recorded")
            s["pending"] = h.get("sinks", {}).get("clickhouse", {}).get("pending")
        except Exception:
            pass
        self.samples.append(s)
        return s

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            self.sample()


def run(a: argparse.Namespace, dirs: RunDirs) -> dict[str, Any]:
    n = a.soak
    stack = Stack("soak", dirs.logs, dirs.work / "soak-home")
    try:
        stack.start()
        time.sleep(1)
        rss_idle = stack.pt.rss_mib()
        split_idle = stack.pt.rss_split_mib() or {}
        log(
            f"RSS at start (idle, no request yet): {rss_idle:.1f} MiB "
            f"(anon {split_idle.get('anon', 0):.1f}, file-backed {split_idle.get('file', 0):.1f})"
        )
        log("warmup: wrk c=8 for 3s")
        warm = run_wrk(stack.url, 8, 3, "warmup")
        time.sleep(2)
        rss_warm = stack.pt.rss_mib()
        split_warm = stack.pt.rss_split_mib() or {}
        base = int((stack.health()[1] or {}).get("recorded") or 0)  # captures so far (the warmup's)
        log(f"RSS after warmup ({warm['ok']} requests): {rss_warm:.1f} MiB")
        sampler = Sampler(stack, a.sample_interval)
        sampler.start()
        done, marks, chunks = 0, [], []
        rate = None
        cpu0 = stack.pt.cpu_s()
        t_start = time.monotonic()
        try:
            while done < n:
                left = a.soak_max_seconds - (time.monotonic() - t_start)
                if left < 2:
                    log(f"--soak-max-seconds {a.soak_max_seconds:.0f} reached at {done}/{n} requests")
                    break
                # chunks of at most ~1/8 of N so the 25/50/75/100 % marks land near their targets
                want = (n - done) if rate is None else min(n - done, max(n / 8, 1))
                d = 5 if rate is None else int(min(30, max(2, round(want / rate))))
                d = int(min(d, left))
                w = run_wrk(stack.url, a.soak_concurrency, d, f"soak{len(chunks)}")
                done += int(w["ok"])
                rate = max(1.0, w["rps"] or 1.0)
                s = sampler.sample()
                chunks.append({"done": done, "rps": w["rps"], "errors": w["errors"], "rss_mib": s["rss_mib"]})
                marks.append((done, s["rss_mib"], s.get("anon_mib")))
                log(
                    f"{done}/{n} requests ({100 * done / n:.0f}%), {w['rps']:.0f} req/s, errors {w['errors']}, "
                    f"RSS {s['rss_mib']:.1f} MiB (anon {f(s.get('anon_mib'), 1)}), pending {s.get('pending')}"
                )
        finally:
            sampler.halt.set()
            sampler.join(5)
        load_s = time.monotonic() - t_start
        cpu = stack.pt.cpu_s() - cpu0
        # progress points: every chunk end (wrk's count) and every sample (healthz recorded - warmup)
        points = sorted(
            marks
            + [
                (x["recorded"] - base, x["rss_mib"], x.get("anon_mib"))
                for x in sampler.samples
                if x.get("recorded") and x["rss_mib"]
            ]
        )
        rss_at = {}
        for pct in (25, 50, 75, 100):
            hit = next((m for m in points if m[0] >= n * pct / 100), None)
            rss_at[pct] = {"requests": hit[0], "rss_mib": hit[1], "anon_mib": hit[2]} if hit else None
        rss_all = [x["rss_mib"] for x in sampler.samples if x.get("rss_mib")] + [m[1] for m in marks if m[1]]
        pend = [x["pending"] for x in sampler.samples if x.get("pending") is not None]
        res = finish_and_count(stack, a)
        res.update(
            requests=done,
            target_requests=n,
            load_seconds=load_s,
            rss_after_warmup_mib=rss_warm,
            split_at_start_mib=split_idle,
            split_after_warmup_mib=split_warm,
            rss_at=rss_at,
            rss_max_mib=max(rss_all) if rss_all else None,
            pending_max=max(pend) if pend else None,
            cpu_ms_per_req=cpu * 1000 / done if done else None,
            chunks=chunks,
            samples=sampler.samples,
        )
        res["rss_at_start_mib"] = rss_idle
        res["summary"] = loss_summary(done + int(warm["ok"]), res)  # the store also holds the warmup's
        log(
            f"RSS at start {rss_idle:.1f} MiB, after warmup {rss_warm:.1f} MiB; "
            + ", ".join(f"{p}%: {v['rss_mib']:.1f}" if v else f"{p}%: -" for p, v in rss_at.items())
            + f" MiB; max {res['rss_max_mib']:.1f} MiB; after drain {res['rss_after_drain_mib'] or 0:.1f} MiB"
        )
        return res
    finally:
        stack.stop_all()
