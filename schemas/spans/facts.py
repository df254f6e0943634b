"""What the span mapping reads from a capture row, parsed and typed once (``Facts``), and the
row's trace and span ids."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prompttap.schemas.values import as_dicts, as_float, as_int, as_json, as_str

# gen_ai.operation.name per api (the conventions' well-known values); "" for the others.
OPERATIONS = {
    "openai.chat": "chat",
    "openai.responses": "chat",
    "openai.completions": "text_completion",
    "openai.embeddings": "embeddings",
    "anthropic.messages": "chat",
    "ollama.chat": "chat",
    "ollama.generate": "text_completion",
    "ollama.embed": "embeddings",
    "gemini.generate": "generate_content",
}


@dataclass(slots=True)
class Facts:
    """What the mapping reads from a row, parsed and typed once."""

    row: dict[str, Any]
    api: str
    op: str
    model: str
    response_model: str
    params: dict[str, Any]
    response: Any
    status: int
    outcome: str
    failed: bool
    stream: bool
    ttft_ms: float | None
    start_ns: int
    messages: list[dict[str, Any]]
    system: str
    tools: list[dict[str, Any]]
    output_text: str
    output_calls: list[dict[str, Any]]
    finish: str
    cache_creation: int | None
    error_type: str = ""
    error_message: str = ""


def read_facts(row: dict[str, Any]) -> Facts:
    api = as_str(row.get("api")) or "unknown"
    params, response = as_json(row.get("params")), as_json(row.get("response"))
    status, outcome = as_int(row.get("status_code")) or 0, as_str(row.get("outcome")) or "ok"
    f = Facts(
        row=row,
        api=api,
        op=OPERATIONS.get(api, ""),
        model=as_str(row.get("model")),
        response_model=as_str(row.get("response_model")),
        params=params if isinstance(params, dict) else {},
        response=response,
        status=status,
        outcome=outcome,
        failed=outcome != "ok" or status >= 400,
        stream=row.get("stream") is True,
        ttft_ms=as_float(row.get("ttft_ms")),
        start_ns=_start_ns(row.get("started_at")),
        messages=as_dicts(row.get("messages")),
        system=as_str(row.get("system_prompt")),
        tools=as_dicts(row.get("tools")),
        output_text=as_str(row.get("output_text")),
        output_calls=as_dicts(row.get("output_tool_calls")),
        finish=as_str(row.get("finish_reason")),
        cache_creation=_cache_creation(api, response),
    )
    if f.failed:
        f.error_type, f.error_message = _error(row, outcome, status, response)
    return f


def _start_ns(started_at: Any) -> int:
    # Microseconds, rounded exactly as the captures table stores them (datetime.fromtimestamp),
    # so a span built from a stored row and one built from the spool agree.
    if isinstance(started_at, datetime):
        dt = started_at if started_at.tzinfo else started_at.replace(tzinfo=UTC)
    else:
        dt = datetime.fromtimestamp(as_float(started_at) or 0.0, UTC)
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


def _cache_creation(api: str, response: Any) -> int | None:
    # Not a capture column: Anthropic reports it in usage, and Langfuse prices it separately.
    if api != "anthropic.messages" or not isinstance(response, dict):
        return None
    usage = response.get("usage")
    return as_int(usage.get("cache_creation_input_tokens")) if isinstance(usage, dict) else None


def _error(row: dict[str, Any], outcome: str, status: int, response: Any) -> tuple[str, str]:
    """(error.type, message): the provider's error code when it sent one, else the status/outcome."""
    message = as_str(row.get("error"))
    code = ""
    if isinstance(response, dict):
        err = response.get("error")
        if isinstance(err, dict):
            code = as_str(err.get("code")) or as_str(err.get("type")) or as_str(err.get("status"))
            message = message or as_str(err.get("message"))
        elif isinstance(err, str):
            message = message or err
    if outcome == "upstream_error" or (outcome == "ok" and status >= 400):
        return code or str(status), message or f"upstream answered HTTP {status}"
    return outcome, message or outcome.replace("_", " ")


def span_ids(row: dict[str, Any]) -> tuple[str, str, str]:
    """The capture's ids; invalid ones are derived from the capture id (receivers 400 a batch on them)."""
    cid = as_str(row.get("id"))
    digest = hashlib.sha256(cid.encode()).hexdigest()
    try:
        fallback_trace = uuid.UUID(cid).hex
    except ValueError:
        fallback_trace = digest[:32]
    trace = _hex(row.get("trace_id"), 32) or fallback_trace
    span = _hex(row.get("span_id"), 16) or digest[32:48]
    return trace, span, _hex(row.get("parent_span_id"), 16)


def _hex(value: Any, size: int) -> str:
    text = as_str(value).strip().lower()
    if len(text) != size or text.strip("0") == "":
        return ""
    try:
        int(text, 16)
    except ValueError:
        return ""
    return text
