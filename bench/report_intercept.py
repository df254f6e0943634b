"""The intercept phase's rows: what HTTPS interception adds over direct TLS, byte identity and errors.

Issue 14 and the README set no speed target for the intercepted path, so the latency, TTFT,
saturation and new-connection rows are INFO; bytes identical (100 %) and errors (0) keep the
benchmark's targets.
"""

from __future__ import annotations

import statistics
from typing import Any

from console import f
from report import Rows, verdict

NO_TARGET = "none set"


def intercept_rows(r: dict[str, Any]) -> Rows:
    med: dict[str, dict[str, dict[str, Any]]] = r["medians"]
    ids = [sc["id"] for sc in r["scenarios"]]
    sat = next(i for i in ids if i.startswith("sat_"))
    rows: list[list[str]] = []

    def m(sc: str, target: str, key: str) -> float | None:
        return med.get(sc, {}).get(target, {}).get(key)

    def vs_direct(sc: str, key: str) -> str:
        """proxy minus direct (the two values), and routed minus direct when measured."""
        p, d, rt = m(sc, "proxy", key), m(sc, "direct", key), m(sc, "routed", key)
        if p is None or d is None:
            return "not measured"
        return f"{p - d:+.3f} ms ({p:.3f} vs {d:.3f}" + (f"; routed {rt - d:+.3f}" if rt is not None else "") + ")"

    rows.append(
        ["intercept: added p50 latency, c=1 kept-alive (ka_c1) vs direct TLS", vs_direct("ka_c1", "lat_p50_ms")]
    )
    rows.append(
        ["intercept: added p99 latency, c=1 kept-alive (ka_c1) vs direct TLS", vs_direct("ka_c1", "lat_p99_ms")]
    )
    rows.append(["intercept: TTFT overhead p50, 1 stream (stream_c1)", vs_direct("stream_c1", "ttft_p50_ms")])
    rows.append(["intercept: TTFT overhead p99, 1 stream (stream_c1)", vs_direct("stream_c1", "ttft_p99_ms")])

    p, d, rt = m(sat, "proxy", "rps"), m(sat, "direct", "rps"), m(sat, "routed", "rps")
    pc, dc = m(sat, "proxy", "client_cpu_pct"), m(sat, "direct", "client_cpu_pct")
    rows.append(
        [
            f"intercept: saturation req/s ({sat}) vs direct TLS",
            (
                f"{p:.0f} vs {d:.0f} req/s = {100 * p / d:.0f} %"
                + (f"; routed {rt:.0f}" if rt is not None else "")
                + f"; client CPU {f(pc, 0)} % / {f(dc, 0)} % of a core"
            )
            if p is not None and d
            else "not measured",
        ]
    )

    pf, df = m("fresh_c1", "proxy", "lat_p50_ms"), m("fresh_c1", "direct", "lat_p50_ms")
    pk, dk = m("ka_c1", "proxy", "lat_p50_ms"), m("ka_c1", "direct", "lat_p50_ms")
    val = "not measured"
    if pf is not None and df is not None:
        val = (
            f"p50 {pf:.3f} ms through the proxy vs {df:.3f} ms direct: {pf - df:+.3f} ms "
            f"(p99 {f(m('fresh_c1', 'proxy', 'lat_p99_ms'), 3)} vs {f(m('fresh_c1', 'direct', 'lat_p99_ms'), 3)})"
        )
        if pk is not None and dk is not None:
            val += (
                f"; vs a kept-alive connection (ka_c1): {pf - pk:+.3f} ms through the proxy, {df - dk:+.3f} ms direct"
            )
    rows.append(["intercept: new connection (CONNECT + TLS handshake) to first response (fresh_c1)", val])

    cpu = [
        f"{sc} {f(m(sc, 'proxy', 'prompttap_cpu_ms_per_req'), 3)}"
        + (f" (routed {f(m(sc, 'routed', 'prompttap_cpu_ms_per_req'), 3)})" if m(sc, "routed", "rps") else "")
        for sc in ids
    ]
    rows.append(["intercept: prompttap CPU ms/req through the proxy (ms/stream for stream_c1)", "; ".join(cpu)])
    rows = [[*row, NO_TARGET, "INFO"] for row in rows]

    same = r["same"]
    same_ok = [k for k, v in same.items() if v["identical"]]
    runs = [run for by_t in r["raw"].values() for t, rs in by_t.items() if t != "direct" for run in rs]
    ver, ident = sum(x["verified"] for x in runs), sum(x["bytes_identical"] for x in runs)
    bad_same = [k for k in same if k not in same_ok]
    rows.append(
        [
            "intercept: bytes identical (through the proxy vs direct; load vs upstream)",
            f"API shapes {len(same_ok)}/{len(same)}"
            + (f" (differ: {', '.join(bad_same)})" if bad_same else "")
            + f"; load {ident}/{ver} responses through prompttap",
            "100 %",
            verdict(not bad_same and ident == ver > 0),
        ]
    )

    errors = {f"{sc} {t}": m(sc, t, "errors") for sc, by_t in med.items() for t in by_t}  # warmups included
    errors = {k: n for k, n in errors.items() if n}
    h = r.get("intercept_health") or {}
    failed = sum((h.get("handshake_failures") or {}).values())
    rows.append(
        [
            "intercept: errors (client; TLS handshakes prompttap saw fail)",
            f"{sum(errors.values())}" + (f" ({errors})" if errors else "") + f"; handshake failures {failed}",
            "0",
            verdict(not errors and failed == 0),
        ]
    )
    lg = r.get("log", {}).get("counts", {})
    if any(lg.values()) or r.get("exit_code"):
        val = ", ".join(f"{k} {v}" for k, v in lg.items() if v) or "clean"
        rows.append(
            [
                "intercept: prompttap log, exit on SIGTERM",
                f"{val}; exit {r.get('exit_code')}",
                "clean, 0",
                verdict(False),
            ]
        )
    return rows, notes(r, sat, dc, d)


def notes(r: dict[str, Any], sat: str, client_pct: float | None, direct_rps: float | None) -> list[str]:
    busy = [run["host_busy_pct"] for by_t in r["raw"].values() for rs in by_t.values() for run in rs]
    busy = [b for b in busy if b is not None]
    out = [
        f"Intercept: {r['rounds']} round(s) x {r['duration_s']:g} s per load, targets {', '.join(r['targets'])} "
        "(direct = TLS to the mock; proxy = CONNECT to api.openai.com through prompttap's forward proxy, trusting "
        "only prompttap's CA; routed = plain HTTP to prompttap's proxy port, to the same TLS mock), one client "
        "(bench/tls_load.py) for all"
        + (f"; host CPU busy median {statistics.median(busy):.0f} % (max {max(busy):.0f} %)." if busy else "."),
        "Issue 14 and the README set no speed target for the intercepted path: its latency, TTFT, saturation and "
        "new-connection rows are reported without PASS/FAIL (the base-URL proxy's targets, for comparison: added "
        "p50 < 1 ms and p99 < 3 ms at c=1, TTFT < 1 ms).",
    ]
    if direct_rps is not None and client_pct is not None:
        out.append(
            f"The client's ceiling: one Python process, which reached {direct_rps:.0f} req/s direct over TLS at "
            f"{sat} using {client_pct:.0f} % of a core; a target close to that number is limited by the client (and "
            "the 2 shared cores), not measured."
        )
    if r["rounds"] < 3:
        out.append("Intercept: fewer than 3 rounds, a smoke test, not a measurement.")
    return out
