"""The whole comparison and its verdict: every segment diffed, then who made the difference
(``blame``), a headline that names it, and a sentence per segment (each segment's ``summary``,
written from its ``status``)."""

from __future__ import annotations

from typing import Any

from prompttap.inspector.diff.messages import diff_conversation
from prompttap.inspector.diff.model import Blame, CaptureDiff, CaptureRef, ParamsDiff
from prompttap.inspector.diff.output import diff_output
from prompttap.inspector.diff.params import AnswerSwap, answer_swap, diff_params
from prompttap.inspector.diff.prompt import diff_context, diff_system_prompt
from prompttap.inspector.diff.tools import diff_tools
from prompttap.inspector.diff.values import as_str, dicts

HEADLINE_SAME_PROMPT = "Same prompt, the model answered differently."
HEADLINE_IDENTICAL = "Identical request and answer."


def diff_captures(a: dict[str, Any], b: dict[str, Any]) -> CaptureDiff:
    """Compare capture rows ``a`` and ``b`` (see the package docstring)."""
    params = diff_params(a, b)
    system = diff_system_prompt(as_str(a.get("system_prompt")), as_str(b.get("system_prompt")))
    context = diff_context(as_str(a.get("system_prompt")), as_str(b.get("system_prompt")))
    history, turn, steps = diff_conversation(dicts(a.get("messages")), dicts(b.get("messages")))
    tools = diff_tools(dicts(a.get("tools")), dicts(b.get("tools")))
    output = diff_output(a, b)

    prompt_same = system.text_identical and all(s.identical for s in (history, turn, steps, tools))
    request_same = params.request_identical and prompt_same
    response_same = output.identical and not any(r.changed for r in params.rows if r.side == "response")
    swap = answer_swap(params) if request_same else None
    blame: Blame
    if not request_same:
        blame, headline = "prompt", _app_headline(params, prompt_same)
    elif swap is not None:
        blame, headline = "upstream", _upstream_headline(swap)
    elif not response_same:
        blame, headline = "model", HEADLINE_SAME_PROMPT
    else:
        blame, headline = "none", HEADLINE_IDENTICAL

    notes = []
    for label, row in (("A", a), ("B", b)):
        if as_str(row.get("api")) in ("", "unknown"):
            notes.append(f"Capture {label} was not understood; only its raw fields could be compared.")
        elif as_str(row.get("parse_error")):
            notes.append(f"Capture {label} was only partly understood: {as_str(row.get('parse_error'))}")
    if request_same and a.get("request_sha256") and a.get("request_sha256") != b.get("request_sha256"):
        notes.append("The request bodies still differ outside the compared fields (key order or other keys).")

    sentences = [params.summary, system.summary]
    if context.status != "absent":
        sentences.append(context.summary)
    if history.status != "absent":
        sentences.append(history.summary)
    sentences.append(turn.summary)
    if steps.status != "absent":
        sentences.append(steps.summary)
    if tools.status != "absent":
        sentences.append(tools.summary)
    sentences.append(output.summary)

    return CaptureDiff(
        a=_ref(a),
        b=_ref(b),
        verdict=" ".join(sentences),
        blame=blame,
        headline=headline,
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


def _app_headline(params: ParamsDiff, prompt_same: bool) -> str:
    """What the app changed: "The app asked for a different model and sent a different prompt."."""
    changed = {r.name for r in params.rows if r.changed and r.side == "request"}
    clauses = []
    if "model" in changed:
        clauses.append("asked for a different model")
    if "api" in changed:
        clauses.append("used a different API")
    if changed - {"model", "api"}:
        clauses.append("changed the parameters")
    if not prompt_same:
        clauses.append("sent a different prompt")
    if not clauses:
        return "The app sent a different request."
    listed = clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]
    return f"The app {listed}."


def _upstream_headline(swap: AnswerSwap) -> str:
    than = " than requested" if swap.requested else ""
    return f"Same prompt, but the upstream answered with a different model{than} ({swap.detail()})."


def _ref(row: dict[str, Any]) -> CaptureRef:
    return CaptureRef(
        id=as_str(row.get("id")),
        started_at=as_str(row.get("started_at")),
        route=as_str(row.get("route")),
        api=as_str(row.get("api")),
        model=as_str(row.get("model")),
        response_model=as_str(row.get("response_model")),
        status_code=int(row.get("status_code") or 0),
        outcome=as_str(row.get("outcome")),
        thread_id=as_str(row.get("thread_id")),
        prompt_template_id=as_str(row.get("prompt_template_id")),
        parse_error=as_str(row.get("parse_error")),
    )
