"""Compare two captures segment by segment: did the app change the prompt, or did the model
answer the same prompt differently?

``diff_captures(a, b)`` takes two capture rows as ``inspector.queries.get_capture`` returns
them and aligns what an LLM app assembles into a request (see the AnythingLLM notes: system
prompt + retrieved context + trimmed history + user turn), one segment at a time:

- model and parameters (a table of values; ``response_model`` is the answer's side);
- the system prompt's instructions, with retrieved-context blocks cut out so new search hits
  do not drown a changed sentence (line diff, word diff inside changed lines);
- the retrieved-context snippets, matched between sides (same / changed / added / removed);
- the history before the latest user message (dropped / added / truncated / changed / same);
- the latest user message (word diff), then any tool steps after it (aligned like history);
- tool definitions (by name, JSON diff) and the outputs (text, tool calls, finish reason).

Everything here is pure and returns plain dataclasses: ``dataclasses.asdict`` gives the JSON
the inspector serves at ``/api/diff``. Text diffs are lists of ``Op`` runs, so templates build
the ``<ins>``/``<del>`` markup themselves and captured text is never trusted as HTML.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

T = TypeVar("T")

Blame = Literal["prompt", "model", "none"]
"""Who made the difference: ``prompt`` (the app sent a different request: prompt, messages,
tools, model or parameters), ``model`` (the same request got a different answer), ``none``."""

BLAME_HEADLINES: dict[str, str] = {
    "prompt": "The app sent a different prompt.",
    "model": "Same prompt, the model answered differently.",
    "none": "Identical request and answer.",
}

SNIPPET_SIMILARITY = 0.6  # a context snippet this close to one on the other side is "changed", not replaced
MESSAGE_SIMILARITY = 0.5  # likewise for history messages inside a replaced run
LINE_SIMILARITY = 0.5  # likewise for system-prompt lines
FOLD_CONTEXT = 3  # unchanged lines kept visible around a change
_DIRECT_TOKENS = 4_000_000  # token-pair product above which word diffs go through a line pass first


# --- result shapes -----------------------------------------------------------------------------


@dataclass(slots=True)
class Op:
    """A run of text in a diff: kept (``eq``), only in A (``del``) or only in B (``ins``)."""

    op: Literal["eq", "del", "ins"]
    text: str


@dataclass(slots=True)
class LineChange:
    """One line of a line diff. ``ops`` is the word diff of a ``changed`` line (A → B)."""

    kind: Literal["same", "added", "removed", "changed"]
    a_no: int | None  # 1-based line number in A
    b_no: int | None
    a: str | None
    b: str | None
    ops: list[Op] = field(default_factory=list)
    fold: int = 0  # > 0: inside a run of this many unchanged lines far from any change (shown folded)


@dataclass(slots=True)
class ValueChange:
    """One compared scalar: values as JSON text, ``None`` when the capture does not set it."""

    name: str
    a: str | None
    b: str | None
    changed: bool
    side: Literal["request", "response"] = "request"


@dataclass(slots=True)
class JsonChange:
    """One difference between two JSON documents, at a dotted ``path`` (``[]`` for set-like lists)."""

    path: str
    kind: Literal["added", "removed", "changed"]
    a: str | None  # JSON text
    b: str | None


@dataclass(slots=True)
class CaptureRef:
    """Which capture a side is, for headings and links."""

    id: str
    started_at: str
    route: str
    api: str
    model: str
    status_code: int
    outcome: str
    thread_id: str
    prompt_template_id: str
    parse_error: str


@dataclass(slots=True)
class ParamsDiff:
    """Model and parameters: every compared value, ``changed`` marking those that differ."""

    identical: bool  # no row changed
    request_identical: bool  # api, model, stream and params (what the app chose) are the same
    rows: list[ValueChange]
    summary: str


@dataclass(slots=True)
class SystemPromptDiff:
    """The system prompt's instructions (retrieved context replaced by ``{{context}}``)."""

    identical: bool  # the whole system prompt, byte for byte (context included)
    instructions_identical: bool  # without context, line ends and trailing spaces normalized
    same_template: bool  # same prompt_template_id: only per-request values (dates, numbers...) differ
    changed_values: list[str]  # kinds of per-request values that differ, e.g. ["date", "time"]
    a_template_id: str
    b_template_id: str
    lines: list[LineChange]
    summary: str


@dataclass(slots=True)
class SnippetChange:
    """A retrieved-context snippet matched across sides; ``ops`` is the word diff when ``changed``."""

    kind: Literal["same", "changed", "added", "removed"]
    a_index: int | None
    b_index: int | None
    a: str | None
    b: str | None
    similarity: float
    ops: list[Op] = field(default_factory=list)


@dataclass(slots=True)
class ContextDiff:
    """Retrieved context: snippets in B's order, removed ones next to where they stood."""

    identical: bool
    a_count: int
    b_count: int
    same: int
    changed: int
    added: int
    removed: int
    replaced: int  # min(added, removed): a snippet swapped for an unrelated one
    reordered: bool  # matched snippets come in a different order
    snippets: list[SnippetChange]
    summary: str


@dataclass(slots=True)
class MessageView:
    """A message reduced to what a diff shows; ``attachments`` describe non-text parts."""

    role: str
    content: str
    tool_calls: list[dict[str, str]]  # {"id", "name", "arguments"}
    tool_call_id: str | None
    name: str | None
    attachments: list[str]


