"""Line formats: normalized capture rows as ``openai-chat``, ``anthropic`` and ``sharegpt``
training lines (and the chat part of ``langfuse`` items).

Tool-call ids are synthesized where the API had none and tool results paired with their
calls; parts a format cannot carry are dropped and counted for the report. The openai-chat
line is ``schemas.openai_chat``'s conversion (the one a span's Langfuse input uses too).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

import orjson

from prompttap.inspector.export.langfuse import dataset_item
from prompttap.inspector.export.request import ExportError
from prompttap.schemas.openai_chat import OpenAIChat, ToolCallIds, non_text_parts


def answer_message(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The captured answer as a normalized assistant message; none when there was no
    answer (a failed or cancelled capture must not teach an empty reply)."""
    calls = [c for c in row.get("output_tool_calls") or () if isinstance(c, dict)]
    if not row.get("output_text") and not calls:
        return []
    message = {
        "role": "assistant",
        "content": row.get("output_text") or "",
        "parts": [],
        "tool_calls": calls,
        "tool_call_id": None,
        "name": None,
    }
    return [message]


def _text_of(m: Mapping[str, Any]) -> str:
    content = m.get("content")
    return content if isinstance(content, str) else ""


def _image_url(part: Mapping[str, Any]) -> str:
    url = part.get("url")
    return url if isinstance(url, str) else ""


