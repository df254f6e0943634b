"""Shaping stored captures for the pages and their JSON twins: chat messages, safe image
sources, pretty JSON, template slots, thread turn-by-turn changes.

Everything a capture holds is untrusted. Nothing here produces markup: it returns plain data
that the templates render with autoescape on. Images are the one place a captured value
becomes an attribute, and ``safe_image_src`` decides which values may.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import re
from typing import Any
from urllib.parse import urlsplit

import orjson
from fastapi import Request

from prompttap.inspector import queries
from prompttap.schemas.templates import template_of

_DATA_IMAGE = re.compile(r"^data:image/(png|jpeg|gif|webp);base64,([A-Za-z0-9+/]+={0,2})$")
_PLACEHOLDER = re.compile(r"\{\{([a-z_]+)\}\}")
_VARIABLE_KIND = {"context": "context", "memories": "memory"}  # placeholder name -> variable kind
_MULTI_KINDS = frozenset({"context", "memory"})  # one placeholder, several values
MAX_DIFF_WORDS = 20_000


# --- one capture ---------------------------------------------------------------------------------


def safe_image_src(url: Any) -> str | None:
    """``url`` if a browser may load it as an image: base64 PNG/JPEG/GIF/WebP data URLs and
    http(s) URLs. SVG (scriptable), other data URLs and every other scheme give None (shown as text)."""
    if not isinstance(url, str) or len(url) > 20 * 2**20:
        return None
    if url.startswith("data:"):
        m = _DATA_IMAGE.match(url)
        if not m:
            return None
        try:
            base64.b64decode(m.group(2), validate=True)
        except (binascii.Error, ValueError):
            return None
        return url
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.netloc and not any(c in url for c in " \t\r\n\"'<>`\\"):
        return url
    return None


def pretty_json(value: Any) -> str:
    """Indented JSON for a value, or for JSON text; other text comes back unchanged."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
    except TypeError:
        return str(value)


def pretty_body(text: str | None, encoding: str | None) -> str:
    if not text:
        return ""
    if encoding == "base64":
        return f"(binary body, {len(text) * 3 // 4} bytes, base64)\n{text[:4000]}"
    return pretty_json(text) if text.lstrip()[:1] in ("{", "[") else text


def tool_call_view(call: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(call.get("id") or ""),
        "name": str(call.get("name") or ""),
        "arguments": pretty_json(call.get("arguments") if call.get("arguments") is not None else ""),
    }


def part_view(part: Any) -> dict[str, Any]:
    """A message part as the page shows it: text, a safe image, or the part as JSON text."""
    if not isinstance(part, dict):
        return {"kind": "json", "text": pretty_json(part)}
    kind = str(part.get("type") or "unknown")
    if kind == "text":
        return {"kind": "text", "text": str(part.get("text") or "")}
    if kind == "thinking":
        return {"kind": "thinking", "text": str(part.get("text") or part.get("data") or "")}
    if kind == "image":
        url = part.get("url")
        src = safe_image_src(url)
        label = _short_url(url) if isinstance(url, str) else pretty_json({k: v for k, v in part.items()})
        return {"kind": "image", "src": src, "text": label}
    return {"kind": "json", "type": kind, "text": pretty_json(part)}


def _short_url(url: str) -> str:
    return url if len(url) <= 200 else f"{url[:160]}… ({len(url)} characters)"


def message_view(m: Any, index: int) -> dict[str, Any]:
    if not isinstance(m, dict):
        return {"index": index, "role": "unknown", "content": pretty_json(m), "parts": [], "tool_calls": []}
    parts = [part_view(p) for p in (m.get("parts") or [])]
    has_text_part = any(p["kind"] == "text" for p in parts)
    return {
        "index": index,
        "role": str(m.get("role") or "unknown"),
        "name": str(m.get("name") or ""),
        "content": "" if has_text_part else str(m.get("content") or ""),
        "parts": parts,
        "tool_calls": [tool_call_view(c) for c in (m.get("tool_calls") or []) if isinstance(c, dict)],
        "tool_call_id": str(m.get("tool_call_id") or ""),
    }


def tool_view(tool: Any) -> dict[str, Any]:
    if not isinstance(tool, dict):
        return {"name": "", "description": "", "parameters": pretty_json(tool)}
    return {
        "name": str(tool.get("name") or tool.get("type") or ""),
        "description": str(tool.get("description") or ""),
        "parameters": pretty_json(tool.get("parameters") or {}),
    }


