"""Shared shapes for API understanding.

An API module turns an ``Exchange`` (the raw facts of one capture) into an
``Understanding`` (the normalized columns defined in ``schemas/capture.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Exchange:
    """What an API module gets: one request and its (decompressed) response."""

    method: str
    path: str  # upstream-relative path, route prefix removed, no query string
    query: str
    request_body: bytes
    response_body: bytes  # decompressed; the full event text for streams
    response_content_type: str
    status_code: int
    outcome: str
    duration_ms: float
    stream_timing: tuple[tuple[float, int], ...] = ()  # (offset_ms, size) per chunk


@dataclass(slots=True)
class Understanding:
    """Normalized view of one exchange; field names are capture column names.

    ``messages`` items all have this one shape, whatever the API:
    ``{"role": str, "content": str, "parts": list[dict], "tool_calls": list[dict],
    "tool_call_id": str | None, "name": str | None}`` where ``content`` is the text of the
    message (text parts joined with "\\n"), ``parts`` the non-text or multi-part content
    (each ``{"type": "text"|"image"|"audio"|"file"|"tool_result"|"thinking"|..., ...}``;
    images keep their URL/data URL under ``url``), and ``tool_calls`` items are
    ``{"id": str, "name": str, "arguments": str}`` (arguments as JSON text).
    ``output_tool_calls`` uses the same tool-call shape.
    """

    api: str = "unknown"
    model: str = ""
    response_model: str = ""
    stream: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    system_prompt: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)
    output_text: str = ""
    output_tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str = ""
    response: Any = None  # the API's own response object; streams reassembled
    response_id: str = ""
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    tokens_per_second: float | None = None
    cost_usd: float | None = None
    chunk_count: int = 0
    incomplete: bool = False
    ttft_ms: float | None = None  # first content-bearing event, streams only
    provider: str = ""  # price-database provider id, e.g. "openai", "anthropic"
    parse_error: str = ""


def message(
    role: str,
    content: str = "",
    parts: list[dict[str, Any]] | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    tool_call_id: str | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """A normalized message (see ``Understanding``)."""
    return {
        "role": role,
        "content": content,
        "parts": parts or [],
        "tool_calls": tool_calls or [],
        "tool_call_id": tool_call_id,
        "name": name,
    }


def load_json(body: bytes) -> Any:
    """Parse a JSON body; raises ValueError with a short reason."""
    if not body:
        raise ValueError("empty body")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"body is not JSON: {exc}") from None