@dataclass(slots=True)
class MessageChange:
    """One aligned message. ``truncated``: B's content is a shortened copy of A's."""

    kind: Literal["same", "dropped", "added", "truncated", "changed"]
    a_index: int | None  # position in the capture's whole ``messages`` list
    b_index: int | None
    role: str
    a: MessageView | None
    b: MessageView | None
    ops: list[Op] = field(default_factory=list)  # word diff of the content (changed/truncated)
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class HistoryDiff:
    """A run of messages aligned on fingerprints (role, normalized content, tool calls)."""

    identical: bool
    a_count: int
    b_count: int
    same: int
    dropped: int
    added: int
    truncated: int
    changed: int
    dropped_earliest: bool  # every dropped message came before the first one kept (a sliding window)
    follows: Literal["", "b_follows_a", "a_follows_b"]  # one side is a later turn of the other's chat
    messages: list[MessageChange]
    summary: str


@dataclass(slots=True)
class TurnDiff:
    """The latest user message."""

    identical: bool
    a: MessageView | None
    b: MessageView | None
    ops: list[Op]
    notes: list[str]
    summary: str


@dataclass(slots=True)
class ToolChange:
    """A tool definition matched by name; ``changes`` lists JSON paths that differ."""

    name: str
    kind: Literal["same", "added", "removed", "changed"]
    changes: list[JsonChange]
    a: str | None  # definition as indented JSON
    b: str | None


@dataclass(slots=True)
class ToolsDiff:
    identical: bool
    a_count: int
    b_count: int
    tools: list[ToolChange]
    summary: str


@dataclass(slots=True)
class ToolCallChange:
    """A tool call in the output, matched by name and order (call ids are ignored)."""

    kind: Literal["same", "added", "removed", "changed"]
    name: str
    a_arguments: str | None
    b_arguments: str | None
    changes: list[JsonChange]


@dataclass(slots=True)
class OutputDiff:
    identical: bool
    text_identical: bool
    ops: list[Op]
    tool_calls_identical: bool
    tool_calls: list[ToolCallChange]
    fields: list[ValueChange]  # finish_reason, status_code, outcome, error, incomplete
    summary: str


@dataclass(slots=True)
class CaptureDiff:
    """Everything ``diff_captures`` found, top to bottom as the diff page shows it."""

    a: CaptureRef
    b: CaptureRef
    verdict: str  # plain sentences, one per segment
    blame: Blame
    headline: str  # BLAME_HEADLINES[blame]
    notes: list[str]
    params: ParamsDiff
    system_prompt: SystemPromptDiff
    context: ContextDiff
    history: HistoryDiff
    turn: TurnDiff
    steps: HistoryDiff  # tool calls/results after the latest user message (agent loops)
    tools: ToolsDiff
    output: OutputDiff

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- the comparison ----------------------------------------------------------------------------


def diff_captures(a: dict[str, Any], b: dict[str, Any]) -> CaptureDiff:
    """Compare capture rows ``a`` and ``b`` (see the module docstring)."""
    params = diff_params(a, b)
    system = diff_system_prompt(_s(a.get("system_prompt")), _s(b.get("system_prompt")))
    context = diff_context(_s(a.get("system_prompt")), _s(b.get("system_prompt")))
    msgs_a, msgs_b = _list(a.get("messages")), _list(b.get("messages"))
    hist_a, turn_a, steps_a = split_messages(msgs_a)
    hist_b, turn_b, steps_b = split_messages(msgs_b)
    history = diff_messages(hist_a, hist_b, 0, 0, "History")
    history.follows = _follows(msgs_a, hist_a, turn_a, msgs_b, hist_b, turn_b)
    history.summary = _history_summary(history, "History")
    turn = diff_turn(
        msgs_a[turn_a] if turn_a is not None else None,
        msgs_b[turn_b] if turn_b is not None else None,
    )
    steps = diff_messages(
        steps_a, steps_b, len(msgs_a) - len(steps_a), len(msgs_b) - len(steps_b), "Tool steps after the user message"
    )
    tools = diff_tools(_list(a.get("tools")), _list(b.get("tools")))
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
        if _s(row.get("api")) in ("", "unknown"):
            notes.append(f"Capture {label} was not understood; only its raw fields could be compared.")
        elif _s(row.get("parse_error")):
            notes.append(f"Capture {label} was only partly understood: {_s(row.get('parse_error'))}")
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
        id=_s(row.get("id")),
        started_at=_s(row.get("started_at")),
        route=_s(row.get("route")),
        api=_s(row.get("api")),
        model=_s(row.get("model")),
        status_code=int(row.get("status_code") or 0),
        outcome=_s(row.get("outcome")),
        thread_id=_s(row.get("thread_id")),
        prompt_template_id=_s(row.get("prompt_template_id")),
        parse_error=_s(row.get("parse_error")),
    )


