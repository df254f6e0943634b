"""The capture record: one proxied exchange, defined once.

Every other part of prompttap derives from this table of fields: the spool record
(`Capture.to_record` / `from_record`), the ClickHouse columns (checked against the
migrations in ``schemas/migrations/`` by a contract test), and the inspector's JSON API.

A field belongs to one of two layers:

- ``raw``: filled by the proxy on the request path (timings, headers, bodies).
- ``understood``: filled off the request path, when a spooled capture is parsed
  (``collector.apis``) before it reaches the sinks. Absent means "not understood".
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

RECORD_VERSION = 1
"""Version of the spool/record layout produced by ``Capture.to_record``."""

Outcome = Literal["ok", "upstream_error", "upstream_unreachable", "client_cancelled", "proxy_error"]
OUTCOMES: tuple[str, ...] = (
    "ok",
    "upstream_error",
    "upstream_unreachable",
    "client_cancelled",
    "proxy_error",
)

# The api identifiers issue #3 defines; ``unknown`` keeps the capture raw.
APIS: tuple[str, ...] = (
    "openai.chat",
    "openai.responses",
    "openai.completions",
    "openai.embeddings",
    "openai.models",
    "anthropic.messages",
    "ollama.chat",
    "ollama.generate",
    "ollama.embed",
    "gemini.generate",
    "unknown",
)

# The APIs whose captures are conversations: they get a prompt template and a thread, and
# they are what export turns into training data. Embeddings, model listings and unknown
# traffic are not conversations.
CONVERSATION_APIS: tuple[str, ...] = (
    "openai.chat",
    "openai.responses",
    "openai.completions",
    "anthropic.messages",
    "ollama.chat",
    "ollama.generate",
    "gemini.generate",
)


@dataclass(frozen=True, slots=True)
class Column:
    """One stored field: its name, ClickHouse type, layer and meaning."""

    name: str
    ch_type: str
    layer: Literal["raw", "understood"]
    doc: str
    json: bool = False  # stored as JSON text, returned parsed by the API


COLUMNS: tuple[Column, ...] = (
    # identity and timing
    Column("id", "UUID", "raw", "capture id (UUIDv7: time-ordered)"),
    Column("trace_id", "FixedString(32)", "raw", "W3C trace id (hex), the client's if it sent traceparent"),
    Column("span_id", "FixedString(16)", "raw", "span id (hex) of this capture's span"),
    Column("parent_span_id", "String", "raw", "client span id from traceparent, '' if none"),
    Column("started_at", "DateTime64(6, 'UTC')", "raw", "when the request reached the proxy"),
    Column("duration_ms", "Float64", "raw", "request start to last response byte"),
    Column(
        "ttft_ms",
        "Nullable(Float64)",
        "raw",
        "first response byte (non-stream) or first content event (stream)",
    ),
    # where it went
    Column("route", "LowCardinality(String)", "raw", "route name ('default' for unlabelled traffic)"),
    Column("method", "LowCardinality(String)", "raw", "HTTP method"),
    Column("path", "String", "raw", "request path and query as the client sent it, credentials redacted"),
    Column("upstream_url", "String", "raw", "full upstream URL, credentials redacted"),
    Column("status_code", "UInt16", "raw", "status the client got (0 if the client got nothing)"),
    Column("outcome", "LowCardinality(String)", "raw", "one of OUTCOMES"),
    Column("error", "String", "raw", "transport/proxy error text, '' if none"),
    # what crossed the wire
    Column("request_headers", "Map(String, String)", "raw", "request headers, credentials redacted"),
    Column("response_headers", "Map(String, String)", "raw", "response headers, credentials redacted"),
    Column("request_body", "String CODEC(ZSTD(3))", "raw", "request body, decompressed (base64 if binary)"),
    Column("response_body", "String CODEC(ZSTD(3))", "raw", "response body or full event stream, decompressed"),
    Column("request_body_encoding", "LowCardinality(String)", "raw", "'utf-8' or 'base64'"),
    Column("response_body_encoding", "LowCardinality(String)", "raw", "'utf-8' or 'base64'"),
    Column("request_size", "UInt64", "raw", "request body bytes on the wire"),
    Column("response_size", "UInt64", "raw", "response body bytes on the wire"),
    Column("request_sha256", "String", "raw", "sha256 of the whole request body (hex)"),
    Column("response_sha256", "String", "raw", "sha256 of the whole response body as sent (hex)"),
    Column("truncated", "Bool", "raw", "a stored body was cut at the size limit"),
    Column(
        "stream_timing",
        "Array(Tuple(offset_ms Float32, size UInt32))",
        "raw",
        "arrival offset (ms after request start) and size of every response chunk",
    ),
    # who sent it
    Column("client", "LowCardinality(String)", "raw", "User-Agent"),
    Column("session_id", "String", "raw", "X-Prompttap-Session"),
    Column("user_id", "String", "raw", "X-Prompttap-User"),
    Column("tags", "Array(LowCardinality(String))", "raw", "X-Prompttap-Tags: a,b"),
    Column("replay_of", "Nullable(UUID)", "raw", "capture this one replays (X-Prompttap-Replay-Of)"),
    # understood (issue #3): what was asked and answered
    Column("api", "LowCardinality(String)", "understood", "one of APIS"),
    Column("model", "LowCardinality(String)", "understood", "model requested"),
    Column("response_model", "LowCardinality(String)", "understood", "model that answered"),
    Column("stream", "Bool", "understood", "the client asked for a stream"),
    Column("params", "String", "understood", "sampling and output parameters", json=True),
    Column("system_prompt", "String CODEC(ZSTD(3))", "understood", "system/developer instructions as text"),
    Column("messages", "String CODEC(ZSTD(3))", "understood", "normalized messages", json=True),
    Column("tools", "String CODEC(ZSTD(3))", "understood", "tool definitions", json=True),
    Column("output_text", "String CODEC(ZSTD(3))", "understood", "the answer's text"),
    Column("output_tool_calls", "String", "understood", "tool calls in the answer", json=True),
    Column("finish_reason", "LowCardinality(String)", "understood", "finish/stop reason"),
    Column("response", "String CODEC(ZSTD(3))", "understood", "response object (streams reassembled)", json=True),
    Column("response_id", "String", "understood", "upstream response id"),
    Column("input_tokens", "Nullable(UInt32)", "understood", "input tokens as reported"),
    Column("output_tokens", "Nullable(UInt32)", "understood", "output tokens as reported"),
    Column("cached_tokens", "Nullable(UInt32)", "understood", "cached input tokens as reported"),
    Column("reasoning_tokens", "Nullable(UInt32)", "understood", "reasoning tokens as reported"),
    Column("tokens_per_second", "Nullable(Float64)", "understood", "output tokens per second (streams)"),
    Column("cost_usd", "Nullable(Float64)", "understood", "cost from the price database"),
    Column("chunk_count", "UInt32", "understood", "stream events seen"),
    Column("incomplete", "Bool", "understood", "the stream ended before its final event"),
    Column("thread_id", "String", "understood", "conversation this capture belongs to"),
    Column("prompt_template_id", "String", "understood", "fingerprint of the masked system prompt"),
    Column("parse_error", "String", "understood", "why the body could not be understood, '' if it was"),
    # bookkeeping
    Column("recorded_at", "DateTime64(6, 'UTC')", "raw", "when the row was written (ReplacingMergeTree version)"),
)

COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)
JSON_COLUMNS: frozenset[str] = frozenset(c.name for c in COLUMNS if c.json)
UNDERSTOOD: frozenset[str] = frozenset(c.name for c in COLUMNS if c.layer == "understood")


class _Uuid7:
    """UUIDv7 with a counter within the millisecond (RFC 9562 section 6.2, method 1).

    Layout: 48-bit unix milliseconds, version, a 42-bit counter in ``rand_a`` and the top of
    ``rand_b``, variant, 32 random bits. The counter starts at a random value (its top bit clear,
    room to count) in each new millisecond and adds one per id within it; if it ever runs out, the
    timestamp moves one millisecond ahead. A clock that steps back keeps the last millisecond. So
    the ids of one process strictly increase; the random seed and tail keep them unguessable.
    """

    COUNTER_BITS = 42

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ms = -1
        self.counter = 0

    def new(self) -> uuid.UUID:
        with self.lock:
            ms = time.time_ns() // 1_000_000
            if ms > self.ms:
                self.ms, self.counter = ms, self._seed()
            elif self.counter + 1 >= 1 << self.COUNTER_BITS:
                self.ms, self.counter = self.ms + 1, self._seed()
            else:
                self.counter += 1
            ms, counter = self.ms, self.counter
        tail = int.from_bytes(os.urandom(4), "big")
        value = (ms & ((1 << 48) - 1)) << 80
        value |= 0x7 << 76
        value |= (counter >> 30) << 64  # 12 bits: rand_a
        value |= 0b10 << 62
        value |= (counter & ((1 << 30) - 1)) << 32  # 30 bits: the top of rand_b
        value |= tail
        return uuid.UUID(int=value)

    def _seed(self) -> int:
        return int.from_bytes(os.urandom(6), "big") & ((1 << (self.COUNTER_BITS - 1)) - 1)


_uuid7 = _Uuid7()
# A forked child gets its own sequence (and a lock no thread of the parent can be holding).
os.register_at_fork(after_in_child=_uuid7.__init__)


def new_capture_id() -> uuid.UUID:
    """A UUIDv7: sorts by creation time, and within one process ids alone order captures, even
    several made in the same millisecond (a counter; see ``_Uuid7``). Across processes they
    order by millisecond only."""
    return _uuid7.new()


@dataclass(slots=True)
class Capture:
    """One exchange as the proxy saw it (the ``raw`` layer).

    Bodies are kept as bytes here; ``to_record`` turns them into text (utf-8, or base64
    when they are not valid utf-8) so a record is plain JSON.
    """

    id: uuid.UUID
    trace_id: str
    span_id: str
    parent_span_id: str
    started_at: float  # unix seconds
    route: str
    method: str
    path: str
    upstream_url: str
    duration_ms: float = 0.0
    ttft_ms: float | None = None
    status_code: int = 0
    outcome: str = "ok"
    error: str = ""
    request_headers: dict[str, str] = field(default_factory=dict)
    response_headers: dict[str, str] = field(default_factory=dict)
    request_body: bytes = b""
    response_body: bytes = b""
    request_size: int = 0
    response_size: int = 0
    request_sha256: str = ""
    response_sha256: str = ""
    truncated: bool = False
    stream_timing: list[tuple[float, int]] = field(default_factory=list)
    client: str = ""
    session_id: str = ""
    user_id: str = ""
    tags: list[str] = field(default_factory=list)
    replay_of: str | None = None
    tracestate: str = ""

    def to_record(self) -> dict[str, Any]:
        """The spool record: JSON-ready, versioned, raw layer only."""
        rec = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        rec["v"] = RECORD_VERSION
        rec["id"] = str(self.id)
        rec["request_body"], rec["request_body_encoding"] = _body_text(self.request_body)
        rec["response_body"], rec["response_body_encoding"] = _body_text(self.response_body)
        return rec


def _body_text(body: bytes) -> tuple[str, str]:
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        import base64

        return base64.b64encode(body).decode("ascii"), "base64"


def record_body_bytes(record: dict[str, Any], which: Literal["request", "response"]) -> bytes:
    """The body bytes a record holds, whatever their encoding."""
    text = record.get(f"{which}_body") or ""
    if record.get(f"{which}_body_encoding") == "base64":
        import base64

        return base64.b64decode(text)
    return text.encode("utf-8")
