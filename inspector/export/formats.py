"""Line formats: normalized capture rows as ``openai-chat``, ``anthropic`` and ``sharegpt``
training lines (and the chat part of ``langfuse`` items).

Tool-call ids are synthesized where the API had none and tool results paired with their
calls; parts a format cannot carry are dropped and counted for the report.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

import orjson
from prompttap.inspector.export.langfuse import dataset_item
from prompttap.inspector.export.request import ExportError


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


class _CallIds:
    """Tool-call ids as the chat formats need them: synthesized where the API had none
    (Gemini, legacy function calls), and tool results paired with the call they answer
    (by id, else by tool name, else the oldest unanswered call)."""

    def __init__(self) -> None:
        self.n = 0
        self.pending: list[tuple[str, str]] = []  # (id, name) awaiting a result

    def call(self, call: Mapping[str, Any]) -> str:
        call_id = str(call.get("id") or "")
        if not call_id:
            self.n += 1
            call_id = f"call_{self.n}"
        self.pending.append((call_id, str(call.get("name") or "")))
        return call_id

    def result(self, message: Mapping[str, Any]) -> str:
        call_id = str(message.get("tool_call_id") or "")
        name = str(message.get("name") or "")
        for i, (pid, _) in enumerate(self.pending):
            if pid == call_id:
                del self.pending[i]
                return pid
        for i, (pid, pname) in enumerate(self.pending):
            if pname and pname in (name, call_id):
                del self.pending[i]
                return pid
        if self.pending and not call_id:
            return self.pending.pop(0)[0]
        return call_id


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
        messages: list[dict[str, Any]] = []
        if row.get("system_prompt"):
            messages.append({"role": "system", "content": row["system_prompt"]})
        ids = _CallIds()
        for m in [*row.get("messages", ()), *answer_message(row)]:
            messages.append(self._openai_message(m, ids))
        out: dict[str, Any] = {"messages": messages}
        tools = self._openai_tools(row.get("tools") or ())
        if tools:
            out["tools"] = tools
        return out

    def _openai_message(self, m: Mapping[str, Any], ids: _CallIds) -> dict[str, Any]:
        role = str(m.get("role") or "")
        text = _text_of(m)
        if role == "user":
            return {"role": "user", "content": self._openai_user_content(m, text)}
        if role == "assistant":
            out: dict[str, Any] = {"role": "assistant"}
            calls = [
                {
                    "id": ids.call(c),
                    "type": "function",
                    "function": {"name": str(c.get("name") or ""), "arguments": str(c.get("arguments") or "{}")},
                }
                for c in m.get("tool_calls") or ()
                if isinstance(c, dict)
            ]
            self._drop_parts(m, keep=("text",))
            if text or not calls:
                out["content"] = text
            if calls:
                out["tool_calls"] = calls
            return out
        if role == "tool":
            return {"role": "tool", "tool_call_id": ids.result(m), "content": text}
        if role in ("system", "developer"):
            return {"role": "system", "content": text}
        return {"role": role, "content": text}  # the validator says why it cannot stay

    def _openai_user_content(self, m: Mapping[str, Any], text: str) -> str | list[dict[str, Any]]:
        parts = [p for p in m.get("parts") or () if isinstance(p, dict)]
        if not any(p.get("type") == "image" for p in parts):
            self._drop_parts(m, keep=("text",))
            return text
        out: list[dict[str, Any]] = []
        for p in parts:
            if p.get("type") == "text":
                out.append({"type": "text", "text": str(p.get("text") or "")})
            elif p.get("type") == "image" and _image_url(p):
                image: dict[str, Any] = {"url": _image_url(p)}
                if p.get("detail") in ("low", "high", "auto"):
                    image["detail"] = p["detail"]
                out.append({"type": "image_url", "image_url": image})
            else:
                self.dropped_parts[str(p.get("type"))] += 1
        return out

    def _drop_parts(self, m: Mapping[str, Any], keep: tuple[str, ...]) -> None:
        for p in m.get("parts") or ():
            if isinstance(p, dict) and p.get("type") not in keep:
                self.dropped_parts[str(p.get("type"))] += 1

    @staticmethod
    def _openai_tools(tools: Any) -> list[dict[str, Any]]:
        out = []
        for t in tools:
            if not isinstance(t, dict) or t.get("type"):  # provider-side tools have no function schema
                continue
            fn: dict[str, Any] = {"name": str(t.get("name") or "")}
            if t.get("description"):
                fn["description"] = str(t["description"])
            params = t.get("parameters")
            fn["parameters"] = params if isinstance(params, dict) and params else {"type": "object", "properties": {}}
            out.append({"type": "function", "function": fn})
        return out

    # --- anthropic -------------------------------------------------------------------------

    def anthropic(self, row: Mapping[str, Any]) -> dict[str, Any]:
        system = [row["system_prompt"]] if row.get("system_prompt") else []
        messages: list[dict[str, Any]] = []
        ids = _CallIds()

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
                self._drop_parts(m, keep=("text",))
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
                self._drop_parts(m, keep=("text",))
                if turns and turns[-1]["from"] == "human":  # ShareGPT alternates: merge
                    turns[-1]["value"] += "\n\n" + text
                else:
                    turns.append({"from": "human", "value": text})
            elif role == "assistant":
                self._drop_parts(m, keep=("text",))
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