# --- model and parameters ----------------------------------------------------------------------


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
        ja = _json(va) if present_a else None
        jb = _json(vb) if present_b else None
        rows.append(ValueChange(name, ja, jb, ja != jb, side))

    for name in ("api", "model", "stream"):
        add(name, a.get(name), b.get(name), a.get(name) not in (None, ""), b.get(name) not in (None, ""))
    pa, pb = _dict(a.get("params")), _dict(b.get("params"))
    for key in [*pa, *(k for k in pb if k not in pa)]:
        add(key, pa.get(key), pb.get(key), key in pa, key in pb)
    ra, rb = a.get("response_model"), b.get("response_model")
    add("response_model", ra, rb, bool(ra), bool(rb), "response")

    changed = [r for r in rows if r.changed and r.side == "request"]
    parts = []
    model = next((r for r in changed if r.name == "model"), None)
    if model is not None:
        parts.append(f"Different model: {_show(model.a)} → {_show(model.b)}.")
    others = [r for r in changed if r.name != "model"]
    if others:
        parts.append("Parameters differ: " + ", ".join(_change_phrase(r) for r in others) + ".")
    if not parts:
        parts.append("Same model and parameters.")
    answered = next((r for r in rows if r.name == "response_model" and r.changed), None)
    if answered is not None:
        parts.append(f"Answered by {_show(answered.a)} → {_show(answered.b)}.")
    return ParamsDiff(not any(r.changed for r in rows), not changed, rows, " ".join(parts))


def _change_phrase(r: ValueChange) -> str:
    if len(r.a or "") <= 30 and len(r.b or "") <= 30:
        return f"{r.name} {_show(r.a)} → {_show(r.b)}"
    return r.name


def _show(v: str | None) -> str:
    if v is None:
        return "(unset)"
    return v[1:-1] if len(v) >= 2 and v[0] == v[-1] == '"' else v


# --- system prompt and retrieved context -------------------------------------------------------

_SCAFFOLD = re.compile(r"(?:\s|\[(?:END )?CONTEXT \d+\]:?|-{3,}|={3,}|\*{3,}|_{3,}|~{3,})*")
_LEAD_MARK = re.compile(r"\[CONTEXT \d+\]:?[ \t]*\n?$")
_TRAIL_MARK = re.compile(r"\s*\[END CONTEXT \d+\]")
CONTEXT_PLACEHOLDER = "{{context}}"


def split_context(system_prompt: str) -> tuple[str, list[str]]:
    """The system prompt with each retrieved-context region replaced by ``{{context}}``, and the
    snippets. Line ends and trailing spaces are normalized (as for template ids)."""
    # Pure rules shared with the collector; imported lazily so the inspector does not load the
    # collector package at import time (they may move to ``schemas/``).
    from prompttap.schemas.templates import context_blocks, normalize

    text = normalize(system_prompt)
    snippets = context_blocks(system_prompt)
    regions: list[list[int]] = []
    pos = 0
    for snippet in snippets:
        k = text.find(snippet, pos)
        if k < 0:
            continue
        if regions and _SCAFFOLD.fullmatch(text, regions[-1][1], k):
            regions[-1][1] = k + len(snippet)  # neighbours separated only by markers: one region
        else:
            regions.append([k, k + len(snippet)])
        pos = k + len(snippet)
    for region in regions:  # the markers around a region belong to it
        head = text[max(0, region[0] - 40) : region[0]]
        if m := _LEAD_MARK.search(head):
            region[0] -= len(head) - m.start()
        if m := _TRAIL_MARK.match(text, region[1]):
            region[1] = m.end()
    for start, end in reversed(regions):
        text = text[:start] + CONTEXT_PLACEHOLDER + text[end:]
    return text, snippets


def diff_system_prompt(a: str, b: str) -> SystemPromptDiff:
    from prompttap.schemas.templates import template_of  # pure; see split_context

    ia, _ = split_context(a)
    ib, _ = split_context(b)
    ta, tb = template_of(a), template_of(b)
    values_a = _values_by_kind(ta.variables)
    values_b = _values_by_kind(tb.variables)
    kinds = [k for k in [*values_a, *(k for k in values_b if k not in values_a)] if k != "context"]
    changed_values = [k for k in kinds if values_a.get(k) != values_b.get(k)]
    lines = line_diff(ia, ib)
    identical = a == b
    same_instructions = ia == ib
    n_changed = sum(1 for line in lines if line.kind != "same")
    if not a and not b:
        summary = "No system prompt."
    elif identical:
        summary = "System prompt identical."
    elif not a or not b:
        summary = f"System prompt only in {'B' if not a else 'A'}."
    elif same_instructions:
        context_changed = values_a.get("context") != values_b.get("context")
        summary = (
            "System prompt instructions identical." if context_changed else "System prompt differs only in whitespace."
        )
    elif ta.id == tb.id:
        summary = (
            f"System prompt: same template, per-request values changed ({', '.join(changed_values)})."
            if changed_values
            else "System prompt: same template, whitespace differs."
        )
    else:
        summary = f"System prompt instructions changed ({n_changed} {_plural(n_changed, 'line')})."
    return SystemPromptDiff(
        identical=identical,
        instructions_identical=same_instructions,
        same_template=ta.id == tb.id,
        changed_values=changed_values,
        a_template_id=ta.id,
        b_template_id=tb.id,
        lines=lines,
        summary=summary,
    )


