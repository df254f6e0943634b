"""Validation: the rules each line format must follow, as generic reasons.

A line that breaks its format's rules is skipped, and the report counts it under the
first reason (reasons carry no positions or ids, so they can be counted).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from prompttap.inspector.export.langfuse import item_chat

_OPENAI_ROLES = frozenset({"system", "user", "assistant", "tool", "function"})
_OPENAI_MESSAGE_KEYS = frozenset({"role", "content", "name", "function_call", "tool_calls", "tool_call_id", "weight"})
_OPENAI_TOP_KEYS = frozenset({"messages", "tools", "parallel_tool_calls", "functions"})
_FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def validate_openai_chat(line: Mapping[str, Any]) -> list[str]:
    """Reasons a line breaks OpenAI's chat fine-tuning format (empty: valid).

    The rules of OpenAI's fine-tuning data preparation guide: a ``messages`` list; roles
    system/user/assistant/tool (function: legacy); only the known message keys; content
    present unless an assistant calls tools; at least one assistant message; ``weight``
    (0 or 1) only on assistant messages; every tool call of an assistant message that is
    not the last one answered by a tool message with its ``tool_call_id`` before the next
    turn, and every tool message answering such a call; function tools with valid names.
    Reasons are generic (no positions or ids) so the report can count them.
    """
    reasons: list[str] = []
    if set(line) - _OPENAI_TOP_KEYS:
        reasons.append("unknown top-level keys")
    messages = line.get("messages")
    if not isinstance(messages, list) or not messages:
        return [*reasons, "no messages"]
    last_assistant = max((i for i, m in enumerate(messages) if _role(m) == "assistant"), default=-1)
    if last_assistant < 0:
        reasons.append("no assistant message")
    open_calls: set[str] = set()
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            reasons.append("a message is not an object")
            continue
        role = m.get("role")
        if role not in _OPENAI_ROLES:
            reasons.append(f"role {role!r} is not allowed")
            continue
        if set(m) - _OPENAI_MESSAGE_KEYS:
            reasons.append("unknown message keys")
        if "weight" in m and (role != "assistant" or m["weight"] not in (0, 1)):
            reasons.append("weight must be 0 or 1, on assistant messages only")
        content = m.get("content")
        calls = m.get("tool_calls") or []
        if content is None and not (role == "assistant" and (calls or m.get("function_call"))):
            reasons.append(f"{role} message without content")
        elif content is not None and not _openai_content_ok(content, role):
            reasons.append(f"{role} content is not text{' or text/image parts' * (role == 'user')}")
        if role in ("user", "assistant") and open_calls:
            reasons.append("tool call not answered before the next turn")
            open_calls.clear()
        if role == "assistant" and calls:
            if not isinstance(calls, list):
                reasons.append("tool_calls is not a list")
                continue
            for c in calls:
                problem = _openai_call_problem(c)
                if problem:
                    reasons.append(problem)
                elif i != last_assistant:
                    open_calls.add(c["id"])
        if role == "tool":
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str) or call_id not in open_calls:
                reasons.append("tool result answers no open tool call")
            else:
                open_calls.discard(call_id)
    if open_calls:
        reasons.append("tool call never answered")
    for t in line.get("tools") or ():
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(fn, dict):
            reasons.append("a tool is not a function tool")
        elif not _FUNCTION_NAME.match(str(fn.get("name") or "")):
            reasons.append("invalid tool name")
        elif "parameters" in fn and not isinstance(fn["parameters"], dict):
            reasons.append("tool parameters are not a JSON schema object")
    return list(dict.fromkeys(reasons))


def _role(m: Any) -> Any:
    return m.get("role") if isinstance(m, dict) else None


def _openai_content_ok(content: Any, role: str) -> bool:
    if isinstance(content, str):
        return True
    if not isinstance(content, list) or role not in ("user", "assistant", "system") or not content:
        return False
    allowed = {"text", "image_url"} if role == "user" else {"text"}
    for part in content:
        if not isinstance(part, dict) or part.get("type") not in allowed:
            return False
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            return False
        if part["type"] == "image_url" and not isinstance((part.get("image_url") or {}).get("url"), str):
            return False
    return True


def _openai_call_problem(call: Any) -> str:
    if not isinstance(call, dict) or call.get("type") != "function" or not isinstance(call.get("function"), dict):
        return "tool call is not a function call"
    if not call.get("id"):
        return "tool call without an id"
    fn = call["function"]
    if not _FUNCTION_NAME.match(str(fn.get("name") or "")):
        return "invalid tool call name"
    if not isinstance(fn.get("arguments"), str):
        return "tool call arguments are not a string"
    try:
        orjson.loads(fn["arguments"])
    except orjson.JSONDecodeError:
        return "tool call arguments are not valid JSON"
    return ""


def validate_anthropic(line: Mapping[str, Any]) -> list[str]:
    """Reasons a line is not a valid Messages API conversation: user first, roles
    alternating, assistant last, non-empty content, tool_use blocks (except in the last
    turn) answered by tool_result blocks in the next user turn."""
    reasons: list[str] = []
    messages = line.get("messages")
    if not isinstance(messages, list) or not messages:
        return ["no messages"]
    if "system" in line and not isinstance(line["system"], str):
        reasons.append("system is not text")
    previous = None
    open_uses: set[str] = set()
    for i, m in enumerate(messages):
        role = _role(m)
        if role not in ("user", "assistant"):
            reasons.append(f"role {role!r} is not allowed")
            continue
        if i == 0 and role != "user":
            reasons.append("the first message is not from the user")
        if role == previous:
            reasons.append("roles do not alternate")
        previous = role
        content = m.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list) or not blocks or (isinstance(content, str) and not content):
            reasons.append(f"empty {role} message")
            continue
        results = {b.get("tool_use_id") for b in blocks if isinstance(b, dict) and b.get("type") == "tool_result"}
        if role == "user":
            if open_uses - results:
                reasons.append("tool use not answered in the next user turn")
            if results - open_uses:
                reasons.append("tool result answers no tool use")
            open_uses = set()
        else:
            if results:
                reasons.append("tool result in an assistant turn")
            for b in blocks:
                if isinstance(b, dict) and b.get("type") == "tool_use":
                    if not b.get("id") or not isinstance(b.get("input"), dict):
                        reasons.append("tool use needs an id and an object input")
                    elif i != len(messages) - 1:
                        open_uses.add(b["id"])
    if previous != "assistant":
        reasons.append("the last message is not from the assistant")
    return list(dict.fromkeys(reasons))


def validate_sharegpt(line: Mapping[str, Any]) -> list[str]:
    """Reasons a line is not a ShareGPT conversation: human/observation turns and
    gpt/function_call turns alternating after an optional system turn, ending with the
    model, no empty values."""
    turns = line.get("conversations")
    if not isinstance(turns, list) or not turns:
        return ["no conversations"]
    reasons: list[str] = []
    body = turns[1:] if _from(turns[0]) == "system" else turns
    for i, t in enumerate(body):
        who = _from(t)
        expected = ("human", "observation") if i % 2 == 0 else ("gpt", "function_call")
        if who not in expected:
            reasons.append(f"{who} turn where {' or '.join(expected)} was expected")
        elif not isinstance(t.get("value"), str) or not t["value"]:
            reasons.append(f"empty {who} turn")
    if not body or _from(body[-1]) not in ("gpt", "function_call"):
        reasons.append("the conversation does not end with the model")
    return list(dict.fromkeys(reasons))


def _from(t: Any) -> Any:
    return t.get("from") if isinstance(t, dict) else None


VALIDATORS: dict[str, Callable[[Mapping[str, Any]], list[str]]] = {
    "openai-chat": validate_openai_chat,
    "anthropic": validate_anthropic,
    "sharegpt": validate_sharegpt,
    "langfuse": lambda item: validate_openai_chat(item_chat(item)),
}
