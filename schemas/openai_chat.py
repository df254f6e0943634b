"""Normalized messages (the ``messages`` column of ``schemas.capture``) as OpenAI chat messages,
defined once for both readers, who want different things (``OpenAIChat(training=...)``):

- a span's Langfuse input and output (``training=False``): as captured. Every part stays, text
  and images as OpenAI's part types and the others as they are; roles, names and tool-call ids
  as the API had them; every tool.
- export's ``openai-chat`` lines (``training=True``): only what OpenAI's fine-tuning format
  accepts. ``developer`` becomes ``system``; a user message keeps its text and image parts, the
  others are text; parts that cannot be carried are counted in ``dropped``; tool-call ids are
  synthesized where the API had none (Gemini, legacy function calls) and each tool result is
  paired with the call it answers (``ToolCallIds``); arguments are JSON text (``{}`` when empty);
  only function tools, each with a parameters schema.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from prompttap.schemas.values import as_str, dumps

_IMAGE_DETAILS = ("low", "high", "auto")


class ToolCallIds:
    """Tool-call ids as the chat formats need them: synthesized where the API had none
    (Gemini, legacy function calls), and tool results paired with the call they answer
    (by id, else by tool name, else the oldest unanswered call). One per conversation."""

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


def non_text_parts(m: Mapping[str, Any]) -> list[str]:
    """The types of a message's parts other than text: what a text-only message drops."""
    return [str(p.get("type")) for p in m.get("parts") or () if isinstance(p, dict) and p.get("type") != "text"]


class OpenAIChat:
    """Converts the messages of one conversation (tool-call ids are paired within it)."""

    def __init__(self, *, training: bool = False, dropped: Counter[str] | None = None) -> None:
        self.training = training
        self.dropped: Counter[str] = Counter() if dropped is None else dropped
        self.ids = ToolCallIds()

    def messages(self, system: str, messages: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The system prompt (when there is one) and then each message."""
        head = [{"role": "system", "content": system}] if system else []
        return head + [self.message(m) for m in messages]

    def message(self, m: Mapping[str, Any]) -> dict[str, Any]:
        role = as_str(m.get("role")) or ("" if self.training else "user")
        if self.training and role == "developer":
            role = "system"  # the format has no developer role; any other stays, for the line's validator to judge
        out: dict[str, Any] = {"role": role}
        if self.training and role == "tool":
            out["tool_call_id"] = self.ids.result(m)
        calls = [c for c in m.get("tool_calls") or () if isinstance(c, dict)]
        if self.training and role != "assistant":
            calls = []  # the format has tool calls on assistant messages only
        converted = [self.tool_call(c) for c in calls]
        content = self._content(m, role, bool(calls))
        if content is not None:
            out["content"] = content
        if converted:
            out["tool_calls"] = converted
        if not self.training:
            if m.get("tool_call_id"):
                out["tool_call_id"] = as_str(m.get("tool_call_id"))
            if m.get("name"):
                out["name"] = as_str(m.get("name"))
        return out

    def _content(self, m: Mapping[str, Any], role: str, has_calls: bool) -> str | list[dict[str, Any]] | None:
        """The message's content: its parts where they can stay, else its text; None for none."""
        text = as_str(m.get("content"))
        parts = [p for p in m.get("parts") or () if isinstance(p, dict)]
        if not self.training:
            return [self.part(p) for p in parts] if parts else text
        if role == "user" and any(p.get("type") == "image" for p in parts):
            return [c for c in map(self.part, parts) if c is not None]
        if role in ("user", "assistant"):
            self.dropped.update(non_text_parts(m))
        if role == "assistant" and has_calls and not text:
            return None  # a call without a preamble: no empty content
        return text

    def part(self, p: Mapping[str, Any]) -> dict[str, Any] | None:
        """A content part in OpenAI's part types; one it has no type for is kept as it is, or
        (training) dropped, counted, and None."""
        kind = p.get("type")
        url = as_str(p.get("url"))
        if kind == "text":
            return {"type": "text", "text": as_str(p.get("text"))}
        if kind == "image" and url:
            image: dict[str, Any] = {"url": url}
            if self.training and p.get("detail") in _IMAGE_DETAILS:
                image["detail"] = p["detail"]
            return {"type": "image_url", "image_url": image}
        if self.training:
            self.dropped[str(kind)] += 1
            return None
        return dict(p)

    def tool_call(self, c: Mapping[str, Any]) -> dict[str, Any]:
        args = c.get("arguments")
        text = args if isinstance(args, str) else dumps(args)
        call_id = as_str(c.get("id"))
        if self.training:
            call_id = self.ids.call(c)
            text = text if args else "{}"  # fine-tuning wants a JSON object, even an empty one
        return {"id": call_id, "type": "function", "function": {"name": as_str(c.get("name")), "arguments": text}}

    def tools(self, tools: Iterable[Any]) -> list[dict[str, Any]]:
        """Normalized tool definitions as OpenAI function tools."""
        out = []
        for t in tools:
            if not isinstance(t, dict) or (self.training and t.get("type")):  # provider-side tools: no function
                continue
            fn: dict[str, Any] = {"name": as_str(t.get("name"))}
            if t.get("description"):
                fn["description"] = as_str(t.get("description"))
            params = t.get("parameters")
            if isinstance(params, dict) and (params or not self.training):
                fn["parameters"] = params
            elif self.training:
                fn["parameters"] = {"type": "object", "properties": {}}
            out.append({"type": "function", "function": fn})
        return out
