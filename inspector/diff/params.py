"""The model-and-parameters segment: what the app chose (api, model, stream, each parameter)
and which model answered (``response_model``), as a table of JSON values side by side."""

from __future__ import annotations

from typing import Any, Literal

from prompttap.inspector.diff.model import ParamsDiff, ValueChange
from prompttap.inspector.diff.values import as_dict, show, to_json


def diff_params(a: dict[str, Any], b: dict[str, Any]) -> ParamsDiff:
    rows: list[ValueChange] = []

    def add(
        name: str,
        va: Any,
        vb: Any,
        present_a: bool,
        present_b: bool,
        side: Literal["request", "response"] = "request",
    ) -> None:
        if not present_a and not present_b:
            return
        ja = to_json(va) if present_a else None
        jb = to_json(vb) if present_b else None
        rows.append(ValueChange(name, ja, jb, ja != jb, side))

    for name in ("api", "model", "stream"):
        add(name, a.get(name), b.get(name), a.get(name) not in (None, ""), b.get(name) not in (None, ""))
    pa, pb = as_dict(a.get("params")), as_dict(b.get("params"))
    for key in [*pa, *(k for k in pb if k not in pa)]:
        add(key, pa.get(key), pb.get(key), key in pa, key in pb)
    ra, rb = a.get("response_model"), b.get("response_model")
    add("response_model", ra, rb, bool(ra), bool(rb), "response")

    changed = [r for r in rows if r.changed and r.side == "request"]
    parts = []
    model = next((r for r in changed if r.name == "model"), None)
    if model is not None:
        parts.append(f"Different model: {show(model.a)} → {show(model.b)}.")
    others = [r for r in changed if r.name != "model"]
    if others:
        parts.append("Parameters differ: " + ", ".join(_change_phrase(r) for r in others) + ".")
    if not parts:
        parts.append("Same model and parameters.")
    answered = next((r for r in rows if r.name == "response_model" and r.changed), None)
    if answered is not None:
        parts.append(f"Answered by {show(answered.a)} → {show(answered.b)}.")
    return ParamsDiff(not any(r.changed for r in rows), not changed, rows, " ".join(parts))


def _change_phrase(r: ValueChange) -> str:
    if len(r.a or "") <= 30 and len(r.b or "") <= 30:
        return f"{r.name} {show(r.a)} → {show(r.b)}"
    return r.name
