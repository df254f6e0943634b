"""What every OpenAI API module shares: the entry-point wrapper, reading the request's
model/stream/params, telling a JSON answer from an event stream, the stream's data events
and timing, and the price."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from prompttap.collector.apis.base import Exchange, Understanding, as_count, as_str, load_json
from prompttap.collector.apis.events import SSEEvent
from prompttap.collector.apis.pricing import cost_usd
from prompttap.collector.apis.timing import ChunkClock, sse_events_at, tokens_per_second

PROVIDER = "openai"

# The first line of an event stream is a field (data, event, id, retry) or a comment.
_SSE_START = re.compile(rb"\s*(?:data|event|id|retry)?:")

Body = Callable[[Exchange, Understanding, list[str]], None]
"""Reads one exchange into ``u``; what it cannot read it appends to the notes."""


def run(api: str, x: Exchange, body: Body) -> Understanding:
    """``body`` on a fresh ``Understanding``; its notes (and any exception) become ``parse_error``."""
    u = Understanding(api=api, provider=PROVIDER)
    notes: list[str] = []
    try:
        body(x, u, notes)
    except Exception as exc:  # a parser bug must cost a note, not the capture
        notes.append(f"parser failed: {type(exc).__name__}: {exc}")
    u.parse_error = "; ".join(notes)[:1000]
    return u


def read_request(x: Exchange, u: Understanding, notes: list[str], param_keys: tuple[str, ...]) -> dict[str, Any]:
    """The request JSON object ({} when unusable), with model/stream/params read off it."""
    try:
        req = load_json(x.request_body)
    except (ValueError, RecursionError) as exc:
        notes.append(f"request: {exc}")
        return {}
    if not isinstance(req, dict):
        notes.append("request: body is not a JSON object")
        return {}
    u.model = as_str(req.get("model"))
    u.stream = req.get("stream") is True
    u.params = {k: req[k] for k in param_keys if k in req}
    return req


def response_kind(x: Exchange, u: Understanding, notes: list[str]) -> str:
    """'error', 'none', 'json', 'sse' or 'other'. An error response is stored as its JSON when it parses;
    a successful answer that is neither JSON nor an event stream (a gateway's text page) gets a note."""
    body = x.response_body
    if x.status_code and not 200 <= x.status_code < 300:
        try:
            u.response = load_json(body)
        except (ValueError, RecursionError):
            u.response = None  # e.g. a gateway's HTML page: the raw body still has it
        return "error"
    if not body.strip():
        if x.status_code and x.outcome == "ok" and not u.stream:
            notes.append("response: empty body")
        return "none"
    # The body decides, not the request flag: a JSON body never starts like an event stream.
    if body.lstrip()[:1] in (b"{", b"["):
        return "json"
    if "event-stream" in x.response_content_type.lower() or _SSE_START.match(body):
        return "sse"
    notes.append(f"response: body is neither JSON nor an event stream ({x.response_content_type or 'no content type'})")
    return "other"


def response_json(x: Exchange, notes: list[str]) -> dict[str, Any] | None:
    """The response body as a JSON object, or None with a note."""
    try:
        resp = load_json(x.response_body)
    except (ValueError, RecursionError) as exc:
        notes.append(f"response: {exc}")
        return None
    if not isinstance(resp, dict):
        notes.append("response: body is not a JSON object")
        return None
    return resp


def data_events(x: Exchange, u: Understanding, notes: list[str]) -> tuple[list[tuple[SSEEvent, Any, int]], bool]:
    """Data events (JSON-decoded, None if not JSON) with their end offsets, and whether [DONE] came."""
    events, _ = sse_events_at(x.response_body)
    out: list[tuple[SSEEvent, Any, int]] = []
    done, bad = False, 0
    for ev, end in events:
        if not ev.data:
            continue
        if ev.data.strip() == "[DONE]":
            done = True
            continue
        try:
            obj = json.loads(ev.data)
        except (ValueError, RecursionError):
            obj, bad = None, bad + 1
        out.append((ev, obj, end))
    if bad:
        notes.append(f"response: {bad} stream event(s) are not JSON")
    u.chunk_count = len(out)
    return out, done


def time_stream(x: Exchange, u: Understanding, first_end: int | None) -> None:
    """ttft from the chunk that carried the first content event; rate over the rest of the stream."""
    if first_end is None:
        return
    try:
        u.ttft_ms = ChunkClock(x.stream_timing, len(x.response_body)).at(first_end)
    except (TypeError, ValueError, IndexError):  # malformed timing: no ttft rather than no capture
        u.ttft_ms = None
    if u.ttft_ms is not None and not math.isfinite(u.ttft_ms):
        u.ttft_ms = None
    u.tokens_per_second = tokens_per_second(u.output_tokens, u.ttft_ms, x.duration_ms)


def cost(u: Understanding) -> None:
    """``u.cost_usd`` from the answering model (else the requested one) and the token counts."""
    u.cost_usd = cost_usd(PROVIDER, u.response_model or u.model, u.input_tokens, u.output_tokens, u.cached_tokens)


def count(v: Any) -> int | None:
    """``as_count``, also taking a whole float (12.0): some compatible servers send counts as floats."""
    return as_count(int(v) if isinstance(v, float) and v.is_integer() else v)
