"""The harness phase's rows: added latency, TTFT, saturation, byte identity, errors, CPU and RSS vs the targets."""

from __future__ import annotations

import statistics
from typing import Any

from console import f
from report import MB500_MIB, Rows, verdict

LITELLM_REF_RPS = 202.0  # harness README, 2026-11-25 reference run (ns_c64, LiteLLM 1.82.6)


def harness_rows(h: dict[str, Any]) -> Rows:
    res = h["results"]
    med = res["medians"]
    names = [t["name"] for t in res["targets"]]
    pt = "prompttap"
    notes: list[str] = []
    rows: list[list[str]] = []

    def m(sc: str, tgt: str, key: str) -> float | None:
        v = med.get(sc, {}).get(tgt, {}).get(key)
        return v if isinstance(v, (int, float)) else None

    def added(sc: str, key: str) -> tuple[float | None, float | None, float | None]:
        p, d = m(sc, pt, key), m(sc, "direct", key)
        return (p - d if p is not None and d is not None else None), p, d

    for label, sc, key, lim in (
        ("added p50 latency, c=1 (ns_c1) vs direct", "ns_c1", "lat_p50_ms", 1.0),
        ("added p99 latency, c=1 (ns_c1) vs direct", "ns_c1", "lat_p99_ms", 3.0),
        ("TTFT overhead p50, 1 stream (stream_c1)", "stream_c1", "ttft_p50_ms", 1.0),
        ("TTFT overhead p50, 16 streams (stream_c16)", "stream_c16", "ttft_p50_ms", 2.0),
    ):
        dv, p, d = added(sc, key)
        if dv is None:
            rows.append([label, "not measured (scenario not run)", f"< {lim:g} ms", "SKIP"])
            continue
        extra = ""
        if key.startswith("ttft"):
            d99, _, _ = added(sc, "ttft_p99_ms")
            extra = f"; p99 {d99:+.2f} ms" if d99 is not None else ""
        ng = m(sc, "nginx", key)
        ref = f"; nginx {ng - d:+.2f}" if ng is not None and d is not None else ""
        am = m(sc, "aiohttp-min", key)
        ref += f", aiohttp-min {am - d:+.2f}" if am is not None and d is not None else ""
        rows.append([label, f"{dv:+.3f} ms ({p:.3f} vs {d:.3f}{extra}{ref})", f"< {lim:g} ms", verdict(dv < lim)])

    sat = next((s["id"] for s in res["scenarios"] if s["kind"] == "wrk" and s.get("concurrency", 1) > 1), None)
    prps = m(sat, pt, "rps") if sat else None
    lrps = m(sat, "litellm", "rps") if sat else None
    arps = m(sat, "aiohttp-min", "rps") if sat else None
    if prps is None:
        rows.append(["saturation req/s vs LiteLLM", "not measured (scenario not run)", "≥ 10x", "SKIP"])
        rows.append(["saturation req/s vs aiohttp-min", "not measured (scenario not run)", "≥ 40 %", "SKIP"])
    else:
        if lrps:
            rows.append(
                [
                    f"saturation req/s vs LiteLLM ({sat})",
                    f"{prps:.0f} vs {lrps:.0f} req/s = {prps / lrps:.1f}x",
                    "≥ 10x",
                    verdict(prps / lrps >= 10),
                ]
            )
        else:
            rows.append(
                [
                    f"saturation req/s vs LiteLLM ({sat})",
                    f"{prps:.0f} req/s; LiteLLM not run (reference run: {LITELLM_REF_RPS:.0f} req/s → "
                    f"{prps / LITELLM_REF_RPS:.1f}x)",
                    "≥ 10x",
                    "SKIP",
                ]
            )
        if arps:
            rows.append(
                [
                    f"saturation req/s vs aiohttp-min ({sat})",
                    f"{prps:.0f} vs {arps:.0f} req/s = {100 * prps / arps:.0f} %",
                    "≥ 40 %",
                    verdict(prps / arps >= 0.40),
                ]
            )
        else:
            rows.append([f"saturation req/s vs aiohttp-min ({sat})", "aiohttp-min not run", "≥ 40 %", "SKIP"])

    # byte identity: every streamed response in the measurements + the one-per-shape fidelity check
    ident = ver = 0
    for sc_runs in res["raw"].values():
        for r in sc_runs.get(pt, []):
            ident += r.get("bytes_identical") or 0
            ver += r.get("verified") or 0
    fid = res["fidelity"].get(pt, {})
    fb = [k for k, v in fid.items() if v.get("bytes_identical")]
    bad = {k: (v.get("status") if v.get("status") != 200 else "differs") for k, v in fid.items() if k not in fb}
    if ver or fid:
        pctv = 100.0 * ident / ver if ver else None
        val = (f"{pctv:.2f} % of {ver} streams" if ver else "no streams verified") + f"; shapes {len(fb)}/{len(fid)}"
        val += f" (not identical: {bad})" if bad else ""
        ok = (pctv is None or pctv == 100.0) and not bad
        rows.append(["bytes identical to upstream", val, "100 %", verdict(ok)])

    errs = [(sc, r.get("errors") or 0) for sc, sc_runs in res["raw"].items() for r in sc_runs.get(pt, [])]
    n_err = sum(e for _, e in errs)
    rows.append(
        [
            "errors in prompttap's measurements",
            f"{n_err}" + (f" ({', '.join(f'{s}: {e}' for s, e in errs if e)})" if n_err else ""),
            "0",
            verdict(n_err == 0),
        ]
    )

    cpu_parts = []
    for s in res["scenarios"]:
        v = m(s["id"], pt, "proxy_cpu_ms_per_req")
        if v is not None:
            am = m(s["id"], "aiohttp-min", "proxy_cpu_ms_per_req")
            cpu_parts.append(f"{s['id']} {v:.3f}" + (f" (aiohttp-min {am:.3f})" if am is not None else ""))
    if cpu_parts:
        rows.append(["proxy CPU ms/req (ms/stream for stream_*)", "; ".join(cpu_parts), "report vs floor", "INFO"])

    mem = res["memory"].get(pt, {})
    rss = [mem.get("start", {}).get("rss_mib"), mem.get("end", {}).get("rss_mib"), mem.get("peak_rss_mib")]
    if any(x is not None for x in rss):
        amem = res["memory"].get("aiohttp-min", {})
        peak = max(x for x in rss if x is not None)
        val = f"after warmup {f(rss[0], 1)} / after runs {f(rss[1], 1)} / peak {f(rss[2], 1)} MiB"
        if amem:
            val += f" (aiohttp-min {f(amem.get('end', {}).get('rss_mib'), 1)})"
        if mem.get("workdir_bytes"):
            val += f"; wrote {mem['workdir_bytes'] / 2**20:.1f} MiB to its home"
        rows.append(["RSS during the harness run", val, f"< 500 MB ({MB500_MIB:.0f} MiB)", verdict(peak < MB500_MIB)])
        if mem.get("idle_cpu_pct") is not None:
            rows.append(["idle CPU", f"{mem['idle_cpu_pct']:.2f} % of a core", "report", "INFO"])

    busy = [r.get("host_busy_pct") for sc_runs in res["raw"].values() for rs in sc_runs.values() for r in rs]
    busy = [b for b in busy if b is not None]
    meta = res["meta"]
    notes.append(
        f"Harness: {meta['rounds']} round(s) x {meta['duration_s']:g} s, targets {', '.join(names)}; "
        f"host CPU busy during measurements median {statistics.median(busy):.0f} % (max {max(busy):.0f} %)."
        if busy
        else f"Harness: {meta['rounds']} round(s) x {meta['duration_s']:g} s, targets {', '.join(names)}."
    )
    quiet = h.get("quiet")
    if quiet is not None:
        w = quiet["waits"]
        left = [x for x in w if x.get("left")]
        notes.append(
            f"Before each warmup and measurement the harness waited for prompttap to drain its captures "
            f"(bench/quiet_harness.py): {len(w)} waits, {sum(x['waited_s'] for x in w):.0f} s in all, "
            f"longest {max((x['waited_s'] for x in w), default=0):.1f} s"
            + (f"; {len(left)} ran out after {quiet['timeout_s']:.0f} s." if left else ".")
        )
    c1 = res["raw"].get("ns_c1", {})
    per_round = [
        (p.get("lat_p99_ms"), d.get("lat_p99_ms"))
        for p, d in zip(c1.get(pt, []), c1.get("direct", []), strict=False)  # both in round order
    ]
    if per_round and all(isinstance(x, (int, float)) for pair in per_round for x in pair):
        notes.append(
            "ns_c1 p99 by round, prompttap vs direct (ms): "
            + ", ".join(f"{p:.2f} vs {d:.2f} ({p - d:+.2f})" for p, d in per_round)
            + "."
        )
    if meta.get("concurrent_benchmarks"):
        notes.append(
            "WARNING: other benchmarks ran during the harness run: " + "; ".join(meta["concurrent_benchmarks"])
        )
    if meta["rounds"] < 3:
        notes.append("Fewer than 3 rounds: a smoke test, not a measurement (p99 at c=1 especially is noise).")
    lg = h.get("prompttap_log", {}).get("counts", {})
    if any(lg.values()):
        rows.append(
            [
                "harness: prompttap log",
                ", ".join(f"{k} {v}" for k, v in lg.items() if v),
                "clean",
                verdict(False),
            ]
        )
    return rows, notes
