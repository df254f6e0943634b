"""The OpenTelemetry GenAI semantic conventions' attributes of a capture's span (v1.41.1 names):
operation, model, request parameters, usage, response metadata, content as JSON strings in the
conventions' message shapes, and the server and HTTP attributes the conventions ask for beside them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from prompttap.schemas.spans.bounds import put
from prompttap.schemas.spans.facts import Facts
from prompttap.schemas.values import as_float, as_int, as_str, first_of

_PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "ollama": "ollama", "gemini": "gcp.gemini"}
# APIs whose system text came from system/developer messages in the history (the conventions
# keep those in gen_ai.input.messages); the others take instructions as a separate field.
_HISTORY_SYSTEM = frozenset({"openai.chat", "ollama.chat"})

# gen_ai.request.<name> <- first of these params keys (OpenAI, Anthropic, Ollama options, Gemini).
_FLOAT_PARAMS = {
    "temperature": ("temperature",),
    "top_p": ("top_p", "topP"),
    "top_k": ("top_k", "topK"),
    "frequency_penalty": ("frequency_penalty", "frequencyPenalty"),
    "presence_penalty": ("presence_penalty", "presencePenalty"),
}
_INT_PARAMS = {
    "max_tokens": ("max_completion_tokens", "max_tokens", "max_output_tokens", "maxOutputTokens", "num_predict"),
    "seed": ("seed",),
    "choice.count": ("n", "candidateCount"),
}
_STOP_PARAMS = ("stop", "stop_sequences", "stopSequences")

_FINISH = {
    "stop": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "completed": "stop",
    "length": "length",
    "max_tokens": "length",
    "max_output_tokens": "length",
    "tool_calls": "tool_call",
    "function_call": "tool_call",
    "tool_use": "tool_call",
    "content_filter": "content_filter",
    "safety": "content_filter",
    "refusal": "content_filter",
}
_SEMCONV_PART_TYPES = frozenset(
    {"text", "reasoning", "tool_call", "tool_call_response", "server_tool_call", "server_tool_call_response"}
    | {"blob", "file", "uri"}
)
_MODALITY = {"image": "image", "audio": "audio", "video": "video", "file": "document"}


def genai_attrs(f: Facts, a: dict[str, Any]) -> None:
    """Operation, model, request parameters, usage and response metadata (GenAI conventions)."""
    row, params = f.row, f.params
    put(a, "gen_ai.operation.name", f.op)
    put(a, "gen_ai.provider.name", _provider(f.api, as_str(row.get("upstream_url"))))
    put(a, "gen_ai.request.model", f.model)
    put(a, "gen_ai.response.model", f.response_model)
    for name, keys in _FLOAT_PARAMS.items():
        put(a, f"gen_ai.request.{name}", first_of(params, keys, as_float))
    for name, keys in _INT_PARAMS.items():
        value = first_of(params, keys, as_int)
        if value is not None and value >= 0 and not (name == "choice.count" and value == 1):
            a[f"gen_ai.request.{name}"] = value
    put(a, "gen_ai.request.stop_sequences", _stop_sequences(params))
    put(a, "gen_ai.output.type", _output_type(params))
    if f.stream:
        a["gen_ai.request.stream"] = True
    put(a, "gen_ai.usage.input_tokens", as_int(row.get("input_tokens")))
    put(a, "gen_ai.usage.output_tokens", as_int(row.get("output_tokens")))
    put(a, "gen_ai.usage.cache_read.input_tokens", as_int(row.get("cached_tokens")))
    put(a, "gen_ai.usage.cache_creation.input_tokens", f.cache_creation)
    put(a, "gen_ai.usage.reasoning.output_tokens", as_int(row.get("reasoning_tokens")))
    put(a, "gen_ai.response.finish_reasons", [f.finish] if f.finish else None)
    put(a, "gen_ai.response.id", as_str(row.get("response_id")))
    if f.stream and f.ttft_ms is not None:
        a["gen_ai.response.time_to_first_chunk"] = f.ttft_ms / 1000.0
    put(a, "gen_ai.conversation.id", as_str(row.get("session_id")))  # explicit ids only, never inferred
    if f.api.startswith("openai."):
        _openai_attrs(a, f.api, params, f.response)


def content_attrs(f: Facts, put_json: Callable[[str, Any], None]) -> None:
    """Messages, instructions, output and tools as JSON in the conventions' shapes."""
    semconv_in = [_semconv_message(m) for m in f.messages]
    if f.system and f.api in _HISTORY_SYSTEM:
        semconv_in.insert(0, {"role": "system", "parts": [{"type": "text", "content": f.system}]})
    elif f.system:
        put_json("gen_ai.system_instructions", [{"type": "text", "content": f.system}])
    if semconv_in:
        put_json("gen_ai.input.messages", semconv_in)
    if f.output_text or f.output_calls:
        parts = [{"type": "text", "content": f.output_text}] if f.output_text else []
        parts += [_tool_call_part(c) for c in f.output_calls]
        reason = _FINISH.get(f.finish.lower(), f.finish.lower())
        if f.failed or f.row.get("incomplete"):
            reason = "error"
        put_json("gen_ai.output.messages", [{"role": "assistant", "parts": parts, "finish_reason": reason}])
    if f.tools:
        put_json("gen_ai.tool.definitions", [_tool_definition(t) for t in f.tools])