def chat_view(row: dict[str, Any]) -> dict[str, Any]:
    """The capture as a conversation: system prompt, messages, tools, then the answer."""
    messages = row.get("messages") if isinstance(row.get("messages"), list) else []
    return {
        "system_prompt": row.get("system_prompt") or "",
        "messages": [message_view(m, i) for i, m in enumerate(messages)],
        "tools": [tool_view(t) for t in (row.get("tools") or [])] if isinstance(row.get("tools"), list) else [],
        "output_text": row.get("output_text") or "",
        "output_tool_calls": [tool_call_view(c) for c in (row.get("output_tool_calls") or []) if isinstance(c, dict)],
    }


def langfuse_trace_url(options: dict[str, Any], trace_id: str) -> str | None:
    base = (options.get("langfuse_url") or "").rstrip("/")
    if not base or not trace_id:
        return None
    return f"{base}/trace/{trace_id}"  # Langfuse redirects /trace/<id> to the trace in its project


def capture_links(request: Request, row: dict[str, Any]) -> dict[str, Any]:
    client = request.app.state.store
    options = request.app.state.options or {}
    thread = row.get("thread_id") or ""
    template = row.get("prompt_template_id") or ""
    previous = queries.previous_in_thread(client, row)
    return {
        "thread": f"/threads/{thread}" if thread else None,
        "template": f"/templates/{template}" if template else None,
        "previous_in_thread": f"/captures/{previous}" if previous else None,
        "previous_in_thread_id": previous,
        "replay_of": f"/captures/{row['replay_of']}" if row.get("replay_of") else None,
        "replays": [r["id"] for r in queries.replays_of(client, row["id"])],
        "langfuse_trace": langfuse_trace_url(options, str(row.get("trace_id") or "")),
        "compare_candidates": f"/api/captures/{row['id']}/compare-candidates",
        "diff_with_original": f"/diff?a={row['replay_of']}&b={row['id']}" if row.get("replay_of") else None,
    }


# --- templates -----------------------------------------------------------------------------------


def template_slots(masked: str, variables: list[tuple[str, str]]) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """Split ``masked`` into constant text and variable slots, and map each slot to its values.

    Slots are keyed ``kind#n`` (the n-th placeholder of that kind), so members of a group line
    up even when one has no retrieved context. A ``{{…}}`` that no variable fills is
    constant text (a prompt may contain braces of its own)."""
    segments: list[dict[str, Any]] = []
    values: dict[str, list[str]] = {}
    seen: dict[str, int] = {}
    pos = vi = 0
    for m in _PLACEHOLDER.finditer(masked):
        name = m.group(1)
        kind = _VARIABLE_KIND.get(name, name)
        if vi >= len(variables) or variables[vi][0] != kind:
            continue
        if m.start() > pos:
            segments.append({"text": masked[pos : m.start()]})
        seen[name] = seen.get(name, 0) + 1
        slot = f"{name}#{seen[name]}"
        taken = [variables[vi][1]]
        vi += 1
        while kind in _MULTI_KINDS and vi < len(variables) and variables[vi][0] == kind:
            taken.append(variables[vi][1])
            vi += 1
        segments.append({"slot": slot, "kind": name, "placeholder": m.group(0)})
        values[slot] = taken
        pos = m.end()
    if pos < len(masked):
        segments.append({"text": masked[pos:]})
    return segments, values


def template_list(client: Any, flt: queries.CaptureFilter, limit: int) -> list[dict[str, Any]]:
    rows = queries.template_groups(client, flt, limit)
    for row in rows:
        sample = row.pop("sample_system_prompt", "") or ""
        masked = template_of(sample).masked
        row["preview"] = masked[:240]
    return rows


def template_detail(client: Any, template_id: str, limit: int) -> dict[str, Any] | None:
    members = queries.template_members(client, template_id, limit)
    if not members:
        return None
    newest = template_of(members[0]["system_prompt"] or "")
    segments, _ = template_slots(newest.masked, newest.variables)
    slots = [s["slot"] for s in segments if "slot" in s]
    rows = []
    for member in members:
        tpl = template_of(member.pop("system_prompt") or "")
        _, values = template_slots(tpl.masked, tpl.variables)
        for slot in values:
            if slot not in slots:
                slots.append(slot)  # a slot the newest member does not have (e.g. no context there)
        rows.append({**member, "values": values})
    distinct = {slot: len({tuple(r["values"].get(slot, [])) for r in rows}) for slot in slots}
    return {
        "id": template_id,
        "masked": newest.masked,
        "segments": segments,
        "slots": slots,
        "distinct_values": distinct,
        "members": rows,
    }


# --- threads -------------------------------------------------------------------------------------


