"""OpenAI message content, tool calls and tool definitions in the normalized shape
(``base.Understanding``), shared by chat, legacy completions and the Responses API.

- ``parts`` is empty for text-only messages; otherwise it lists every part in order, text
  parts included, so interleaving survives. Image URLs (data URLs too) are kept; base64
  audio and file payloads are dropped, ``data_length`` keeps their size.
- A legacy ``function_call`` becomes one tool call with id "".
"""

from __future__ import annotations

import json
from typing import Any

from prompttap.collector.apis.base import as_dict, as_index, as_list, as_str, message


def text_and_parts(value: Any) -> tuple[str, list[dict[str, Any]]]:
    """A message's text (text parts joined with newlines) and all its parts in order."""
    if value is None:
        return "", []
    if isinstance(value, str):
        return value, [{"type": "text", "text": value}]
    items = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
    parts = [p for p in map(_part, items) if p is not None]
    return "\n".join(p["text"] for p in parts if p["type"] == "text"), parts


def _part(p: Any) -> dict[str, Any] | None:
    if isinstance(p, str):
        return {"type": "text", "text": p}
    if not isinstance(p, dict):
        return None
    kind = p.get("type")
    if kind in ("text", "input_text", "output_text"):
        return {"type": "text", "text": as_str(p.get("text"))}
    if kind in ("image_url", "input_image"):
        src = p.get("image_url")
        image: dict[str, Any] = {
            "type": "image",
            "url": as_str(src.get("url") if isinstance(src, dict) else src),
        }
        detail = (src if isinstance(src, dict) else p).get("detail")
        if isinstance(detail, str):
            image["detail"] = detail
        if isinstance(p.get("file_id"), str):
            image["file_id"] = p["file_id"]
        return image
    if kind == "input_audio":
        src = as_dict(p.get("input_audio"))
        return {"type": "audio", "format": as_str(src.get("format")), "data_length": len(as_str(src.get("data")))}
    if kind in ("file", "input_file"):
        src = as_dict(p.get("file")) if kind == "file" else p
        file: dict[str, Any] = {"type": "file"}
        for key in ("file_id", "filename", "file_url"):
            if isinstance(src.get(key), str):
                file[key] = src[key]
        if isinstance(src.get("file_data"), str):
            file["data_length"] = len(src["file_data"])
        return file
    if kind == "refusal":
        return {"type": "refusal", "text": as_str(p.get("refusal"))}
    return {**p, "type": kind if isinstance(kind, str) else "unknown"}


def settle(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Text-only messages carry no parts: their text is all in ``content``."""
    for m in msgs:
        if all(p.get("type") == "text" for p in m["parts"]):
            m["parts"] = []
    return msgs


def input_messages(value: Any) -> list[dict[str, Any]]:
    """One user message per prompt/input text; token-id inputs keep only their count."""
    if isinstance(value, str):
        return [message("user", value)]
    if not isinstance(value, list):
        return []
    if value and all(as_index(v) is not None for v in value):
        return [message("user", "", [{"type": "tokens", "count": len(value)}])]
    out = []
    for v in value:
        if isinstance(v, str):
            out.append(message("user", v))
        elif isinstance(v, list):
            out.append(message("user", "", [{"type": "tokens", "count": len(v)}]))
    return out


def tool_calls(calls: Any, function_call: Any = None) -> list[dict[str, Any]]:
    """Chat ``tool_calls`` (function and custom tools) and a legacy ``function_call`` as tool calls."""
    out = []
    for c in as_list(calls):
        if not isinstance(c, dict):
            continue
        fn = c.get("function") if isinstance(c.get("function"), dict) else as_dict(c.get("custom"))
        args = fn.get("arguments") if "arguments" in fn else fn.get("input")
        out.append({"id": as_str(c.get("id")), "name": as_str(fn.get("name")), "arguments": args_text(args)})
    if isinstance(function_call, dict):
        name, args = function_call.get("name"), function_call.get("arguments")
        out.append({"id": "", "name": as_str(name), "arguments": args_text(args)})
    return out


def tools(*lists: Any) -> list[dict[str, Any]]:
    """Tool definitions as {name, description, parameters}; built-in tools are named by type."""
    out = []
    for t in (t for lst in lists for t in as_list(lst)):
        if not isinstance(t, dict):
            continue
        spec = t.get("function") if isinstance(t.get("function"), dict) else t
        if t.get("type") == "custom" and isinstance(t.get("custom"), dict):
            spec = t["custom"]
        params = spec.get("parameters")
        out.append(
            {
                "name": as_str(spec.get("name")) or as_str(t.get("type")),
                "description": as_str(spec.get("description")),
                "parameters": params if isinstance(params, dict) else None,
            }
        )
    return out


def args_text(v: Any) -> str:
    """Tool-call arguments as JSON text; some compatible servers send an object."""
    if isinstance(v, str):
        return v
    if v is None:
        return ""
    try:
        return json.dumps(v, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return ""


def opt_str(v: Any) -> str | None:
    """``v`` if it is a string, else None."""
    return v if isinstance(v, str) else None