def _values_by_kind(variables: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for kind, value in variables:
        out.setdefault(kind, []).append(value)
    return out


def diff_context(system_a: str, system_b: str) -> ContextDiff:
    _, sa = split_context(system_a)
    _, sb = split_context(system_b)
    return diff_snippets(sa, sb)


def diff_snippets(sa: list[str], sb: list[str]) -> ContextDiff:
    """Match snippets exactly first (any order), then by similarity ≥ SNIPPET_SIMILARITY."""
    match: dict[int, tuple[int, float]] = {}  # b index -> (a index, similarity)
    free_a: dict[str, list[int]] = {}
    for i, s in enumerate(sa):
        free_a.setdefault(s.strip(), []).append(i)
    for j, s in enumerate(sb):
        if free_a.get(s.strip()):
            match[j] = (free_a[s.strip()].pop(0), 1.0)
    used_a = {i for i, _ in match.values()}
    left_a = [i for i in range(len(sa)) if i not in used_a]
    left_b = [j for j in range(len(sb)) if j not in match]
    candidates = []
    for i in left_a:
        for j in left_b:
            r = similarity(_snippet_body(sa[i]), _snippet_body(sb[j]), SNIPPET_SIMILARITY)
            if r >= SNIPPET_SIMILARITY:
                candidates.append((r, i, j))
    for r, i, j in sorted(candidates, key=lambda c: (-c[0], c[1], c[2])):
        if i not in used_a and j not in match:
            match[j] = (i, r)
            used_a.add(i)

    out: list[SnippetChange] = []
    unmatched_a = [i for i in range(len(sa)) if i not in used_a]
    next_kept = [len(sa)] * (len(sb) + 1)  # A index of the next matched snippet at or after j
    for j in range(len(sb) - 1, -1, -1):
        next_kept[j] = match[j][0] if j in match else next_kept[j + 1]
    for j, text_b in enumerate(sb):
        while unmatched_a and unmatched_a[0] < next_kept[j]:  # removed ones stay near their old place
            k = unmatched_a.pop(0)
            out.append(SnippetChange("removed", k, None, sa[k], None, 0.0))
        if j in match:
            i, r = match[j]
            if sa[i] == text_b:
                out.append(SnippetChange("same", i, j, sa[i], text_b, 1.0))
            else:
                out.append(SnippetChange("changed", i, j, sa[i], text_b, round(r, 3), word_ops(sa[i], text_b)))
        else:
            out.append(SnippetChange("added", None, j, None, text_b, 0.0))
    out.extend(SnippetChange("removed", k, None, sa[k], None, 0.0) for k in unmatched_a)

    counts = {k: sum(1 for s in out if s.kind == k) for k in ("same", "changed", "added", "removed")}
    order = [match[j][0] for j in sorted(match)]
    reordered = order != sorted(order)
    replaced = min(counts["added"], counts["removed"])
    identical = sa == sb
    if not sa and not sb:
        summary = "No retrieved context."
    elif identical:
        summary = f"Context identical ({len(sa)} {_plural(len(sa), 'snippet')})."
    else:
        parts = []
        if replaced:
            parts.append(f"{replaced} of {len(sa)} {_plural(len(sa), 'snippet')} replaced")
        if counts["added"] > replaced:
            n = counts["added"] - replaced
            parts.append(f"{n} {_plural(n, 'snippet')} added")
        if counts["removed"] > replaced:
            n = counts["removed"] - replaced
            parts.append(f"{n} of {len(sa)} {_plural(len(sa), 'snippet')} removed")
        if counts["changed"]:
            parts.append(f"{counts['changed']} changed")
        if reordered:
            parts.append("order changed")
        summary = "Context: " + ", ".join(parts or ["snippet text differs"]) + "."
    return ContextDiff(
        identical=identical,
        a_count=len(sa),
        b_count=len(sb),
        same=counts["same"],
        changed=counts["changed"],
        added=counts["added"],
        removed=counts["removed"],
        replaced=replaced,
        reordered=reordered,
        snippets=out,
        summary=summary,
    )


_METADATA = re.compile(r"\s*<document_metadata>.*?</document_metadata>\s*", re.S)


def _snippet_body(snippet: str) -> str:
    # AnythingLLM's per-chunk metadata header is shared scaffolding: two unrelated chunks would
    # look alike through it, so similarity is judged on the chunk text.
    return _METADATA.sub("", snippet, count=1) if snippet.lstrip().startswith("<document_metadata>") else snippet


# --- messages ----------------------------------------------------------------------------------


def split_messages(
    messages: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], int | None, list[dict[str, Any]]]:
    """(history before the latest user message, that message's index, messages after it)."""
    for i in range(len(messages) - 1, -1, -1):
        if _s(messages[i].get("role")) == "user":
            return messages[:i], i, messages[i + 1 :]
    return [], None, list(messages)  # no user turn: everything is tool steps / assistant prefill


def message_view(m: dict[str, Any]) -> MessageView:
    calls = [
        {"id": _s(c.get("id")), "name": _s(c.get("name")), "arguments": _s(c.get("arguments"))}
        for c in _list(m.get("tool_calls"))
    ]
    return MessageView(
        role=_s(m.get("role")),
        content=_s(m.get("content")),
        tool_calls=calls,
        tool_call_id=m.get("tool_call_id") or None,
        name=m.get("name") or None,
        attachments=[_describe_part(p) for p in _list(m.get("parts")) if p.get("type") != "text"],
    )


def _describe_part(p: dict[str, Any]) -> str:
    kind = _s(p.get("type")) or "part"
    if p.get("redacted"):
        return f"{kind} (redacted)"
    url = _s(p.get("url"))
    if url.startswith("data:"):
        return f"{kind}: {url[: url.find(',') if ',' in url else 40]} ({len(url):,} chars)"
    if url:
        return f"{kind}: {url[:120]}"
    for key in ("title", "file_id", "text"):
        if p.get(key):
            text = " ".join(_s(p[key]).split())
            return f"{kind}: {text[:80]}{'…' if len(text) > 80 else ''}"
    if p.get("is_error"):
        return f"{kind}: error"
    return kind