def _text_of(m: dict[str, Any]) -> str:
    text = str(m.get("content") or "")
    extra = [f"[{p.get('type')}]" for p in (m.get("parts") or []) if isinstance(p, dict) and p.get("type") != "text"]
    calls = [f"{c.get('name')}({c.get('arguments')})" for c in (m.get("tool_calls") or []) if isinstance(c, dict)]
    return " ".join(x for x in (text, *extra, *calls) if x)


def _signature(m: Any) -> str:
    return orjson.dumps(m, option=orjson.OPT_SORT_KEYS, default=str).decode()


def _brief(m: Any) -> dict[str, Any]:
    if not isinstance(m, dict):
        return {"role": "unknown", "text": pretty_json(m)}
    return {"role": str(m.get("role") or "unknown"), "text": _text_of(m)}


def word_diff(a: str, b: str) -> list[dict[str, str]]:
    """Word-level changes from ``a`` to ``b``: [{"op": "equal"|"insert"|"delete", "text"}]."""
    wa, wb = re.split(r"(\s+)", a), re.split(r"(\s+)", b)
    if len(wa) + len(wb) > 2 * MAX_DIFF_WORDS:
        return [{"op": "delete", "text": a}, {"op": "insert", "text": b}]
    out: list[dict[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, wa, wb, autojunk=False).get_opcodes():
        if op == "equal":
            out.append({"op": "equal", "text": "".join(wa[i1:i2])})
            continue
        if i2 > i1:
            out.append({"op": "delete", "text": "".join(wa[i1:i2])})
        if j2 > j1:
            out.append({"op": "insert", "text": "".join(wb[j1:j2])})
    return out


def turn_changes(prev: dict[str, Any] | None, cur: dict[str, Any]) -> dict[str, Any]:
    """What the app changed in the prompt since the previous capture of its thread."""
    msgs = cur.get("messages") if isinstance(cur.get("messages"), list) else []
    if prev is None:
        return {"first": True, "added": [_brief(m) for m in msgs], "dropped": [], "rewritten": [], "kept": 0}
    old = prev.get("messages") if isinstance(prev.get("messages"), list) else []
    added: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    rewritten: list[dict[str, Any]] = []
    kept = 0
    matcher = difflib.SequenceMatcher(None, [_signature(m) for m in old], [_signature(m) for m in msgs], autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            kept += i2 - i1
            continue
        pairs = min(i2 - i1, j2 - j1) if op == "replace" else 0
        for k in range(pairs):
            before, after = _brief(old[i1 + k]), _brief(msgs[j1 + k])
            rewritten.append(
                {
                    "role": after["role"],
                    "before": before["text"],
                    "after": after["text"],
                    "diff": word_diff(before["text"], after["text"]),
                }
            )
        dropped += [_brief(m) for m in old[i1 + pairs : i2]]
        added += [_brief(m) for m in msgs[j1 + pairs : j2]]
    prev_answer = (prev.get("output_text") or "").strip()
    carried = bool(prev_answer) and any(a["role"] == "assistant" and a["text"].strip() == prev_answer for a in added)
    system_before, system_after = prev.get("system_prompt") or "", cur.get("system_prompt") or ""
    return {
        "first": False,
        "added": added,
        "dropped": dropped,
        "rewritten": rewritten,
        "kept": kept,
        "answer_carried_over": carried,
        "system_changed": system_before != system_after,
        "system_diff": word_diff(system_before, system_after) if system_before != system_after else [],
    }


def thread_detail(client: Any, thread_id: str, limit: int) -> dict[str, Any] | None:
    captures = queries.thread_captures(client, thread_id, limit)
    if not captures:
        return None
    turns = []
    prev = None
    for cap in captures:
        changes = turn_changes(prev, cap)
        turns.append(
            {
                "id": cap["id"],
                "started_at": cap["started_at"],
                "route": cap["route"],
                "api": cap["api"],
                "model": cap["model"],
                "status_code": cap["status_code"],
                "outcome": cap["outcome"],
                "duration_ms": cap["duration_ms"],
                "input_tokens": cap["input_tokens"],
                "output_tokens": cap["output_tokens"],
                "cost_usd": cap["cost_usd"],
                "prompt_template_id": cap["prompt_template_id"],
                "message_count": len(cap["messages"]) if isinstance(cap.get("messages"), list) else 0,
                "system_prompt_chars": len(cap.get("system_prompt") or ""),
                "answer": cap.get("output_text") or "",
                "answer_tool_calls": [
                    tool_call_view(c) for c in (cap.get("output_tool_calls") or []) if isinstance(c, dict)
                ],
                "changes": changes,
            }
        )
        prev = cap
    return {"id": thread_id, "turns": turns, "truncated": len(captures) == limit}
