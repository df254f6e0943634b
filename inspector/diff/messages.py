"""The message segments: the history before the latest user message, that message (the turn),
and the tool steps after it (agent loops). Runs of messages are aligned on fingerprints (role,
normalized content, tool calls), so a sliding window shows as dropped/added turns and a
shortened copy of a message as ``truncated``."""

from __future__ import annotations

import json
from typing import Any, Literal

from prompttap.inspector.diff.model import HistoryDiff, MessageChange, MessageView, TurnDiff, TurnStatus
from prompttap.inspector.diff.text import matcher, pair_up, similarity, truncation, word_ops
from prompttap.inspector.diff.values import as_str, canonical_args, dicts, plural

MESSAGE_SIMILARITY = 0.5  # a message this close to one on the other side (in a replaced run) is "changed"


def diff_conversation(
    msgs_a: list[dict[str, Any]], msgs_b: list[dict[str, Any]]
) -> tuple[HistoryDiff, TurnDiff, HistoryDiff]:
    """The history, the latest user message and the tool steps after it, of two message lists."""
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
    return history, turn, steps


def split_messages(
    messages: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], int | None, list[dict[str, Any]]]:
    """(history before the latest user message, that message's index, messages after it)."""
    for i in range(len(messages) - 1, -1, -1):
        if as_str(messages[i].get("role")) == "user":
            return messages[:i], i, messages[i + 1 :]
    return [], None, list(messages)  # no user turn: everything is tool steps / assistant prefill


def message_view(m: dict[str, Any]) -> MessageView:
    calls = [
        {"id": as_str(c.get("id")), "name": as_str(c.get("name")), "arguments": as_str(c.get("arguments"))}
        for c in dicts(m.get("tool_calls"))
    ]
    return MessageView(
        role=as_str(m.get("role")),
        content=as_str(m.get("content")),
        tool_calls=calls,
        tool_call_id=m.get("tool_call_id") or None,
        name=m.get("name") or None,
        attachments=[_describe_part(p) for p in dicts(m.get("parts")) if p.get("type") != "text"],
    )


def _describe_part(p: dict[str, Any]) -> str:
    kind = as_str(p.get("type")) or "part"
    if p.get("redacted"):
        return f"{kind} (redacted)"
    url = as_str(p.get("url"))
    if url.startswith("data:"):
        return f"{kind}: {url[: url.find(',') if ',' in url else 40]} ({len(url):,} chars)"
    if url:
        return f"{kind}: {url[:120]}"
    for key in ("title", "file_id", "text"):
        if p.get(key):
            text = " ".join(as_str(p[key]).split())
            return f"{kind}: {text[:80]}{'…' if len(text) > 80 else ''}"
    if p.get("is_error"):
        return f"{kind}: error"
    return kind


def fingerprint(m: dict[str, Any]) -> str:
    """What makes two messages "the same turn": ids and whitespace do not count."""
    calls = [(as_str(c.get("name")), canonical_args(c.get("arguments"))) for c in dicts(m.get("tool_calls"))]
    parts = [{k: v for k, v in p.items() if k != "id"} for p in dicts(m.get("parts"))]
    return json.dumps(
        [as_str(m.get("role")), " ".join(as_str(m.get("content")).split()), calls, m.get("name") or "", parts],
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
    for tag, i1, i2, j1, j2 in matcher(fa, fb).get_opcodes():
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
        status="absent" if not ma and not mb else "identical" if ma == mb else "changed",
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
        return f"{label} identical ({d.a_count} {plural(d.a_count, 'message')})."
    parts = []
    if d.dropped:
        parts.append(f"{d.dropped} {'oldest ' if d.dropped_earliest else ''}{plural(d.dropped, 'message')} dropped")
    if d.added:
        parts.append(f"{d.added} {plural(d.added, 'message')} added")
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
    calls_a = [(c["name"], canonical_args(c["arguments"])) for c in a.tool_calls]
    calls_b = [(c["name"], canonical_args(c["arguments"])) for c in b.tool_calls]
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
    if as_str(ma.get("role")) != as_str(mb.get("role")):
        return 0.0
    ca, cb = as_str(ma.get("content")), as_str(mb.get("content"))
    if truncation(ca, cb):
        return 1.0
    calls_a = " ".join(f"{c.get('name')} {c.get('arguments')}" for c in dicts(ma.get("tool_calls")))
    calls_b = " ".join(f"{c.get('name')} {c.get('arguments')}" for c in dicts(mb.get("tool_calls")))
    return similarity(f"{ca}\n{calls_a}", f"{cb}\n{calls_b}", MESSAGE_SIMILARITY)


def diff_turn(ma: dict[str, Any] | None, mb: dict[str, Any] | None) -> TurnDiff:
    va = message_view(ma) if ma is not None else None
    vb = message_view(mb) if mb is not None else None
    identical = ma == mb
    if va is None and vb is None:
        return TurnDiff("absent", True, None, None, [], [], "No user message.")
    if va is None:
        return TurnDiff("only_b", False, va, vb, [], [], "User message only in B.")
    if vb is None:
        return TurnDiff("only_a", False, va, vb, [], [], "User message only in A.")
    ops = word_ops(va.content, vb.content) if va.content != vb.content else []
    notes = _message_notes(va, vb)
    cut = truncation(va.content, vb.content)
    if cut:
        notes.insert(0, f"{cut:,} characters cut")
    status: TurnStatus
    if identical:
        status, summary = "identical", "Latest user message identical."
    elif va.content == vb.content:
        status = "details_changed"
        summary = "Latest user message: same text, " + (", ".join(notes) or "details differ") + "."
    elif cut:
        status, summary = "truncated", "Latest user message truncated."
    else:
        status, summary = "changed", "Latest user message differs."
    return TurnDiff(status, identical, va, vb, ops, notes, summary)