def fingerprint(m: dict[str, Any]) -> str:
    """What makes two messages "the same turn": ids and whitespace do not count."""
    calls = [(_s(c.get("name")), _canonical_args(c.get("arguments"))) for c in _list(m.get("tool_calls"))]
    parts = [{k: v for k, v in p.items() if k != "id"} for p in _list(m.get("parts"))]
    return json.dumps(
        [_s(m.get("role")), " ".join(_s(m.get("content")).split()), calls, m.get("name") or "", parts],
        sort_keys=True,
        ensure_ascii=False,
        default=str,
    )


def diff_messages(
    ma: list[dict[str, Any]], mb: list[dict[str, Any]], offset_a: int, offset_b: int, label: str
) -> HistoryDiff:
    """Align two message runs; indexes in the result count from ``offset_*`` (their place in
    the capture's whole message list)."""
    fa, fb = [fingerprint(m) for m in ma], [fingerprint(m) for m in mb]
    out: list[MessageChange] = []
    for tag, i1, i2, j1, j2 in _matcher(fa, fb).get_opcodes():
        if tag == "equal":
            for i, j in zip(range(i1, i2), range(j1, j2), strict=True):
                out.append(_pair_messages(ma[i], mb[j], offset_a + i, offset_b + j))
        elif tag == "delete":
            out.extend(_lone(ma[i], offset_a + i, "dropped") for i in range(i1, i2))
        elif tag == "insert":
            out.extend(_lone(mb[j], offset_b + j, "added") for j in range(j1, j2))
        else:
            pairs = pair_up(ma[i1:i2], mb[j1:j2], _message_similarity, MESSAGE_SIMILARITY)
            for pi, pj in pairs:
                if pi is None:
                    out.append(_lone(mb[j1 + pj], offset_b + j1 + pj, "added"))  # type: ignore[operator]
                elif pj is None:
                    out.append(_lone(ma[i1 + pi], offset_a + i1 + pi, "dropped"))
                else:
                    out.append(_pair_messages(ma[i1 + pi], mb[j1 + pj], offset_a + i1 + pi, offset_b + j1 + pj))
    counts = {k: sum(1 for c in out if c.kind == k) for k in ("same", "dropped", "added", "truncated", "changed")}
    first_kept = next((k for k, c in enumerate(out) if c.kind in ("same", "truncated", "changed")), len(out))
    dropped_earliest = counts["dropped"] > 0 and all(c.kind != "dropped" for c in out[first_kept:])
    diff = HistoryDiff(
        identical=ma == mb,
        a_count=len(ma),
        b_count=len(mb),
        same=counts["same"],
        dropped=counts["dropped"],
        added=counts["added"],
        truncated=counts["truncated"],
        changed=counts["changed"],
        dropped_earliest=dropped_earliest,
        follows="",
        messages=out,
        summary="",
    )
    diff.summary = _history_summary(diff, label)
    return diff


def _history_summary(d: HistoryDiff, label: str) -> str:
    if not d.a_count and not d.b_count:
        return f"{label}: none."
    if d.identical:
        return f"{label} identical ({d.a_count} {_plural(d.a_count, 'message')})."
    parts = []
    if d.dropped:
        parts.append(f"{d.dropped} {'oldest ' if d.dropped_earliest else ''}{_plural(d.dropped, 'message')} dropped")
    if d.added:
        parts.append(f"{d.added} {_plural(d.added, 'message')} added")
    if d.truncated:
        parts.append(f"{d.truncated} truncated")
    if d.changed:
        parts.append(f"{d.changed} changed")
    if not parts:
        parts.append("same messages, different details")
    text = f"{label}: " + ", ".join(parts)
    if d.follows == "b_follows_a":
        text += " (B is a later turn of A's conversation)"
    elif d.follows == "a_follows_b":
        text += " (A is a later turn of B's conversation)"
    return text + "."


def _follows(
    ma: list[dict[str, Any]],
    ha: list[dict[str, Any]],
    ta: int | None,
    mb: list[dict[str, Any]],
    hb: list[dict[str, Any]],
    tb: int | None,
) -> Literal["", "b_follows_a", "a_follows_b"]:
    """B's history holds A's latest user message (or the other way round)."""
    if ta is not None and fingerprint(ma[ta]) in {fingerprint(m) for m in hb}:
        return "b_follows_a"
    if tb is not None and fingerprint(mb[tb]) in {fingerprint(m) for m in ha}:
        return "a_follows_b"
    return ""


def _lone(m: dict[str, Any], index: int, kind: Literal["dropped", "added"]) -> MessageChange:
    view = message_view(m)
    if kind == "dropped":
        return MessageChange("dropped", index, None, view.role, view, None)
    return MessageChange("added", None, index, view.role, None, view)


def _pair_messages(ma: dict[str, Any], mb: dict[str, Any], ia: int, ib: int) -> MessageChange:
    va, vb = message_view(ma), message_view(mb)
    if ma == mb:
        return MessageChange("same", ia, ib, vb.role, va, vb)
    notes = _message_notes(va, vb)
    ops = word_ops(va.content, vb.content) if va.content != vb.content else []
    cut = truncation(va.content, vb.content)
    if cut and va.tool_calls == vb.tool_calls:
        return MessageChange("truncated", ia, ib, vb.role, va, vb, ops, [f"{cut:,} characters cut", *notes])
    if truncation(vb.content, va.content):
        notes.append("A's copy is the shortened one")
    if fingerprint(ma) == fingerprint(mb) and not notes:
        notes.append("only whitespace or ids differ")
    return MessageChange("changed", ia, ib, vb.role, va, vb, ops, notes)


