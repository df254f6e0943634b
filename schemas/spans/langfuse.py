"""Langfuse's own attributes of a capture's span (names and value shapes of the langfuse SDK 5),
so Langfuse shows a generation with input, output, model, parameters, usage, cost and time to
first token. Content is in OpenAI's chat shape, which Langfuse's UI renders best."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from prompttap.schemas.openai_chat import OpenAIChat
from prompttap.schemas.spans.bounds import put
from prompttap.schemas.spans.facts import Facts
from prompttap.schemas.values import as_float, as_int, as_str, dumps

_OBSERVATION_TYPES = {
    "chat": "generation",
    "text_completion": "generation",
    "generate_content": "generation",
    "embeddings": "embedding",
}


def langfuse_attrs(f: Facts, a: dict[str, Any], put_json: Callable[[str, Any], None]) -> None:
    """Langfuse's own attributes (the langfuse SDK's names and value shapes): a generation."""
    row = f.row
    put(a, "langfuse.observation.type", _OBSERVATION_TYPES.get(f.op, "span"))
    if f.api != "unknown":
        chat = OpenAIChat()  # as captured: Langfuse shows what was sent
        lf_input: Any = chat.messages(f.system, f.messages)
        if f.tools:  # beside the messages, as the langfuse OpenAI integration sends them
            lf_input = {"messages": lf_input, "tools": chat.tools(f.tools)}
        if f.messages or f.system:
            put_json("langfuse.observation.input", lf_input)
        output = _langfuse_output(f)
        if output is not None:
            put_json("langfuse.observation.output", output)
    put(a, "langfuse.observation.model.name", f.response_model or f.model)
    if f.params:
        put_json("langfuse.observation.model.parameters", {k: _scalar(v) for k, v in f.params.items()})
    usage = _usage_details(row, f.cache_creation)
    if usage:
        a["langfuse.observation.usage_details"] = dumps(usage)
    cost = as_float(row.get("cost_usd"))
    if cost is not None:
        a["langfuse.observation.cost_details"] = dumps({"total": cost})
    if f.ttft_ms is not None and not f.failed:  # an error's first byte is not a completion start
        a["langfuse.observation.completion_start_time"] = _iso(f.start_ns + round(f.ttft_ms * 1_000_000))
    if f.failed:
        a["langfuse.observation.level"] = "WARNING" if f.outcome == "client_cancelled" else "ERROR"
        put(a, "langfuse.observation.status_message", f.error_message)
    elif row.get("incomplete"):
        a["langfuse.observation.level"] = "WARNING"
        a["langfuse.observation.status_message"] = "the stream ended before its final event"
    put(a, "langfuse.trace.name", as_str(row.get("route")))
    session = as_str(row.get("session_id")) or as_str(row.get("thread_id"))
    for key in ("session.id", "langfuse.session.id"):  # the SDK's name, then Langfuse's own
        put(a, key, session)
    for key in ("user.id", "langfuse.user.id"):
        put(a, key, as_str(row.get("user_id")))
    tags = row.get("tags")
    put(a, "langfuse.trace.tags", [str(t) for t in tags if t] if isinstance(tags, list | tuple) else None)
    # Plain strings, not the SDK's JSON-encoded values: the server only decodes those for its SDKs.
    for key, value in (
        ("capture_id", as_str(row.get("id"))),
        ("api", f.api),
        ("outcome", f.outcome),
        ("client", as_str(row.get("client"))),
        ("prompt_template_id", as_str(row.get("prompt_template_id"))),
        ("replay_of", as_str(row.get("replay_of"))),
    ):
        put(a, f"langfuse.observation.metadata.{key}", value)
    put(a, "langfuse.trace.metadata.route", as_str(row.get("route")))
    put(a, "langfuse.trace.metadata.thread_id", as_str(row.get("thread_id")))


def _scalar(value: Any) -> Any:
    """A model parameter as Langfuse stores it: scalars as is, anything else as JSON text."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return dumps(value)


def _usage_details(row: dict[str, Any], cache_creation: int | None) -> dict[str, int]:
    """Langfuse's disjoint buckets (what its UI and pricing expect) plus the total."""
    inp, out = as_int(row.get("input_tokens")), as_int(row.get("output_tokens"))
    cached, reasoning = as_int(row.get("cached_tokens")), as_int(row.get("reasoning_tokens"))
    usage: dict[str, int] = {}
    if inp is not None:
        usage["input"] = max(0, inp - (cached or 0) - (cache_creation or 0))
    if out is not None:
        usage["output"] = max(0, out - (reasoning or 0))
    if cached:
        usage["input_cached_tokens"] = cached
    if cache_creation:
        usage["input_cache_creation"] = cache_creation
    if reasoning:
        usage["output_reasoning_tokens"] = reasoning
    if inp is not None or out is not None:
        usage["total"] = (inp or 0) + (out or 0)
    return usage


def _iso(ns: int) -> str:
    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ns // 1000)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _langfuse_output(f: Facts) -> Any:
    if f.output_text or f.output_calls:
        out: dict[str, Any] = {"role": "assistant"}
        if f.output_text or not f.output_calls:
            out["content"] = f.output_text
        if f.output_calls:
            out["tool_calls"] = [OpenAIChat().tool_call(c) for c in f.output_calls]
        return out
    if (f.op == "embeddings" or f.failed) and f.response is not None:
        return f.response  # vectors are already dropped from embedding responses
    if f.failed and as_str(f.row.get("error")):
        return {"error": as_str(f.row.get("error"))}
    return None