def transport_attrs(f: Facts, a: dict[str, Any]) -> None:
    """Where the request went and how it ended: server, HTTP and error attributes."""
    url = urlsplit(as_str(f.row.get("upstream_url")))
    try:
        port = url.port or {"https": 443, "http": 80}.get(url.scheme)
    except ValueError:
        port = None
    if url.hostname:
        a["server.address"] = url.hostname
        put(a, "server.port", port)
    put(a, "http.request.method", as_str(f.row.get("method")))
    put(a, "http.response.status_code", f.status or None)
    put(a, "user_agent.original", as_str(f.row.get("client")))
    put(a, "error.type", f.error_type)


def _provider(api: str, upstream_url: str) -> str:
    host = (urlsplit(upstream_url).hostname or "").lower()
    if host.endswith(".openai.azure.com"):
        return "azure.ai.openai"
    if host.endswith("aiplatform.googleapis.com"):
        return "gcp.vertex_ai"
    return _PROVIDERS.get(api.split(".", 1)[0], "")


def _openai_attrs(a: dict[str, Any], api: str, params: dict[str, Any], response: Any) -> None:
    put(a, "openai.api.type", {"openai.chat": "chat_completions", "openai.responses": "responses"}.get(api))
    tier = params.get("service_tier")
    if isinstance(tier, str) and tier != "auto":
        a["openai.request.service_tier"] = tier
    if isinstance(response, dict):
        put(a, "openai.response.service_tier", _str_or_none(response.get("service_tier")))
        put(a, "openai.response.system_fingerprint", _str_or_none(response.get("system_fingerprint")))


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _stop_sequences(params: dict[str, Any]) -> list[str] | None:
    for key in _STOP_PARAMS:
        value = params.get(key)
        if isinstance(value, str) and value:
            return [value]
        if isinstance(value, list):
            return [v for v in value if isinstance(v, str)] or None
    return None


def _output_type(params: dict[str, Any]) -> str:
    fmt = params.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in ("json_object", "json_schema") or params.get("responseMimeType") == "application/json":
        return "json"
    if kind == "text":
        return "text"
    ollama = params.get("format")
    return "json" if ollama == "json" or isinstance(ollama, dict) else ""


def _semconv_message(m: dict[str, Any]) -> dict[str, Any]:
    """A normalized message in the conventions' ChatMessage shape ({role, parts[], name?})."""
    role = as_str(m.get("role")) or "user"
    text = as_str(m.get("content"))
    parts_in = [p for p in m.get("parts") or [] if isinstance(p, dict)]
    if role == "tool":
        parts: list[dict[str, Any]] = [
            {"type": "tool_call_response", "id": as_str(m.get("tool_call_id")), "response": text}
        ]
        parts += [_semconv_part(p) for p in parts_in if p.get("type") not in ("text", "tool_result")]
    elif parts_in:
        parts = [_semconv_part(p) for p in parts_in]
    else:
        parts = [{"type": "text", "content": text}] if text else []
    parts += [_tool_call_part(c) for c in m.get("tool_calls") or [] if isinstance(c, dict)]
    out: dict[str, Any] = {"role": role, "parts": parts}
    if m.get("name"):
        out["name"] = as_str(m.get("name"))
    return out


def _semconv_part(p: dict[str, Any]) -> dict[str, Any]:
    kind = as_str(p.get("type")) or "unknown"
    if kind in ("text", "refusal"):
        return {"type": "text", "content": as_str(p.get("text"))}
    if kind == "thinking":
        return {"type": "reasoning", "content": as_str(p.get("text"))}
    modality = _MODALITY.get(kind)
    url = as_str(p.get("url")) or as_str(p.get("file_url"))
    if modality and url.startswith("data:") and "," in url:
        head, data = url[5:].split(",", 1)
        blob = {"type": "blob", "modality": modality, "content": data}
        mime = head.split(";", 1)[0]
        return {**blob, "mime_type": mime} if mime else blob
    if modality and url:
        return {"type": "uri", "modality": modality, "uri": url}
    if modality and p.get("file_id"):
        return {"type": "file", "modality": modality, "file_id": as_str(p.get("file_id"))}
    rest = {k: v for k, v in p.items() if k != "type"}
    if kind in _SEMCONV_PART_TYPES:  # would fail the schema's required fields: keep it as a generic part
        return {"type": "unsupported", "original_type": kind, **rest}
    return {"type": kind, **rest}


def _tool_call_part(c: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_call", "id": as_str(c.get("id")), "name": as_str(c.get("name")), "arguments": _json_or(c)}


def _json_or(c: dict[str, Any]) -> Any:
    args = c.get("arguments")
    if isinstance(args, str):
        try:
            return json.loads(args)
        except ValueError:
            return args
    return args


def _tool_definition(t: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": as_str(t.get("type")) or "function", "name": as_str(t.get("name"))}
    if t.get("description"):
        out["description"] = as_str(t.get("description"))
    if isinstance(t.get("parameters"), dict):
        out["parameters"] = t["parameters"]
    return out
