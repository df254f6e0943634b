"""OpenAI Responses API (``POST /v1/responses``), plain and streamed.

- ``instructions`` and system/developer input items go to ``system_prompt`` only, joined
  with a blank line; ``messages`` holds the user/assistant/tool turns.
- Consecutive assistant-side input items (assistant message, reasoning, function calls)
  form one assistant message, as one chat turn would.
- A stream is read from its terminal event's full response; when the stream was cut before
  it, the response is rebuilt from the item events that did arrive.
"""

from __future__ import annotations

from typing import Any

from prompttap.collector.apis.base import Exchange, Understanding, as_dict, as_index, as_list, as_str, message
from prompttap.collector.apis.openai_common import (
    cost,
    count,
    data_events,
    read_request,
    response_json,
    response_kind,
    run,
    time_stream,
)
from prompttap.collector.apis.openai_content import args_text, opt_str, settle, text_and_parts, tools

RESPONSES_PARAMS = (
    "temperature",
    "top_p",
    "max_output_tokens",
    "max_tool_calls",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning",
    "text",
    "truncation",
    "top_logprobs",
    "include",
    "store",
    "background",
    "previous_response_id",
    "conversation",
    "stream_options",
    "service_tier",
    "user",
)

_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_LIFECYCLE = frozenset({"response.created", "response.in_progress", "response.queued"})


def understand_responses(x: Exchange) -> Understanding:
    """``POST /v1/responses``."""
    return run("openai.responses", x, _responses)


def _responses(x: Exchange, u: Understanding, notes: list[str]) -> None:
    req = read_request(x, u, notes, RESPONSES_PARAMS)
    system: list[str] = []
    instructions = req.get("instructions")
    if isinstance(instructions, str) and instructions:
        system.append(instructions)
    elif isinstance(instructions, list):  # a stored prompt's instructions come as items
        system.extend(m["content"] for m in _items(instructions, system) if m["content"])
    inp = req.get("input")
    if isinstance(inp, str):
        u.messages = [message("user", inp)]
    elif isinstance(inp, list):
        u.messages = settle(_items(inp, system))
    elif inp is not None:
        notes.append("request: input is not a string or a list")
    u.system_prompt = "\n\n".join(system)
    u.tools = tools(req.get("tools"))
    kind = response_kind(x, u, notes)
    if kind == "json":
        resp = response_json(x, notes)
        if resp is not None:
            u.response = resp
            _output(u, resp)
    elif kind == "sse":
        _stream(x, u, notes)
    elif kind == "none" and u.stream:
        u.incomplete = True
    cost(u)


# -- request: input items -----------------------------------------------------------------


def _items(items: list[Any], system: list[str]) -> list[dict[str, Any]]:
    """Responses input items as normalized messages (system/developer text into ``system``)."""
    out: list[dict[str, Any]] = []

    def turn() -> dict[str, Any]:
        if out and out[-1]["role"] == "assistant":
            return out[-1]
        out.append(message("assistant"))
        return out[-1]

    for it in items:
        if isinstance(it, str):
            out.append(message("user", it, [{"type": "text", "text": it}]))
            continue
        if not isinstance(it, dict):
            continue
        kind, role = it.get("type"), it.get("role")
        if kind in (None, "message") and isinstance(role, str):
            text, parts = text_and_parts(it.get("content"))
            if role in ("system", "developer"):
                if text:
                    system.append(text)
            elif role == "assistant":
                m = turn()
                m["content"] = "\n".join(t for t in (m["content"], text) if t)
                m["parts"].extend(parts)
            else:
                out.append(message(role, text, parts))
        elif kind in ("function_call", "custom_tool_call"):
            turn()["tool_calls"].append(_item_call(it))
        elif kind in ("function_call_output", "custom_tool_call_output"):
            text, parts = text_and_parts(it.get("output"))
            out.append(message("tool", text, parts, tool_call_id=opt_str(it.get("call_id"))))
        elif kind == "reasoning":
            turn()["parts"].append(_thinking(it))
        elif isinstance(kind, str) and kind.endswith("_call_output"):  # built-in tool results
            text, parts = text_and_parts(it.get("output"))
            out.append(message("tool", text, parts, tool_call_id=opt_str(it.get("call_id"))))
        elif isinstance(kind, str):  # built-in tool calls, item references: a marker, raw body has the rest
            turn()["parts"].append({"type": kind, "id": as_str(it.get("id"))})
    return out


def _thinking(item: dict[str, Any]) -> dict[str, Any]:
    texts = [as_str(s.get("text")) for s in as_list(item.get("summary")) if isinstance(s, dict)]
    if not any(texts):
        texts = [as_str(c.get("text")) for c in as_list(item.get("content")) if isinstance(c, dict)]
    part: dict[str, Any] = {"type": "thinking", "text": "\n".join(t for t in texts if t)}
    if isinstance(item.get("encrypted_content"), str):
        part["encrypted"] = True
    return part


def _item_call(it: dict[str, Any]) -> dict[str, Any]:
    args = it.get("arguments") if it.get("type") == "function_call" else it.get("input")
    return {
        "id": as_str(it.get("call_id")) or as_str(it.get("id")),
        "name": as_str(it.get("name")),
        "arguments": args_text(args),
    }


# -- response -----------------------------------------------------------------------------


