"""The model-and-parameters segment: what the app chose (api, model, stream, each parameter)
and which model answered (``response_model``), as a table of JSON values side by side.

Gateways route and fall back (app → LiteLLM → OpenRouter → provider): the app may ask for one
model and get its answer from another. ``answer_swap`` tells that apart from the app asking for
a different model, and the sentence names the side the upstream answered with another model.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from prompttap.inspector.diff.model import ParamsDiff, ParamsStatus, ValueChange
from prompttap.inspector.diff.values import as_dict, show, to_json


class AnswerSwap(NamedTuple):
    """The same model was requested on both sides ("" when neither names one), and the answers
    name two different models."""

    requested: str
    a: str
    b: str

    def detail(self) -> str:
        """Which side got which model, for the headline."""
        if self.requested and self.a == self.requested:
            return f"{self.b} instead of {self.requested}"
        if self.requested and self.b == self.requested:
            return f"{self.a} instead of {self.requested}"
        both = f"{self.a} in A, {self.b} in B"
        return f"{both}; {self.requested} requested" if self.requested else both

    def sentence(self, lead: str) -> str:
        if self.requested and self.a == self.requested:
            which = f"B with a different model than requested: {self.b} instead of {self.requested}"
        elif self.requested and self.b == self.requested:
            which = f"A with a different model than requested: {self.a} instead of {self.requested}"
        elif self.requested:
            which = f"with different models than requested: {self.a} in A, {self.b} in B"
        else:
            which = f"with different models: {self.a} in A, {self.b} in B"
        return f"{lead} answered {which}."


def answer_swap(params: ParamsDiff) -> AnswerSwap | None:
    """The upstream answered the same requested model with different models on the two sides."""
    rows = {r.name: r for r in params.rows}
    requested, answered = rows.get("model"), rows.get("response_model")
    if answered is None or answered.a is None or answered.b is None or not answered.changed:
        return None
    if requested is not None and requested.changed:
        return None  # the app asked for another model: its answer coming from another is no surprise
    return AnswerSwap(show(requested.a) if requested else "", show(answered.a), show(answered.b))


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
    answered = next((r for r in rows if r.name == "response_model" and r.changed), None)
    status: ParamsStatus = "changed" if changed else "answer_model_changed" if answered else "identical"
    diff = ParamsDiff(status, not any(r.changed for r in rows), not changed, rows, "")

    parts = []
    model = next((r for r in changed if r.name == "model"), None)
    if model is not None:
        parts.append(f"Different model: {show(model.a)} → {show(model.b)}.")
    others = [r for r in changed if r.name != "model"]
    if others:
        parts.append("Parameters differ: " + ", ".join(_change_phrase(r) for r in others) + ".")
    swap = answer_swap(diff)
    if swap is not None and not parts:
        requested = f" ({swap.requested})" if swap.requested else ""
        parts.append(swap.sentence(f"Same model and parameters requested{requested}, but the upstream"))
    elif swap is not None:
        parts.append(swap.sentence("The upstream"))
    else:
        if not parts:
            parts.append("Same model and parameters.")
        if answered is not None:
            parts.append(f"Answered by {show(answered.a)} → {show(answered.b)}.")
    diff.summary = " ".join(parts)
    return diff


def _change_phrase(r: ValueChange) -> str:
    if len(r.a or "") <= 30 and len(r.b or "") <= 30:
        return f"{r.name} {show(r.a)} → {show(r.b)}"
    return r.name
