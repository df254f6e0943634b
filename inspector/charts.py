"""Server-rendered SVG charts: geometry only (numbers and labels); ``_charts.html`` draws it.

No client-side charting library: a chart is a dict of rectangles, polylines and axis ticks
computed here, rendered as inline SVG by Jinja (labels autoescaped like everything else).
"""

from __future__ import annotations

from typing import Any

WIDTH, HEIGHT = 640, 180
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 56, 12, 10, 28


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** len(str(int(value))) / 10 if value >= 1 else 1.0
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return value


def _fmt(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}" if value >= 1 else f"{value:.2g}"


def _frame(y_max: float, x_labels: list[tuple[float, str]], unit: str) -> dict[str, Any]:
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    ticks = [{"y": round(PAD_TOP + plot_h - plot_h * f, 1), "label": _fmt(y_max * f) + unit} for f in (0, 0.5, 1)]
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "left": PAD_LEFT,
        "right": WIDTH - PAD_RIGHT,
        "top": PAD_TOP,
        "bottom": HEIGHT - PAD_BOTTOM,
        "y_ticks": ticks,
        "x_ticks": [{"x": round(x, 1), "label": label} for x, label in x_labels],
    }


def _x_labels(times: list[str], xs: list[float]) -> list[tuple[float, str]]:
    if not times:
        return []
    picks = sorted({0, len(times) // 2, len(times) - 1})
    return [(xs[i], times[i][5:16].replace("T", " ")) for i in picks]


def time_bars(points: list[dict[str, Any]], stacked: tuple[str, str], classes: tuple[str, str]) -> dict[str, Any]:
    """Bars per time bucket: ``stacked[0]`` total with ``stacked[1]`` (a part of it) drawn over it."""
    total_key, part_key = stacked
    y_max = _nice_max(max((p[total_key] for p in points), default=0))
    plot_w, plot_h = WIDTH - PAD_LEFT - PAD_RIGHT, HEIGHT - PAD_TOP - PAD_BOTTOM
    slot = plot_w / max(len(points), 1)
    bars, xs = [], []
    for i, p in enumerate(points):
        x = PAD_LEFT + i * slot
        xs.append(x + slot / 2)
        for key, cls in ((total_key, classes[0]), (part_key, classes[1])):
            h = plot_h * p[key] / y_max
            if h <= 0:
                continue
            bars.append(
                {
                    "x": round(x + slot * 0.1, 1),
                    "y": round(PAD_TOP + plot_h - h, 1),
                    "w": round(max(slot * 0.8, 1), 1),
                    "h": round(h, 1),
                    "cls": cls,
                    "title": f"{p['t']}: {p[key]} {key}",
                }
            )
    return {**_frame(y_max, _x_labels([p["t"] for p in points], xs), ""), "bars": bars, "lines": []}


def time_lines(points: list[dict[str, Any]], series: list[tuple[str, str, str]], unit: str) -> dict[str, Any]:
    """Lines over time; ``series`` is (label, path "a.b" into each point, css class)."""

    def value(p: dict[str, Any], path: str) -> float | None:
        cur: Any = p
        for key in path.split("."):
            cur = cur.get(key) if isinstance(cur, dict) else None
        return float(cur) if isinstance(cur, int | float) else None

    values = [v for p in points for _, path, _ in series if (v := value(p, path)) is not None]
    y_max = _nice_max(max(values, default=0))
    plot_w, plot_h = WIDTH - PAD_LEFT - PAD_RIGHT, HEIGHT - PAD_TOP - PAD_BOTTOM
    step = plot_w / max(len(points) - 1, 1)
    xs = [PAD_LEFT + i * step if len(points) > 1 else PAD_LEFT + plot_w / 2 for i in range(len(points))]
    lines = []
    for label, path, cls in series:
        pts, dots = [], []
        for x, p in zip(xs, points, strict=True):
            v = value(p, path)
            if v is None:
                continue
            y = PAD_TOP + plot_h - plot_h * v / y_max
            pts.append(f"{x:.1f},{y:.1f}")
            dots.append({"x": round(x, 1), "y": round(y, 1), "title": f"{p['t']}: {label} {v:g}{unit}"})
        lines.append({"label": label, "cls": cls, "points": " ".join(pts), "dots": dots})
    return {**_frame(y_max, _x_labels([p["t"] for p in points], xs), unit), "bars": [], "lines": lines}


def hbars(rows: list[dict[str, Any]], key: str, unit: str = "", digits: int = 0) -> dict[str, Any]:
    """Horizontal bars, one per row (``name`` and ``key``)."""
    width, label_w, bar_h, gap = WIDTH, 180, 16, 6
    v_max = max((float(r[key]) for r in rows), default=0.0) or 1.0
    bars = []
    for i, r in enumerate(rows):
        v = float(r[key])
        w = (width - label_w - 90) * v / v_max
        bars.append(
            {
                "y": i * (bar_h + gap),
                "label_x": label_w - 6,
                "x": label_w,
                "w": round(max(w, 0.5 if v else 0), 1),
                "h": bar_h,
                "name": r["name"] or "(none)",
                "value": f"{v:,.{digits}f}{unit}",
                "value_x": round(label_w + max(w, 0) + 6, 1),
            }
        )
    return {"width": width, "height": max(len(rows) * (bar_h + gap), bar_h), "bars": bars}


def stream_timeline(timing: list[dict[str, Any]], duration_ms: float, ttft_ms: float | None) -> dict[str, Any] | None:
    """One tick per stream chunk along the request's duration (height by chunk size)."""
    if not timing:
        return None
    width, height, pad = 300, 48, 4
    end = max(float(duration_ms or 0), max(float(t["offset_ms"]) for t in timing), 1.0)
    size_max = max(int(t["size"]) for t in timing) or 1
    ticks = []
    for t in timing:
        x = pad + (width - 2 * pad) * float(t["offset_ms"]) / end
        h = max(3.0, (height - 2 * pad - 10) * int(t["size"]) / size_max)
        ticks.append(
            {
                "x": round(x, 1),
                "y": round(height - pad - 10 - h, 1),
                "h": round(h, 1),
                "title": f"+{float(t['offset_ms']):.0f} ms, {int(t['size'])} bytes",
            }
        )
    ttft_x = round(pad + (width - 2 * pad) * float(ttft_ms) / end, 1) if ttft_ms is not None else None
    return {
        "width": width,
        "height": height,
        "ticks": ticks,
        "ttft_x": ttft_x,
        "end_label": f"{end:.0f} ms",
        "axis_y": height - pad - 8,
    }