def _output(u: Understanding, resp: dict[str, Any]) -> None:
    u.response_id = as_str(resp.get("id"))
    u.response_model = as_str(resp.get("model"))
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in as_list(resp.get("output")):
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            for p in as_list(item.get("content")):
                if isinstance(p, dict) and p.get("type") == "output_text" and isinstance(p.get("text"), str):
                    texts.append(p["text"])
        elif item.get("type") in ("function_call", "custom_tool_call"):
            calls.append(_item_call(item))
    u.output_text = "".join(texts)  # as the SDK's ``response.output_text``
    u.output_tool_calls = calls
    status = resp.get("status")
    if status == "completed":
        u.finish_reason = "tool_calls" if calls else "stop"
    elif status == "incomplete":
        u.finish_reason = as_str(as_dict(resp.get("incomplete_details")).get("reason")) or "incomplete"
    elif status in ("failed", "cancelled"):
        u.finish_reason = status
    usage = as_dict(resp.get("usage"))
    u.input_tokens = count(usage.get("input_tokens"))
    u.output_tokens = count(usage.get("output_tokens"))
    u.cached_tokens = count(as_dict(usage.get("input_tokens_details")).get("cached_tokens"))
    u.reasoning_tokens = count(as_dict(usage.get("output_tokens_details")).get("reasoning_tokens"))


def _stream(x: Exchange, u: Understanding, notes: list[str]) -> None:
    """Prefer the terminal event's full response; rebuild from item events when the stream was cut."""
    events, _ = data_events(x, u, notes)  # this API sends no [DONE]: the terminal event ends it
    final: dict[str, Any] | None = None
    snapshot: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    added: dict[int, dict[str, Any]] = {}
    finished: dict[int, dict[str, Any]] = {}
    first: int | None = None
    for ev, obj, end in events:
        if not isinstance(obj, dict):
            continue
        kind = obj["type"] if isinstance(obj.get("type"), str) else ev.event
        resp = obj.get("response")
        if kind in _TERMINAL and isinstance(resp, dict):
            final = resp
        elif kind in _LIFECYCLE and isinstance(resp, dict):
            snapshot = resp
        elif kind == "error":
            error = {k: v for k, v in obj.items() if k not in ("type", "sequence_number")}
        else:
            _item_event(kind, obj, added, finished)
        if first is None and _has_content(kind, obj):
            first = end
    resp_obj: dict[str, Any] | None
    if final is not None:
        resp_obj = final
    elif snapshot is None and not added and not finished:
        resp_obj = {"error": error} if error is not None else None
    else:
        resp_obj = dict(snapshot or {})
        resp_obj["output"] = [
            finished[i] if i in finished else added[i] for i in sorted(added.keys() | finished.keys())
        ]
        if error is not None and resp_obj.get("error") is None:
            resp_obj["error"] = error
    u.response = resp_obj
    if resp_obj is not None:
        _output(u, resp_obj)
    u.incomplete = final is None
    time_stream(x, u, first)


def _item_event(kind: str, ev: dict[str, Any], added: dict[int, Any], finished: dict[int, Any]) -> None:
    idx = as_index(ev.get("output_index"))
    if idx is None:
        return
    if kind in ("response.output_item.added", "response.output_item.done"):
        if isinstance(ev.get("item"), dict):
            (added if kind.endswith("added") else finished)[idx] = ev["item"]
        return
    item = added.get(idx)
    if item is None:  # an event for an item we never saw begin: nothing to attach it to
        return
    if kind == "response.function_call_arguments.delta":
        item["arguments"] = as_str(item.get("arguments")) + as_str(ev.get("delta"))
    elif kind == "response.function_call_arguments.done" and isinstance(ev.get("arguments"), str):
        item["arguments"] = ev["arguments"]
    elif kind in ("response.content_part.added", "response.content_part.done"):
        if isinstance(ev.get("part"), dict):
            _slot(item, "content", ev.get("content_index"), ev["part"], replace=True)
    elif kind in ("response.output_text.delta", "response.refusal.delta", "response.reasoning_text.delta"):
        ptype, key = {
            "response.output_text.delta": ("output_text", "text"),
            "response.refusal.delta": ("refusal", "refusal"),
            "response.reasoning_text.delta": ("reasoning_text", "text"),
        }[kind]
        part = _slot(item, "content", ev.get("content_index"), {"type": ptype, key: ""})
        part[key] = as_str(part.get(key)) + as_str(ev.get("delta"))
    elif kind == "response.output_text.done" and isinstance(ev.get("text"), str):
        _slot(item, "content", ev.get("content_index"), {"type": "output_text", "text": ""})["text"] = ev["text"]
    elif kind == "response.reasoning_summary_part.added" and isinstance(ev.get("part"), dict):
        _slot(item, "summary", ev.get("summary_index"), ev["part"], replace=True)
    elif kind == "response.reasoning_summary_text.delta":
        part = _slot(item, "summary", ev.get("summary_index"), {"type": "summary_text", "text": ""})
        part["text"] = as_str(part.get("text")) + as_str(ev.get("delta"))


def _slot(item: dict[str, Any], key: str, index: Any, part: dict[str, Any], replace: bool = False) -> dict[str, Any]:
    """The part at ``item[key][index]``, created from ``part`` if missing (or replaced).

    Indexes past the end append rather than pad, so a garbage index cannot allocate.
    """
    parts = item.get(key)
    if not isinstance(parts, list):
        parts = item[key] = []
    i = as_index(index)
    if i is None or i < 0 or i >= len(parts):
        parts.append(part)
        return part
    if replace or not isinstance(parts[i], dict):
        parts[i] = part
    return parts[i]


def _has_content(kind: str, ev: dict[str, Any]) -> bool:
    if kind in (
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
    ):
        return bool(as_str(ev.get("delta")))
    if kind == "response.output_item.added":
        return as_dict(ev.get("item")).get("type") in ("function_call", "custom_tool_call")
    return False
