"""Anthropic Messages API (``POST /v1/messages``), plain and streamed (SSE).

Streams are folded back into the exact ``Message`` object a non-streaming call returns,
following the rules of the official SDK's ``accumulate_event``: blocks by ``index``,
text/thinking deltas appended, ``input_json_delta`` fragments concatenated and parsed at
the end, ``signature_delta`` replacing, ``message_delta`` overwriting top-level fields and
the non-null usage counters.
"""

from __future__ import annotations

import json
from typing import Any

from prompttap.collector.apis import pricing
from prompttap.collector.apis.base import (
    Exchange,
    Understanding,
    as_count,
    as_dict,
    as_index,
    as_list,
    as_str,
    join_notes,
    json_text,
    load_json,
    load_json_object,
    message,
    parse_note,
    read_error_or_empty,
)
from prompttap.collector.apis.timing import ChunkClock, sse_events_at, tokens_per_second

API = "anthropic.messages"
PROVIDER = "anthropic"

_PARAMS = (
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "tool_choice",
    "thinking",
    "metadata",
    "service_tier",
    "output_config",
    "output_format",
)


def understand_messages(x: Exchange) -> Understanding:
    """Understand one Messages API exchange; never raises.

    Token counts follow the OpenTelemetry GenAI convention: ``input_tokens`` is the total
    input, ``input_tokens + cache_read_input_tokens + cache_creation_input_tokens``
    (Anthropic's own ``input_tokens`` excludes cached input); ``cached_tokens`` is
    ``cache_read_input_tokens``; ``reasoning_tokens`` is
    ``output_tokens_details.thinking_tokens`` when reported.
    """
    u = Understanding(api=API, provider=PROVIDER)
    with parse_note(u, "request"):
        _read_request(x, u)
    with parse_note(u, "response"):
        _read_response(x, u)
    return u


# -- request ---------------------------------------------------------------------------


def _read_request(x: Exchange, u: Understanding) -> None:
    req = load_json_object(x.request_body)
    u.model = as_str(req.get("model"))
    u.stream = req.get("stream") is True
    u.params = {k: req[k] for k in _PARAMS if k in req}
    u.system_prompt = _system_text(req.get("system"))
    u.messages = _messages(req.get("messages"))
    u.tools = _tools(req.get("tools"))


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    return "\n".join(as_str(b.get("text")) for b in as_list(system) if isinstance(b, dict) and b.get("type") == "text")


