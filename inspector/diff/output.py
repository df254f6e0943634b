"""The output segment: the answer's text (word diff), its tool calls, and how it ended
(finish reason, status code, outcome, error, incomplete)."""

from __future__ import annotations

from typing import Any

from prompttap.inspector.diff.model import OutputDiff, ValueChange
from prompttap.inspector.diff.text import word_ops
from prompttap.inspector.diff.tools import diff_tool_calls
from prompttap.inspector.diff.values import as_str, dicts, show, to_json


def diff_output(a: dict[str, Any], b: dict[str, Any]) -> OutputDiff:
    text_a, text_b = as_str(a.get("output_text")), as_str(b.get("output_text"))
    ops = word_ops(text_a, text_b)
    calls = diff_tool_calls(dicts(a.get("output_tool_calls")), dicts(b.get("output_tool_calls")))
    calls_same = all(c.kind == "same" for c in calls)
    fields = []
    for name in ("finish_reason", "status_code", "outcome", "error", "incomplete"):
        ja, jb = to_json(a.get(name)), to_json(b.get(name))
        fields.append(ValueChange(name, ja, jb, ja != jb, "response"))
    text_same = text_a == text_b
    identical = text_same and calls_same and not any(f.changed for f in fields)
    if identical:
        summary = "Output identical."
    else:
        parts = []
        if not text_same:
            parts.append("text differs")
        if not calls_same:
            parts.append("tool calls differ")
        parts.extend(f"{f.name} {show(f.a)} → {show(f.b)}" for f in fields if f.changed and f.name != "error")
        summary = "Output differs: " + ", ".join(parts) + "." if parts else "Output differs."
    return OutputDiff(
        "identical" if identical else "changed", identical, text_same, ops, calls_same, calls, fields, summary
    )
