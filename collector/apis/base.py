"""Shared shapes for API understanding, and the small readers every API module uses.

An API module turns an ``Exchange`` (the raw facts of one capture) into an
``Understanding`` (the normalized columns defined in ``schemas/capture.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
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


def load_json_object(body: bytes) -> dict[str, Any]:
    """``load_json`` for a body that must be a JSON object (a request); raises ValueError."""
    obj = load_json(body)
    if not isinstance(obj, dict):
        raise ValueError("body is not a JSON object")
    return obj


def read_error_or_empty(x: Exchange, u: Understanding) -> bool:
    """Settle a response that has nothing API-specific to read; True when it did.

    An error status: ``response`` is its JSON body (None when it is not JSON, e.g. a
    gateway's HTML page). An empty body: a stream that ended before its first event is
    incomplete, and an empty answer with a status raises ValueError("empty body").
    """
    if x.status_code >= 300 or 0 < x.status_code < 200:
        try:
            u.response = load_json(x.response_body)
        except ValueError:
            u.response = None
        return True
    if not x.response_body:
        if u.stream:
            u.incomplete = True
        elif x.status_code:
            raise ValueError("empty body")
        return True
    return False


def json_text(value: Any) -> str:
    """Compact JSON text, non-ASCII kept as is (tool-call arguments, tool results)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# -- coercions: read a field of untrusted JSON as the type it should have ----------------


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a dict, else an empty one."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    """``value`` if it is a list, else an empty one."""
    return value if isinstance(value, list) else []


def as_str(value: Any) -> str:
    """``value`` if it is a string, else ""."""
    return value if isinstance(value, str) else ""


def as_index(value: Any) -> int | None:
    """``value`` if it is an integer (a bool is not), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def as_count(value: Any) -> int | None:
    """A token count as reported: an integer that fits the UInt32 columns, else None (never guessed)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32 else None


# -- parse notes -------------------------------------------------------------------------


def join_notes(a: str, b: str) -> str:
    """Two parse notes as one ``parse_error`` ("a; b"), either may be empty."""
    return f"{a}; {b}" if a and b else a or b


@contextmanager
def parse_note(u: Understanding, step: str) -> Iterator[None]:
    """Run one parse step (``with parse_note(u, "request"): ...``) that must not raise.

    An exception ends the step and becomes the note ``"{step}: reason"`` in
    ``u.parse_error``; what was understood before it is kept.
    """
    try:
        yield
    except Exception as exc:
        u.parse_error = join_notes(u.parse_error, f"{step}: {str(exc) or type(exc).__name__}")
