"""Prometheus text exposition of the recorder's health (``/metrics``).

Label values come from a closed set (sink names, drop reasons): never error text, which would
make a new series for every message and could carry whatever a remote endpoint answered. The
errors themselves are on ``/readyz``.
"""

from __future__ import annotations

from typing import Any


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(health: dict[str, Any]) -> str:
    """Metrics in Prometheus text format 0.0.4 from ``App.health()``."""
    out: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        out.append(f"# HELP prompttap_{name} {help_text}")
        out.append(f"# TYPE prompttap_{name} {kind}")
        for labels, value in samples:
            label = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
            f = float(value)
            number = str(int(f)) if f.is_integer() else repr(f)
            out.append(f"prompttap_{name}{{{label}}} {number}" if label else f"prompttap_{name} {number}")

    spool = health.get("spool", {})
    sinks: dict[str, dict[str, Any]] = health.get("sinks", {})
    metric(
        "up",
        "gauge",
        "1 when recording is healthy: no drop, no failing sink, no give-up or refusal lately (/readyz)",
        [({}, health["status"] == "ok")],
    )
    metric("captures_recorded_total", "counter", "captures appended to the spool", [({}, health["recorded"])])
    metric(
        "captures_dropped_total",
        "counter",
        "captures that could not be spooled, by reason",
        [({"reason": r}, n) for r, n in sorted(health.get("dropped", {}).items())] or [({"reason": "disk_full"}, 0)],
    )
    metric("inflight_exchanges", "gauge", "exchanges being proxied now", [({}, health.get("inflight", 0))])
    metric(
        "recording_catching_up",
        "gauge",
        "1 while recording is far behind and competes with the traffic for the CPU",
        [({}, bool(health.get("catching_up")))],
    )
    metric("spool_bytes", "gauge", "bytes in spool segments", [({}, spool.get("bytes", 0))])
    metric("spool_segments", "gauge", "spool segment files", [({}, spool.get("segments", 0))])
    metric(
        "spool_corrupt_records_total",
        "counter",
        "spool records skipped as corrupt",
        [({}, spool.get("corrupt_records", 0))],
    )
    metric(
        "rejected_records",
        "gauge",
        "records set aside in rejected/ (`prompttap rejected list`, `retry`)",
        [({}, health.get("rejected", {}).get("count", 0))],
    )
    for key, name, kind, text in (
        ("pending", "sink_queue_depth", "gauge", "captures spooled but not yet exported"),
        ("pending_bytes", "sink_queue_bytes", "gauge", "spooled bytes not yet exported"),
        ("exported", "sink_exported_total", "counter", "captures exported"),
        ("failed_exports", "sink_failed_exports_total", "counter", "export attempts that failed (retried)"),
        ("rejected", "sink_rejected_total", "counter", "captures the sink refused as malformed (set aside)"),
        ("given_up", "sink_given_up_total", "counter", "captures never sent: given up to keep room for the store"),
        ("healthy", "sink_healthy", "gauge", "1 when the last export succeeded"),
        ("misconfigured", "sink_misconfigured", "gauge", "1 while the sink refuses prompttap's credentials"),
    ):
        metric(name, kind, text, [({"sink": s}, float(v[key])) for s, v in sorted(sinks.items())])
    return "\n".join(out) + "\n"