def _message_notes(a: MessageView, b: MessageView) -> list[str]:
    notes = []
    if a.role != b.role:
        notes.append(f"role {a.role} → {b.role}")
    calls_a = [(c["name"], _canonical_args(c["arguments"])) for c in a.tool_calls]
    calls_b = [(c["name"], _canonical_args(c["arguments"])) for c in b.tool_calls]
    if calls_a != calls_b:
        notes.append("tool calls differ")
    elif [c["id"] for c in a.tool_calls] != [c["id"] for c in b.tool_calls] or a.tool_call_id != b.tool_call_id:
        notes.append("tool call ids differ")
    if a.attachments != b.attachments:
        notes.append("attachments differ")
    if a.name != b.name:
        notes.append("name differs")
    return notes


def _message_similarity(ma: dict[str, Any], mb: dict[str, Any]) -> float:
    if _s(ma.get("role")) != _s(mb.get("role")):
        return 0.0
    ca, cb = _s(ma.get("content")), _s(mb.get("content"))
    if truncation(ca, cb):
        return 1.0
    calls_a = " ".join(f"{c.get('name')} {c.get('arguments')}" for c in _list(ma.get("tool_calls")))
    calls_b = " ".join(f"{c.get('name')} {c.get('arguments')}" for c in _list(mb.get("tool_calls")))
    return similarity(f"{ca}\n{calls_a}", f"{cb}\n{calls_b}", MESSAGE_SIMILARITY)


def truncation(a: str, b: str) -> int:
    """Characters cut when ``b`` is a shortened copy of ``a``: a prefix, a suffix, or both ends
    kept around a short marker (AnythingLLM's "--prompt truncated for brevity--"). 0 otherwise."""
    if len(b) >= len(a) or not b.strip():
        return 0
    p = _common_prefix(a, b)
    s = _common_prefix(a[p:][::-1], b[p:][::-1])
    middle = len(b) - p - s
    if middle == 0 or (middle <= 64 and p + s >= 0.6 * len(b)):
        return len(a) - len(b)
    return 0


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    k = 0
    while k < n and a[k] == b[k]:
        k += 1
    return k


def diff_turn(ma: dict[str, Any] | None, mb: dict[str, Any] | None) -> TurnDiff:
    va = message_view(ma) if ma is not None else None
    vb = message_view(mb) if mb is not None else None
    identical = ma == mb
    if va is None and vb is None:
        return TurnDiff(True, None, None, [], [], "No user message.")
    if va is None or vb is None:
        side = "B" if va is None else "A"
        return TurnDiff(False, va, vb, [], [], f"User message only in {side}.")
    ops = word_ops(va.content, vb.content) if va.content != vb.content else []
    notes = _message_notes(va, vb)
    cut = truncation(va.content, vb.content)
    if cut:
        notes.insert(0, f"{cut:,} characters cut")
    if identical:
        summary = "Latest user message identical."
    elif va.content == vb.content:
        summary = "Latest user message: same text, " + (", ".join(notes) or "details differ") + "."
    elif cut:
        summary = "Latest user message truncated."
    else:
        summary = "Latest user message differs."
    return TurnDiff(identical, va, vb, ops, notes, summary)


# --- tools -------------------------------------------------------------------------------------


def diff_tools(ta: list[dict[str, Any]], tb: list[dict[str, Any]]) -> ToolsDiff:
    """Tool definitions matched by name (a repeated name is matched by occurrence)."""
    ka, kb = _keyed(ta), _keyed(tb)
    out: list[ToolChange] = []
    for key in [*ka, *(k for k in kb if k not in ka)]:
        name = key[0]
        da, db = ka.get(key), kb.get(key)
        if da is None:
            out.append(ToolChange(name, "added", [], None, _pretty(db)))
        elif db is None:
            out.append(ToolChange(name, "removed", [], _pretty(da), None))
        else:
            changes = json_diff(
                {k: v for k, v in da.items() if k != "name"}, {k: v for k, v in db.items() if k != "name"}
            )
            out.append(ToolChange(name, "changed" if changes else "same", changes, _pretty(da), _pretty(db)))
    identical = ta == tb
    added = [t.name for t in out if t.kind == "added"]
    removed = [t.name for t in out if t.kind == "removed"]
    changed = [t.name for t in out if t.kind == "changed"]
    if not ta and not tb:
        summary = "No tools."
    elif identical:
        summary = f"Tools identical ({len(ta)})."
    else:
        parts = []
        for names, verb in ((added, "added"), (removed, "removed"), (changed, "changed")):
            if names:
                parts.append(
                    f"{len(names)} {verb} ({', '.join(_clip(n) for n in names[:5])}{', …' if len(names) > 5 else ''})"
                )
        summary = "Tools: " + ("; ".join(parts) if parts else "same definitions in a different order") + "."
    return ToolsDiff(identical, len(ta), len(tb), out, summary)


