"""The loss check's and the soak's rows: captures lost, duplicates, the drain, RSS and its growth."""

from __future__ import annotations

from typing import Any

from console import f
from report import MB500_MIB, Rows, verdict


def lost_rows(r: dict[str, Any]) -> Rows:
    w = r["wrk"]
    s = r.get("streams")
    note = (
        f"Loss check: wrk c={w['concurrency']} {w['duration_s']:.0f} s → {w['ok']} requests "
        f"({w['rps']:.0f} req/s, p50 {w['lat_p50_ms']:.2f} ms, p99 {w['lat_p99_ms']:.2f} ms, errors "
        f"{w['errors']})"
        + (f"; SSE c={s['concurrency']} → {s['ok']} streams ({s['rps']:.0f}/s, errors {s['errors']})" if s else "")
        + f"; prompttap {f(r.get('cpu_ms_per_req'), 3)} CPU ms/req."
    )
    return loss_rows("loss check at c=64", r), [note]


def loss_rows(name: str, r: dict[str, Any]) -> list[list[str]]:
    s = r["summary"]
    dup = s["duplicate_rows_same_id"] + s["duplicate_captures_same_request"]
    drained = r.get("drain_seconds")
    val = (
        f"completed {s['completed']}, reached upstream {s['upstream_received']}, recorded {s['recorded']}, "
        f"stored {s['distinct_requests']} distinct ({s['rows']} rows); lost {s['lost']}"
    )
    if s["unaccounted_vs_upstream"]:
        val += f"; {s['unaccounted_vs_upstream']:+d} vs upstream"
    rows = [[f"{name}: captures lost", val, "0", verdict(s["lost"] == 0 and s["unaccounted_vs_upstream"] <= 0)]]
    rows.append(
        [
            f"{name}: duplicate captures",
            f"{dup} (same id {s['duplicate_rows_same_id']}, same request twice {s['duplicate_captures_same_request']})",
            "0",
            verdict(dup == 0),
        ]
    )
    rows.append(
        [
            f"{name}: drained to ClickHouse",
            (f"pending 0 after {drained:.1f} s" if drained is not None else "pending never reached 0")
            + f"; dropped {s['dropped']}, rejected {s['rejected']}, failed exports {s['failed_exports']}; "
            f"SIGTERM → exit {r.get('exit_code')} in {f(r.get('stop_seconds'), 1)} s",
            "pending 0, exit 0",
            verdict(drained is not None and r.get("exit_code") == 0 and not s["dropped"] and not s["rejected"]),
        ]
    )
    lg = r.get("log", {}).get("counts", {})
    if any(lg.values()):
        rows.append(
            [f"{name}: prompttap log", ", ".join(f"{k} {v}" for k, v in lg.items() if v), "clean", verdict(False)]
        )
    return rows


def soak_rows(r: dict[str, Any]) -> Rows:
    at = r["rss_at"]
    vals = ", ".join(
        (f"{p}% {v['rss_mib']:.1f}" + (f" (anon {v['anon_mib']:.1f})" if v.get("anon_mib") else "")) if v else f"{p}% -"
        for p, v in at.items()
    )
    rmax = r.get("rss_max_mib")
    si = r.get("split_at_start_mib") or {}
    start = f"at start (idle) {f(r.get('rss_at_start_mib'), 1)}"
    if si:
        start += f" (anon {si['anon']:.1f}, file-backed {si['file']:.1f})"
    rows = [
        [
            f"soak {r['requests']} req: RSS (MiB)",
            f"{start}; after warmup {r['rss_after_warmup_mib']:.1f}; {vals}; max {f(rmax, 1)}; "
            f"after drain {f(r.get('rss_after_drain_mib'), 1)}",
            f"< 500 MB ({MB500_MIB:.0f} MiB)",
            verdict(rmax is not None and rmax < MB500_MIB),
        ]
    ]
    a25, a100 = at.get(25), at.get(100)
    if a25 and a100 and a100["requests"] > a25["requests"]:
        growth = a100["rss_mib"] - a25["rss_mib"]
        per100k = growth * 100000 / (a100["requests"] - a25["requests"])
        val = f"RSS {growth:+.1f} MiB ({100 * growth / a25['rss_mib']:+.1f} %, {per100k:+.1f} MiB per 100k req)"
        if a25.get("anon_mib") and a100.get("anon_mib"):
            val += f"; anon {a100['anon_mib'] - a25['anon_mib']:+.1f} MiB"
        rows.append(["soak: RSS flat (25 % → 100 %)", val, "growth ≤ 10 %", verdict(growth <= 0.10 * a25["rss_mib"])])
    else:
        rows.append(
            ["soak: RSS flat (25 % → 100 %)", f"only {r['requests']} of {r['target_requests']} run", "", "SKIP"]
        )
    rates = [c["rps"] for c in r["chunks"] if c.get("rps")]
    rows.append(
        [
            "soak: throughput, CPU",
            f"{r['requests'] / r['load_seconds']:.0f} req/s over {r['load_seconds']:.0f} s"
            + (f" (chunks {min(rates):.0f}-{max(rates):.0f})" if rates else "")
            + f"; {f(r.get('cpu_ms_per_req'), 3)} CPU ms/req; max pending {r.get('pending_max')}",
            "report",
            "INFO",
        ]
    )
    rows += loss_rows("soak", r)
    return rows, []
