"""The whole comparison and its verdict: every segment diffed, then who made the difference
(``blame``), a one-line headline and a sentence per segment."""

from __future__ import annotations

from typing import Any

from prompttap.inspector.diff.messages import diff_conversation
from prompttap.inspector.diff.model import Blame, CaptureDiff, CaptureRef
from prompttap.inspector.diff.output import diff_output
from prompttap.inspector.diff.params import diff_params
from prompttap.inspector.diff.prompt import diff_context, diff_system_prompt
from prompttap.inspector.diff.tools import diff_tools
from prompttap.inspector.diff.values import as_str, dicts

BLAME_HEADLINES: dict[str, str] = {
    "prompt": "The app sent a different prompt.",
    "model": "Same prompt, the model answered differently.",
    "none": "Identical request and answer.",
}


def diff_captures(a: dict[str, Any], b: dict[str, Any]) -> CaptureDiff:
    """Compare capture rows ``a`` and ``b`` (see the package docstring)."""
    params = diff_params(a, b)
    system = diff_system_prompt(as_str(a.get("system_prompt")), as_str(b.get("system_prompt")))
    context = diff_context(as_str(a.get("system_prompt")), as_str(b.get("system_prompt")))
    history, turn, steps = diff_conversation(dicts(a.get("messages")), dicts(b.get("messages")))
    tools = diff_tools(dicts(a.get("tools")), dicts(b.get("tools")))
    output = diff_output(a, b)

    request_same = (
        params.request_identical
        and system.identical
        and history.identical
        and turn.identical
        and steps.identical
        and tools.identical
    )
    response_same = output.identical and not any(r.changed for r in params.rows if r.side == "response")
    blame: Blame = "none" if request_same and response_same else "model" if request_same else "prompt"

    notes = []
    for label, row in (("A", a), ("B", b)):
        if as_str(row.get("api")) in ("", "unknown"):
            notes.append(f"Capture {label} was not understood; only its raw fields could be compared.")
        elif as_str(row.get("parse_error")):
            notes.append(f"Capture {label} was only partly understood: {as_str(row.get('parse_error'))}")
    if request_same and a.get("request_sha256") and a.get("request_sha256") != b.get("request_sha256"):
        notes.append("The request bodies still differ outside the compared fields (key order or other keys).")

    sentences = [params.summary, system.summary]
    if context.a_count or context.b_count:
        sentences.append(context.summary)
    if history.a_count or history.b_count:
        sentences.append(history.summary)
    sentences.append(turn.summary)
    if steps.a_count or steps.b_count:
        sentences.append(steps.summary)
    if tools.a_count or tools.b_count:
        sentences.append(tools.summary)
    sentences.append(output.summary)

    return CaptureDiff(
        a=_ref(a),
        b=_ref(b),
        verdict=" ".join(sentences),
        blame=blame,
        headline=BLAME_HEADLINES[blame],
        notes=notes,
        params=params,
        system_prompt=system,
        context=context,
        history=history,
        turn=turn,
        steps=steps,
        tools=tools,
        output=output,
    )


def _ref(row: dict[str, Any]) -> CaptureRef:
    return CaptureRef(
        id=as_str(row.get("id")),
        started_at=as_str(row.get("started_at")),
        route=as_str(row.get("route")),
        api=as_str(row.get("api")),
        model=as_str(row.get("model")),
        status_code=int(row.get("status_code") or 0),
        outcome=as_str(row.get("outcome")),
        thread_id=as_str(row.get("thread_id")),
        prompt_template_id=as_str(row.get("prompt_template_id")),
        parse_error=as_str(row.get("parse_error")),
    )