def _keyed(tools: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    out: dict[tuple[str, int], dict[str, Any]] = {}
    seen: dict[str, int] = {}
    for t in tools:
        name = _s(t.get("name")) or _s(t.get("type")) or "(unnamed)"
        n = seen.get(name, 0)
        seen[name] = n + 1
        out[(name, n)] = t
    return out


def json_diff(a: Any, b: Any, path: str = "") -> list[JsonChange]:
    """Differences by path; lists of scalars compare as sets (``path[]``), other lists by index."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[JsonChange] = []
        for key in [*a, *(k for k in b if k not in a)]:
            sub = f"{path}.{key}" if path else str(key)
            if key not in b:
                out.append(JsonChange(sub, "removed", _json(a[key]), None))
            elif key not in a:
                out.append(JsonChange(sub, "added", None, _json(b[key])))
            else:
                out.extend(json_diff(a[key], b[key], sub))
        return out
    if isinstance(a, list) and isinstance(b, list):
        if a == b:
            return []
        if all(not isinstance(v, dict | list) for v in (*a, *b)):
            ja, jb = [_json(v) for v in a], [_json(v) for v in b]
            removed = [v for v in ja if v not in jb]
            added = [v for v in jb if v not in ja]
            if not removed and not added:
                return [JsonChange(path or "(root)", "changed", _json(a), _json(b))]  # same items, new order
            return [JsonChange(f"{path}[]", "removed", v, None) for v in removed] + [
                JsonChange(f"{path}[]", "added", None, v) for v in added
            ]
        out = []
        for i in range(max(len(a), len(b))):
            sub = f"{path}[{i}]"
            if i >= len(b):
                out.append(JsonChange(sub, "removed", _json(a[i]), None))
            elif i >= len(a):
                out.append(JsonChange(sub, "added", None, _json(b[i])))
            else:
                out.extend(json_diff(a[i], b[i], sub))
        return out
    if a == b and type(a) is type(b):
        return []
    return [JsonChange(path or "(root)", "changed", _json(a), _json(b))]


# --- outputs -----------------------------------------------------------------------------------


def diff_output(a: dict[str, Any], b: dict[str, Any]) -> OutputDiff:
    text_a, text_b = _s(a.get("output_text")), _s(b.get("output_text"))
    ops = word_ops(text_a, text_b)
    calls = diff_tool_calls(_list(a.get("output_tool_calls")), _list(b.get("output_tool_calls")))
    calls_same = all(c.kind == "same" for c in calls)
    fields = []
    for name in ("finish_reason", "status_code", "outcome", "error", "incomplete"):
        ja, jb = _json(a.get(name)), _json(b.get(name))
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
        parts.extend(f"{f.name} {_show(f.a)} → {_show(f.b)}" for f in fields if f.changed and f.name != "error")
        summary = "Output differs: " + ", ".join(parts) + "." if parts else "Output differs."
    return OutputDiff(identical, text_same, ops, calls_same, calls, fields, summary)


def diff_tool_calls(ca: list[dict[str, Any]], cb: list[dict[str, Any]]) -> list[ToolCallChange]:
    out: list[ToolCallChange] = []
    for i, j in pair_up(ca, cb, _same_name, 0.5):
        if i is None and j is not None:
            y = cb[j]
            out.append(ToolCallChange("added", _s(y.get("name")), None, _s(y.get("arguments")), []))
        elif j is None and i is not None:
            x = ca[i]
            out.append(ToolCallChange("removed", _s(x.get("name")), _s(x.get("arguments")), None, []))
        elif i is not None and j is not None:
            x, y = ca[i], cb[j]
            pa, pb = _parse_args(x.get("arguments")), _parse_args(y.get("arguments"))
            changes = json_diff(pa, pb)
            kind: Literal["same", "changed"] = "changed" if changes else "same"
            out.append(ToolCallChange(kind, _s(y.get("name")), _s(x.get("arguments")), _s(y.get("arguments")), changes))
    return out


def _same_name(x: dict[str, Any], y: dict[str, Any]) -> float:
    return float(_s(x.get("name")) == _s(y.get("name")))


# --- text diffs --------------------------------------------------------------------------------

_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")


def tokens(text: str) -> list[str]:
    """Words, whitespace runs and single punctuation marks; joined they give ``text`` back."""
    return _TOKEN.findall(text)


def word_ops(a: str, b: str) -> list[Op]:
    """Word-level diff of ``a`` → ``b``. Long texts are diffed by line first, then by word
    inside changed line blocks, so the cost stays near-linear in the unchanged part."""
    if a == b:
        return [Op("eq", a)] if a else []
    ta, tb = tokens(a), tokens(b)
    if len(ta) * len(tb) <= _DIRECT_TOKENS:
        return _merge(_token_ops(ta, tb))
    la, lb = a.splitlines(keepends=True), b.splitlines(keepends=True)
    ops: list[Op] = []
    for tag, i1, i2, j1, j2 in _matcher(la, lb).get_opcodes():
        sa, sb = "".join(la[i1:i2]), "".join(lb[j1:j2])
        if tag == "equal":
            ops.append(Op("eq", sa))
            continue
        ta, tb = tokens(sa), tokens(sb)
        if len(ta) * len(tb) <= _DIRECT_TOKENS:
            ops.extend(_token_ops(ta, tb))
        else:
            ops.extend(o for o in (Op("del", sa), Op("ins", sb)) if o.text)
    return _merge(ops)


def _token_ops(ta: list[str], tb: list[str]) -> list[Op]:
    codes = _matcher(ta, tb).get_opcodes()
    groups: list[list[Any]] = []
    for n, (tag, i1, i2, j1, j2) in enumerate(codes):
        # Whitespace or bare punctuation between two changes joins them: one readable
        # "sentence A → sentence B" instead of a word-by-word checkerboard.
        glue = tag == "equal" and 0 < n < len(codes) - 1 and _is_glue(ta[i1:i2])
        if tag != "equal" or glue:
            if groups and groups[-1][0] == "change":
                groups[-1][2], groups[-1][4] = i2, j2
            else:
                groups.append(["change", i1, i2, j1, j2])
        else:
            groups.append(["equal", i1, i2, j1, j2])
    ops = []
    for tag, i1, i2, j1, j2 in groups:
        if tag == "equal":
            ops.append(Op("eq", "".join(ta[i1:i2])))
        else:
            if i2 > i1:
                ops.append(Op("del", "".join(ta[i1:i2])))
            if j2 > j1:
                ops.append(Op("ins", "".join(tb[j1:j2])))
    return ops


def _is_glue(toks: list[str]) -> bool:
    text = "".join(toks)
    return text.isspace() or (len(text.strip()) <= 1 and not any(c.isalnum() for c in text))


def _merge(ops: list[Op]) -> list[Op]:
    out: list[Op] = []
    for o in ops:
        if not o.text:
            continue
        if out and out[-1].op == o.op:
            out[-1] = Op(o.op, out[-1].text + o.text)
        else:
            out.append(o)
    return out


def line_diff(a: str, b: str) -> list[LineChange]:
    """Line diff with word diffs inside changed lines; far-away unchanged runs get ``fold``."""
    la, lb = a.split("\n") if a else [], b.split("\n") if b else []
    out: list[LineChange] = []
    for tag, i1, i2, j1, j2 in _matcher(la, lb).get_opcodes():
        if tag == "equal":
            out.extend(
                LineChange("same", i + 1, j + 1, la[i], lb[j])
                for i, j in zip(range(i1, i2), range(j1, j2), strict=True)
            )
            continue
        for pi, pj in pair_up(la[i1:i2], lb[j1:j2], lambda x, y: similarity(x, y, LINE_SIMILARITY), LINE_SIMILARITY):
            if pi is None:
                j = j1 + pj  # type: ignore[operator]
                out.append(LineChange("added", None, j + 1, None, lb[j]))
            elif pj is None:
                i = i1 + pi
                out.append(LineChange("removed", i + 1, None, la[i], None))
            else:
                i, j = i1 + pi, j1 + pj
                out.append(LineChange("changed", i + 1, j + 1, la[i], lb[j], word_ops(la[i], lb[j])))
    _fold(out)
    return out


def _fold(lines: list[LineChange]) -> None:
    n = len(lines)
    if all(line.kind == "same" for line in lines):
        return  # nothing to point at: an identical prompt is shown whole
    near = [False] * n
    for i, line in enumerate(lines):
        if line.kind != "same":
            for k in range(max(0, i - FOLD_CONTEXT), min(n, i + FOLD_CONTEXT + 1)):
                near[k] = True
    i = 0
    while i < n:
        if lines[i].kind == "same" and not near[i]:
            j = i
            while j < n and lines[j].kind == "same" and not near[j]:
                j += 1
            if j - i >= 3:
                for k in range(i, j):
                    lines[k].fold = j - i
            i = j
        else:
            i += 1


def pair_up(
    xs: Sequence[T], ys: Sequence[T], sim: Callable[[T, T], float], threshold: float
) -> list[tuple[int | None, int | None]]:
    """Order-preserving pairing of two runs: each x takes the most similar y (≥ threshold) after
    the last pair; unpaired items come out alone, in order. Big blocks pair by position."""
    pairs: list[tuple[int, int]] = []
    if len(xs) * len(ys) > 2500:
        pairs = [(k, k) for k in range(min(len(xs), len(ys))) if sim(xs[k], ys[k]) >= threshold]
    else:
        start = 0
        for i, x in enumerate(xs):
            best, best_j = threshold, None
            for j in range(start, len(ys)):
                r = sim(x, ys[j])
                if r >= best and (best_j is None or r > best):
                    best, best_j = r, j
            if best_j is not None:
                pairs.append((i, best_j))
                start = best_j + 1
    out: list[tuple[int | None, int | None]] = []
    i = j = 0
    for pi, pj in pairs:
        out.extend((k, None) for k in range(i, pi))
        out.extend((None, k) for k in range(j, pj))
        out.append((pi, pj))
        i, j = pi + 1, pj + 1
    out.extend((k, None) for k in range(i, len(xs)))
    out.extend((None, k) for k in range(j, len(ys)))
    return out


def similarity(a: str, b: str, floor: float = 0.0) -> float:
    """Word-level similarity in [0, 1] (difflib ratio over words and punctuation; whitespace
    would make any two sentences look alike); cheap bounds skip hopeless pairs."""
    if a == b:
        return 1.0
    m = _matcher([t for t in tokens(a) if not t.isspace()], [t for t in tokens(b) if not t.isspace()])
    if m.real_quick_ratio() < floor or m.quick_ratio() < floor:
        return 0.0
    return m.ratio()


def _matcher(a: Sequence[Any], b: Sequence[Any]) -> difflib.SequenceMatcher:
    # autojunk off: with it, frequent tokens (spaces, "the") in texts over 200 items are ignored.
    return difflib.SequenceMatcher(None, a, b, autojunk=False)


# --- small helpers -----------------------------------------------------------------------------


def _s(v: Any) -> str:
    return "" if v is None else v if isinstance(v, str) else str(v)


def _list(v: Any) -> list[Any]:
    return [x for x in v if isinstance(x, dict)] if isinstance(v, list) else []


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _json(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False, sort_keys=True, default=str)


def _pretty(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False, indent=2, sort_keys=True, default=str)


def _parse_args(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def _canonical_args(v: Any) -> str:
    return _json(_parse_args(v))


def _plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"


def _clip(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
