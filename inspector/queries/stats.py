"""The stats page's read: requests, errors, latency and TTFT over time, tokens and cost by model,
route and outcome, in one scan."""

from __future__ import annotations

from typing import Any

from prompttap.inspector.queries.filters import FINAL_SETTINGS, CaptureFilter, parse_time
from prompttap.inspector.queries.rows import decoded_rows

_BUCKETS = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400)


def stats(client: Any, flt: CaptureFilter, max_buckets: int = 60) -> dict[str, Any]:
    """Requests, errors, latency/TTFT percentiles over time; tokens and cost by model and route."""
    where, params = flt.where()
    span_sql = (
        "SELECT count() AS requests, min(started_at) AS first, max(started_at) AS last "
        f"FROM captures FINAL{where} {FINAL_SETTINGS}"
    )
    span_row = decoded_rows(client.query(span_sql, parameters=params))[0]
    if not span_row["requests"]:
        empty = {"p50": None, "p95": None}
        return {
            **{"requests": 0, "errors": 0, "error_rate": 0.0, "latency_ms": empty, "ttft_ms": empty},
            **{"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "first": None, "last": None},
            **{"bucket_seconds": 0, "over_time": [], "by_model": [], "by_route": [], "by_outcome": []},
        }
    span = (parse_time(span_row["last"]) - parse_time(span_row["first"])).total_seconds()
    bucket = next((b for b in _BUCKETS if span / b <= max_buckets), _BUCKETS[-1])
    # Totals, the series and the three breakdowns in one scan (GROUPING SETS), not five scans in a row:
    # at a million captures each scan costs ~60 ms and the embedded store runs them one at a time.
    error = "outcome != 'ok'"
    sql = (
        "SELECT grouping(t, model, route, outcome) AS grouping_set, "
        "toStartOfInterval(started_at, toIntervalSecond({bucket:UInt32})) AS t, model, route, outcome, "
        f"count() AS requests, countIf({error}) AS errors, quantilesExact(0.5, 0.95)(duration_ms) AS latency, "
        "quantilesExactIf(0.5, 0.95)(assumeNotNull(ttft_ms), ttft_ms IS NOT NULL) AS ttft, "
        "countIf(ttft_ms IS NOT NULL) AS with_ttft, sum(ifNull(input_tokens, 0)) AS input_tokens, "
        "sum(ifNull(output_tokens, 0)) AS output_tokens, sum(ifNull(cost_usd, 0)) AS cost_usd "
        f"FROM captures FINAL{where} GROUP BY GROUPING SETS ((), (t), (model), (route), (outcome)) "
        f"{FINAL_SETTINGS}, force_grouping_standard_compatibility = 1"
    )
    sets: dict[int, list[dict[str, Any]]] = {}
    for row in decoded_rows(client.query(sql, parameters={**params, "bucket": bucket})):
        sets.setdefault(int(row["grouping_set"]), []).append(row)
    # grouping() has a 1 bit for each key a set does not group by, first argument highest: () = 1111.
    totals = sets[0b1111][0]
    out: dict[str, Any] = {
        "requests": int(totals["requests"]),
        "errors": int(totals["errors"]),
        "error_rate": totals["errors"] / totals["requests"],
        "latency_ms": _quantiles(totals["latency"], totals["requests"]),
        "ttft_ms": _quantiles(totals["ttft"], totals["requests"]),
        "input_tokens": int(totals["input_tokens"]),
        "output_tokens": int(totals["output_tokens"]),
        "cost_usd": float(totals["cost_usd"]),
        "first": span_row["first"],
        "last": span_row["last"],
        "bucket_seconds": bucket,
        "over_time": [
            {
                "t": row["t"],
                "requests": int(row["requests"]),
                "errors": int(row["errors"]),
                "latency_ms": _quantiles(row["latency"], row["requests"]),
                "ttft_ms": _quantiles(row["ttft"], row["with_ttft"]),
            }
            for row in sorted(sets.get(0b0111, []), key=lambda r: r["t"])
        ],
    }
    for key, column, mask in (
        ("by_model", "model", 0b1011),
        ("by_route", "route", 0b1101),
        ("by_outcome", "outcome", 0b1110),
    ):
        ranked = sorted(sets.get(mask, []), key=lambda r, c=column: (-int(r["requests"]), r[c]))[:50]
        out[key] = [
            {
                "name": r[column],
                "requests": int(r["requests"]),
                "errors": int(r["errors"]),
                "input_tokens": int(r["input_tokens"]),
                "output_tokens": int(r["output_tokens"]),
                "cost_usd": float(r["cost_usd"]),
                "latency_ms": _quantiles(r["latency"], r["requests"]),
            }
            for r in ranked
        ]
    return out


def _quantiles(values: list[float], n: int) -> dict[str, float | None]:
    if not n or not values:
        return {"p50": None, "p95": None}
    return {"p50": float(values[0]), "p95": float(values[1])}
