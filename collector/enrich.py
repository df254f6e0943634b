"""From a spooled capture record to a full capture row: decode, understand, thread.

Runs on the drain side, never on the request path. The result has exactly the columns
of ``schemas.capture.COLUMNS``. Enrichment is done once per capture and shared by every
sink (a small cache keyed by capture id), so thread inference sees each capture once and
every sink gets the same thread id.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import zlib
from collections import OrderedDict
from typing import Any

from prompttap.collector.apis import understand
from prompttap.collector.apis.base import Exchange, Understanding
from prompttap.schemas.capture import COLUMN_NAMES, CONVERSATION_APIS, record_body_bytes

log = logging.getLogger("prompttap.enrich")


def decode_body(body: bytes, encoding: str) -> tuple[bytes, str]:
    """Undo a Content-Encoding; returns (bytes, note). Unknown codings stay as sent."""
    coding = encoding.strip().lower()
    if not coding or coding == "identity" or not body:
        return body, ""
    try:
        if coding in ("gzip", "x-gzip"):
            return zlib.decompress(body, 16 + zlib.MAX_WBITS), ""
        if coding == "deflate":
            try:
                return zlib.decompress(body), ""
            except zlib.error:
                return zlib.decompress(body, -zlib.MAX_WBITS), ""
        if coding == "br":
            import brotli  # type: ignore[import-not-found]

            return brotli.decompress(body), ""
        if coding == "zstd":
            import zstandard

            return zstandard.ZstdDecompressor().decompressobj().decompress(body), ""
    except ImportError:
        return body, f"cannot decode content-encoding {coding!r}: decoder not installed"
    except Exception as exc:
        partial = _partial_gunzip(body) if coding in ("gzip", "x-gzip") else b""
        return (partial or body), f"content-encoding {coding!r} did not decode fully: {exc}"
    return body, f"unknown content-encoding {coding!r}"


def _partial_gunzip(body: bytes) -> bytes:
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        return d.decompress(body)
    except zlib.error:
        return b""


def _as_text(body: bytes) -> tuple[str, str]:
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), "base64"


class Enricher:
    """Callable turning a spool record into a capture row (thread-safe, cached)."""

    def __init__(self, cache_size: int = 2048) -> None:
        from prompttap.collector.apis.threads import ThreadIndex

        self.threads = ThreadIndex()
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._cache_size = cache_size

    def warm(self, rows: list[dict[str, Any]]) -> None:
        """Teach thread inference the recent past (rows from the store, oldest first)."""
        self.threads.warm(rows)

    def __call__(self, record: dict[str, Any]) -> dict[str, Any]:
        # A capture re-spooled with more bytes (data after its terminal event) is a new key.
        key = f"{record.get('id')}:{record.get('response_size')}"
        with self._lock:
            row = self._cache.get(key)
            if row is None:
                row = self._enrich(record)
                self._cache[key] = row
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(key)
        return dict(row)

    def _enrich(self, rec: dict[str, Any]) -> dict[str, Any]:
        notes: list[str] = []
        req_headers: dict[str, str] = rec.get("request_headers") or {}
        resp_headers: dict[str, str] = rec.get("response_headers") or {}
        req_body, note = decode_body(record_body_bytes(rec, "request"), req_headers.get("content-encoding", ""))
        notes.append(note)
        resp_body, note = decode_body(record_body_bytes(rec, "response"), resp_headers.get("content-encoding", ""))
        notes.append(note)
        if rec.get("truncated"):
            notes.append("body truncated at the size limit")

        row: dict[str, Any] = {name: None for name in COLUMN_NAMES}
        for name in COLUMN_NAMES:
            if name in rec:
                row[name] = rec[name]
        row["request_body"], row["request_body_encoding"] = _as_text(req_body)
        row["response_body"], row["response_body_encoding"] = _as_text(resp_body)

        path, _, query = (rec.get("upstream_url") or "").partition("://")[2].partition("/")[2].partition("?")
        x = Exchange(
            method=rec.get("method", ""),
            path="/" + path,
            query=query,
            request_body=req_body,
            response_body=resp_body,
            response_content_type=resp_headers.get("content-type", ""),
            status_code=rec.get("status_code", 0),
            outcome=rec.get("outcome", ""),
            duration_ms=rec.get("duration_ms", 0.0),
            stream_timing=tuple(tuple(t) for t in rec.get("stream_timing") or ()),  # type: ignore[misc]
        )
        u = understand(x)
        self._apply(row, u, rec)
        notes.append(u.parse_error)
        row["parse_error"] = "; ".join(n for n in notes if n)
        row["recorded_at"] = time.time()
        return row

    def _apply(self, row: dict[str, Any], u: Understanding, rec: dict[str, Any]) -> None:
        for name in (
            "api",
            "model",
            "response_model",
            "stream",
            "params",
            "system_prompt",
            "messages",
            "tools",
            "output_text",
            "output_tool_calls",
            "finish_reason",
            "response",
            "response_id",
            "input_tokens",
            "output_tokens",
            "cached_tokens",
            "reasoning_tokens",
            "tokens_per_second",
            "cost_usd",
            "chunk_count",
            "incomplete",
        ):
            row[name] = getattr(u, name)
        if u.stream and u.ttft_ms is not None:
            row["ttft_ms"] = u.ttft_ms  # first content event beats first byte for streams
        template_id = ""
        thread_id = ""
        if u.api in CONVERSATION_APIS and (u.messages or u.system_prompt):
            try:
                from prompttap.schemas.templates import template_of

                template_id = template_of(u.system_prompt).id
                output = {"role": "assistant", "content": u.output_text, "tool_calls": u.output_tool_calls}
                thread_id = self.threads.assign(
                    str(rec.get("id")),
                    rec.get("route", ""),
                    rec.get("session_id", ""),
                    template_id,
                    u.messages,
                    output if rec.get("outcome") == "ok" else None,
                    response_id=u.response_id,
                    previous_response_id=str(u.params.get("previous_response_id") or ""),
                )
            except Exception as exc:
                log.warning("thread inference failed for %s: %s", rec.get("id"), exc)
        row["prompt_template_id"] = template_id
        row["thread_id"] = thread_id