class Formatter:
    """Turns normalized rows into one format's records; counts parts it had to drop."""

    def __init__(self, fmt: str, dataset: str = "") -> None:
        self.fmt = fmt
        self.dataset = dataset
        self.dropped_parts: Counter[str] = Counter()

    def __call__(self, row: Mapping[str, Any]) -> dict[str, Any]:
        if self.fmt == "openai-chat":
            return self.openai_chat(row)
        if self.fmt == "anthropic":
            return self.anthropic(row)
        if self.fmt == "sharegpt":
            return self.sharegpt(row)
        if self.fmt == "langfuse":
            return self.langfuse(row)
        raise ExportError(f"no line format for {self.fmt}")

    # --- openai-chat -----------------------------------------------------------------------

    def openai_chat(self, row: Mapping[str, Any]) -> dict[str, Any]:
        chat = OpenAIChat(training=True, dropped=self.dropped_parts)
        messages = chat.messages(row.get("system_prompt") or "", [*row.get("messages", ()), *answer_message(row)])
        out: dict[str, Any] = {"messages": messages}
        tools = chat.tools(row.get("tools") or ())
        if tools:
            out["tools"] = tools
        return out

    def _drop_parts(self, m: Mapping[str, Any]) -> None:
        self.dropped_parts.update(non_text_parts(m))

    # --- anthropic -------------------------------------------------------------------------

    def anthropic(self, row: Mapping[str, Any]) -> dict[str, Any]:
        system = [row["system_prompt"]] if row.get("system_prompt") else []
        messages: list[dict[str, Any]] = []
        ids = ToolCallIds()

        def push(role: str, blocks: list[dict[str, Any]]) -> None:
            if messages and messages[-1]["role"] == role:
                messages[-1]["content"].extend(blocks)
            else:
                messages.append({"role": role, "content": blocks})

        for m in [*row.get("messages", ()), *answer_message(row)]:
            role = str(m.get("role") or "")
            text = _text_of(m)
            if role in ("system", "developer"):
                system.append(text)
            elif role == "user":
                push("user", self._anthropic_user_blocks(m, text))
            elif role == "assistant":
                blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
                self._drop_parts(m)
                for c in m.get("tool_calls") or ():
                    if isinstance(c, dict):
                        block_id = ids.call(c)
                        blocks.append(
                            {
                                "type": "tool_use",
                                "id": block_id,
                                "name": str(c.get("name") or ""),
                                "input": _json_object(c.get("arguments")),
                            }
                        )
                push("assistant", blocks)
            elif role == "tool":
                result: dict[str, Any] = {"type": "tool_result", "tool_use_id": ids.result(m), "content": text}
                if any(isinstance(p, dict) and p.get("is_error") for p in m.get("parts") or ()):
                    result["is_error"] = True
                push("user", [result])
            else:
                push(role, [{"type": "text", "text": text}])
        for msg in messages:  # one text block reads better as a plain string
            if len(msg["content"]) == 1 and msg["content"][0].get("type") == "text":
                msg["content"] = msg["content"][0]["text"]
        out: dict[str, Any] = {}
        if any(system):
            out["system"] = "\n\n".join(s for s in system if s)
        out["messages"] = messages
        tools = [
            {
                "name": str(t.get("name") or ""),
                **({"description": str(t["description"])} if t.get("description") else {}),
                "input_schema": t["parameters"]
                if isinstance(t.get("parameters"), dict) and t["parameters"]
                else {"type": "object", "properties": {}},
            }
            for t in row.get("tools") or ()
            if isinstance(t, dict) and not t.get("type")
        ]
        if tools:
            out["tools"] = tools
        return out

    def _anthropic_user_blocks(self, m: Mapping[str, Any], text: str) -> list[dict[str, Any]]:
        parts = [p for p in m.get("parts") or () if isinstance(p, dict)]
        if not parts:
            return [{"type": "text", "text": text}] if text else []
        blocks: list[dict[str, Any]] = []
        for p in parts:
            kind = p.get("type")
            if kind == "text" and p.get("text"):
                blocks.append({"type": "text", "text": str(p["text"])})
            elif kind == "image" and _image_url(p):
                url = _image_url(p)
                data = re.match(r"data:([^;,]+);base64,(.*)", url, re.S)
                source = (
                    {"type": "base64", "media_type": data.group(1), "data": data.group(2)}
                    if data
                    else {"type": "url", "url": url}
                )
                blocks.append({"type": "image", "source": source})
            elif kind != "text":
                self.dropped_parts[str(kind)] += 1
        return blocks

    # --- sharegpt --------------------------------------------------------------------------

    def sharegpt(self, row: Mapping[str, Any]) -> dict[str, Any]:
        turns: list[dict[str, str]] = []
        system = [row["system_prompt"]] if row.get("system_prompt") else []
        observations: list[str] = []

        def flush() -> None:
            if observations:
                value = observations[0] if len(observations) == 1 else _dumps(observations)
                turns.append({"from": "observation", "value": value})
                observations.clear()

        for m in [*row.get("messages", ()), *answer_message(row)]:
            role = str(m.get("role") or "")
            text = _text_of(m)
            if role == "tool":
                observations.append(text)
                continue
            flush()
            if role in ("system", "developer"):
                system.append(text)
            elif role == "user":
                self._drop_parts(m)
                if turns and turns[-1]["from"] == "human":  # ShareGPT alternates: merge
                    turns[-1]["value"] += "\n\n" + text
                else:
                    turns.append({"from": "human", "value": text})
            elif role == "assistant":
                self._drop_parts(m)
                calls = [
                    {"name": str(c.get("name") or ""), "arguments": _json_object(c.get("arguments"))}
                    for c in m.get("tool_calls") or ()
                    if isinstance(c, dict)
                ]
                if calls:  # the call is the turn; a preamble text has no slot in ShareGPT
                    turns.append({"from": "function_call", "value": _dumps(calls[0] if len(calls) == 1 else calls)})
                else:
                    turns.append({"from": "gpt", "value": text})
            else:
                turns.append({"from": role, "value": text})
        flush()
        if any(system):
            turns.insert(0, {"from": "system", "value": "\n\n".join(s for s in system if s)})
        out: dict[str, Any] = {"conversations": turns}
        tools = [
            {"name": t.get("name") or "", "description": t.get("description") or "", "parameters": t.get("parameters")}
            for t in row.get("tools") or ()
            if isinstance(t, dict) and not t.get("type")
        ]
        if tools:
            out["tools"] = _dumps(tools)  # LLaMA-Factory's convention: a JSON string
        return out

    # --- langfuse --------------------------------------------------------------------------

    def langfuse(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return dataset_item(row, self.openai_chat(row), self.dataset)


def _json_object(arguments: Any) -> Any:
    if isinstance(arguments, dict):
        return arguments
    try:
        value = orjson.loads(arguments or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return {"_raw": str(arguments)}
    return value if isinstance(value, dict) else {"value": value}


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