def _messages(raw: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    tool_names: dict[str, str] = {}  # tool_use id -> name, to name the tool results
    for m in as_list(raw):
        if not isinstance(m, dict):
            continue
        role = as_str(m.get("role")) or "user"
        content = m.get("content")
        if isinstance(content, str):
            out.append(message(role, content))
            continue
        emitted = len(out)
        blocks: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []
        for b in as_list(content):
            if not isinstance(b, dict):
                continue
            kind = b.get("type")
            if kind == "tool_result":
                # A tool result is its own "tool" message; the user's other blocks around it
                # stay a user message, in their original order.
                if blocks:
                    out.append(_from_blocks(role, blocks))
                    blocks = []
                out.append(_tool_result(b, tool_names))
            elif kind == "tool_use":
                call = _tool_call(b)
                tool_names[call["id"]] = call["name"]
                calls.append(call)
            else:
                blocks.append(b)
        if blocks or calls or len(out) == emitted:
            out.append(_from_blocks(role, blocks, calls))
    return out


def _from_blocks(role: str, blocks: list[dict[str, Any]], calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    parts = [_part(b) for b in blocks]
    text = "\n".join(p["text"] for p in parts if p["type"] == "text")
    if all(p["type"] == "text" for p in parts):
        parts = []  # plain text: ``content`` says it all
    return message(role, text, parts, calls)


def _tool_result(b: dict[str, Any], tool_names: dict[str, str]) -> dict[str, Any]:
    call_id = as_str(b.get("tool_use_id"))
    content = b.get("content")
    if isinstance(content, str):
        msg = message("tool", content)
    else:
        msg = _from_blocks("tool", [c for c in as_list(content) if isinstance(c, dict)])
    if b.get("is_error") is True:
        msg["parts"].append({"type": "tool_result", "is_error": True})
    msg["tool_call_id"] = call_id
    msg["name"] = tool_names.get(call_id)
    return msg


def _part(b: dict[str, Any]) -> dict[str, Any]:
    kind = b.get("type")
    if kind == "text":
        return {"type": "text", "text": as_str(b.get("text"))}
    if kind == "image":
        return {"type": "image", **_source(b.get("source"))}
    if kind == "document":
        part = {"type": "file", **_source(b.get("source"))}
        if isinstance(b.get("title"), str):
            part["title"] = b["title"]
        return part
    if kind == "thinking":
        return {"type": "thinking", "text": as_str(b.get("thinking")), "signature": as_str(b.get("signature"))}
    if kind == "redacted_thinking":
        return {"type": "thinking", "redacted": True, "data": as_str(b.get("data"))}
    return {**b, "type": as_str(kind) or "unknown"}  # server tools, search results...: kept as sent


def _source(src: Any) -> dict[str, Any]:
    src = as_dict(src)
    kind = src.get("type")
    if kind == "base64":
        media = as_str(src.get("media_type"))
        return {"url": f"data:{media};base64,{as_str(src.get('data'))}", "media_type": media}
    if kind == "url":
        return {"url": as_str(src.get("url"))}
    if kind == "file":
        return {"file_id": as_str(src.get("file_id"))}
    if kind == "text":
        return {"text": as_str(src.get("data")), "media_type": as_str(src.get("media_type"))}
    if kind == "content":
        inner = src.get("content")
        if isinstance(inner, str):
            return {"text": inner}
        return {"text": "\n".join(as_str(c.get("text")) for c in as_list(inner) if isinstance(c, dict))}
    return {"source": src}


def _tool_call(b: dict[str, Any], raw_args: str | None = None) -> dict[str, Any]:
    args = raw_args if raw_args is not None else json_text(b.get("input", {}))
    return {"id": as_str(b.get("id")), "name": as_str(b.get("name")), "arguments": args}


def _tools(raw: Any) -> list[dict[str, Any]]:
    out = []
    for t in as_list(raw):
        if not isinstance(t, dict):
            continue
        tool = {
            "name": as_str(t.get("name")),
            "description": as_str(t.get("description")),
            "parameters": as_dict(t.get("input_schema")),
        }
        if t.get("type") not in (None, "custom"):
            tool["type"] = t["type"]  # server tools (web_search_..., bash_...) have no schema
        out.append(tool)
    return out


# -- response --------------------------------------------------------------------------


def _read_response(x: Exchange, u: Understanding) -> None:
    if read_error_or_empty(x, u):
        return
    if _is_sse(x):
        _read_stream(x, u)
    else:
        u.response = load_json(x.response_body)
        _read_message(u.response, u)


def _is_sse(x: Exchange) -> bool:
    if "event-stream" in x.response_content_type.lower():
        return True
    head = x.response_body.lstrip()[:6]
    return head.startswith((b"event:", b"data:"))


def _read_message(msg: Any, u: Understanding, raw_args: dict[int, str] | None = None) -> None:
    if not isinstance(msg, dict):
        raise ValueError("body is not a JSON object")
    u.response_model = as_str(msg.get("model"))
    u.response_id = as_str(msg.get("id"))
    u.finish_reason = as_str(msg.get("stop_reason"))
    texts: list[str] = []
    for i, b in enumerate(as_list(msg.get("content"))):
        if not isinstance(b, dict):
            continue
        if b.get("type") == "text":
            texts.append(as_str(b.get("text")))
        elif b.get("type") == "tool_use":
            u.output_tool_calls.append(_tool_call(b, (raw_args or {}).get(i)))
    u.output_text = "".join(texts)  # citation answers split one text over many blocks

    usage = as_dict(msg.get("usage"))
    input_keys = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    counts = [as_count(usage.get(k)) for k in input_keys]
    if any(c is not None for c in counts):
        u.input_tokens = sum(c or 0 for c in counts)
    u.output_tokens = as_count(usage.get("output_tokens"))
    u.cached_tokens = as_count(usage.get("cache_read_input_tokens"))
    u.reasoning_tokens = as_count(as_dict(usage.get("output_tokens_details")).get("thinking_tokens"))
    u.cost_usd = pricing.cost_usd(
        PROVIDER,
        u.response_model or u.model,
        u.input_tokens,
        u.output_tokens,
        u.cached_tokens,
        cache_write_tokens=as_count(usage.get("cache_creation_input_tokens")),
    )


def _read_stream(x: Exchange, u: Understanding) -> None:
    events, _ = sse_events_at(x.response_body)
    clock = ChunkClock(x.stream_timing, len(x.response_body))
    msg: dict[str, Any] | None = None
    blocks: dict[int, dict[str, Any]] = {}
    json_bufs: dict[int, list[str]] = {}
    first_ms = last_ms = None
    stopped = False
    notes: list[str] = []
    error: dict[str, Any] | None = None

    for ev, end in events:
        u.chunk_count += 1
        try:
            data = json.loads(ev.data)
        except ValueError:
            notes.append(f"event {u.chunk_count} data is not JSON")
            continue
        if not isinstance(data, dict):
            continue
        kind = data.get("type") or ev.event
        content = False
        if kind == "message_start":
            msg = as_dict(data.get("message"))
        elif kind == "content_block_start":
            block = as_dict(data.get("content_block"))
            i = as_index(data.get("index"))
            blocks[len(blocks) if i is None else i] = block
            content = block.get("type") not in ("text", "thinking") or bool(block.get("text") or block.get("thinking"))
        elif kind == "content_block_delta":
            i = as_index(data.get("index"))
            if i is None:
                i = len(blocks) - 1  # no index: the latest block
            if i in blocks:
                content = _apply_delta(blocks[i], as_dict(data.get("delta")), json_bufs.setdefault(i, []))
        elif kind == "message_delta":
            if msg is None:
                msg = {}
            for k, v in as_dict(data.get("delta")).items():
                if k != "container" or v is not None:
                    msg[k] = v
            usage = msg["usage"] = as_dict(msg.get("usage"))
            usage.update((k, v) for k, v in as_dict(data.get("usage")).items() if v is not None)
        elif kind == "message_stop":
            stopped = True
        elif kind == "error":
            error = as_dict(data.get("error"))
            notes.append(f"stream error: {as_str(error.get('type'))}: {as_str(error.get('message'))}".rstrip(": "))
        if content:
            t = clock.at(end)
            first_ms = t if first_ms is None else first_ms
            last_ms = t

    raw_args: dict[int, str] = {}
    for i, parts in json_bufs.items():
        text = "".join(parts)
        if not text.strip():
            continue  # no fragments: the block keeps the input it started with
        try:
            blocks[i]["input"] = json.loads(text)
        except ValueError:
            raw_args[i] = text  # cut mid-JSON: report what arrived, never a guess
            if stopped:
                notes.append(f"tool input of block {i} is not valid JSON")

    u.incomplete = not stopped
    u.parse_error = join_notes(u.parse_error, "; ".join(notes))
    if msg is None and not blocks:
        u.response = {"type": "error", "error": error} if error is not None else None
        return
    msg = msg if msg is not None else {}
    msg["content"] = [blocks[i] for i in sorted(blocks)]
    if error is not None:
        msg["error"] = error  # the stream ended on an error event: keep it with the message
    u.response = msg
    order = sorted(blocks)
    _read_message(msg, u, {order.index(i): a for i, a in raw_args.items()})
    u.ttft_ms = first_ms
    u.tokens_per_second = tokens_per_second(u.output_tokens, first_ms, last_ms)


def _apply_delta(block: dict[str, Any], delta: dict[str, Any], json_buf: list[str]) -> bool:
    """Fold one delta into its block; True when it carried content."""
    kind = delta.get("type")
    if kind == "text_delta":
        text = as_str(delta.get("text"))
        block["text"] = as_str(block.get("text")) + text
        return bool(text)
    if kind == "thinking_delta":
        text = as_str(delta.get("thinking"))
        block["thinking"] = as_str(block.get("thinking")) + text
        return bool(text)
    if kind == "input_json_delta":
        frag = as_str(delta.get("partial_json"))
        json_buf.append(frag)
        return bool(frag)
    if kind == "signature_delta":
        block["signature"] = as_str(delta.get("signature"))
        return False
    if kind == "citations_delta":
        cites = block.get("citations")
        if isinstance(cites, list):
            cites.append(delta.get("citation"))
        else:
            block["citations"] = [delta.get("citation")]
        return True
    return False
