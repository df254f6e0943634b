"""From a spooled capture record to a full capture row: decode, understand, thread.

Runs on the drain side, never on the request path. The result has exactly the columns
of ``schemas.capture.COLUMNS``. Enrichment is shared by every sink (a small cache keyed by
capture id, bounded in rows and in body bytes), and thread inference answers a capture it
has seen with the thread it gave it, so every sink gets the same thread id. No body is
decoded past ``--max-body-bytes``: a decompression bomb costs the cap, not its expansion.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from prompttap.collector.apis import understand
from prompttap.collector.apis.base import Exchange, Understanding
from prompttap.collector.config import Settings
from prompttap.schemas.capture import COLUMN_NAMES, CONVERSATION_APIS, record_body_bytes

log = logging.getLogger("prompttap.enrich")

CACHE_BODY_BYTES = 64 * 2**20
"""The enrichment cache keeps rows whose bodies total at most this (or twice the body cap, if more):
big captures must not pin memory by the thousand. A row evicted early is enriched again for the next
sink, to the same result (thread inference is idempotent per capture)."""

DEFAULT_MAX_BODY_BYTES: int = next(f.default for f in fields(Settings) if f.name == "max_body_bytes")
"""``serve``'s default ``--max-body-bytes``."""


@dataclass(frozen=True, slots=True)
class Decoded:
    """A body with its Content-Encoding undone, never past the size limit."""

    body: bytes  # the decoded bytes (the first ``limit`` when ``cut``), or the body as sent
    note: str = ""  # why it is not (all) decoded, "" when it is
    cut: bool = False  # it decodes to more than ``limit`` bytes: ``body`` holds the first ``limit``


class _Incomplete(Exception):
    """The encoded stream ended early or broke; ``out`` is what decoded before."""

    def __init__(self, out: bytes, cause: str) -> None:
        super().__init__(cause)
        self.out = out


def decode_body(body: bytes, encoding: str, limit: int) -> Decoded:
    """Undo a Content-Encoding, decoding at most ``limit`` bytes (plus one, to see that there is more):
    a body that expands past it (a decompression bomb) costs ``limit``, not its expansion. Unknown codings
    stay as sent; an encoded stream that breaks keeps what decoded before the break."""
    coding = encoding.strip().lower()
    if not coding or coding == "identity" or not body:
        return Decoded(body)
    if limit <= 0:  # nothing may be kept
        return Decoded(b"", "", True)
    decode = _DECODERS.get(coding)
    if decode is None:
        return Decoded(body, f"unknown content-encoding {coding!r}")
    try:
        out, cut = decode(body, limit)
    except ImportError:
        return Decoded(body, f"cannot decode content-encoding {coding!r}: decoder not installed")
    except _Incomplete as exc:
        return Decoded(exc.out or body, f"content-encoding {coding!r} did not decode fully: {exc}")
    except Exception as exc:
        return Decoded(body, f"content-encoding {coding!r} did not decode fully: {exc}")
    return Decoded(out, "", cut)


def _zlib(wbits: int) -> Callable[[bytes, int], tuple[bytes, bool]]:
    """A decoder for one zlib format: gzip (``wbits`` 16+, every member, as ``gzip.decompress`` reads them),
    zlib-wrapped or raw deflate (one stream)."""

    def decode(body: bytes, limit: int) -> tuple[bytes, bool]:
        parts: list[bytes] = []
        n, data = 0, body
        while True:
            d = zlib.decompressobj(wbits)
            try:
                part = d.decompress(data, limit - n) if n < limit else b""  # max_length 0 means no limit
                more = d.decompress(d.unconsumed_tail, 1) if n + len(part) == limit else b""
            except zlib.error as exc:
                raise _Incomplete(b"".join(parts), str(exc)) from None
            parts.append(part)
            n += len(part)
            if more:
                return b"".join(parts), True
            if not d.eof:
                raise _Incomplete(b"".join(parts), "the encoded body ended early")
            data = d.unused_data
            if wbits < 16 or not data.strip(b"\0"):  # deflate has one stream; gzip may pad with zeros
                return b"".join(parts), False
            if n == limit:  # another gzip member follows: it only matters whether it holds a byte
                return b"".join(parts), bool(zlib.decompressobj(wbits).decompress(data, 1))

    return decode


def _deflate(body: bytes, limit: int) -> tuple[bytes, bool]:
    """``deflate`` is zlib-wrapped by the standard, raw deflate from some servers."""
    try:
        return _zlib(zlib.MAX_WBITS)(body, limit)
    except _Incomplete as exc:
        if exc.out:
            raise
        return _zlib(-zlib.MAX_WBITS)(body, limit)


def _brotli(body: bytes, limit: int) -> tuple[bytes, bool]:
    import brotli  # type: ignore[import-not-found]

    d = brotli.Decompressor()
    parts: list[bytes] = []
    n, data = 0, body
    # brotli may return up to about twice the output it is allowed: ask in steps, trim the last one
    while n <= limit:
        try:
            part = d.process(data, output_buffer_limit=min(limit + 1 - n, _STEP))
        except brotli.error as exc:
            raise _Incomplete(b"".join(parts), str(exc)) from None
        data = b""
        parts.append(part)
        n += len(part)
        if d.is_finished():
            break
        if not part and d.can_accept_more_data():
            raise _Incomplete(b"".join(parts), "the encoded body ended early")
    if n > limit:
        parts[-1] = parts[-1][: len(parts[-1]) - (n - limit)]
        return b"".join(parts), True
    return b"".join(parts), False


def _zstd(body: bytes, limit: int) -> tuple[bytes, bool]:
    import zstandard

    reader = zstandard.ZstdDecompressor().stream_reader(body, read_across_frames=True)
    try:
        out = reader.read(limit)
        return out, len(out) == limit and bool(reader.read(1))
    except zstandard.ZstdError as exc:
        raise _Incomplete(b"", str(exc)) from None


_STEP = 1 << 20
_DECODERS: dict[str, Callable[[bytes, int], tuple[bytes, bool]]] = {
    "gzip": _zlib(16 + zlib.MAX_WBITS),
    "x-gzip": _zlib(16 + zlib.MAX_WBITS),
    "deflate": _deflate,
    "br": _brotli,
    "zstd": _zstd,
}


def _as_text(body: bytes, cut: bool = False) -> tuple[str, str]:
    """The body as text and its encoding: UTF-8, else base64. A body cut at the size limit may end
    inside a character: that torn character is dropped rather than the whole text turned to base64."""
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        if cut and exc.reason == "unexpected end of data" and exc.end == len(body):
            return body[: exc.start].decode("utf-8"), "utf-8"
        return base64.b64encode(body).decode("ascii"), "base64"


class Enricher:
    """Callable turning a spool record into a capture row (thread-safe, cached)."""

    def __init__(self, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, cache_size: int = 2048) -> None:
        from prompttap.collector.apis.threads import ThreadIndex

        self.max_body_bytes = max_body_bytes  # serve's --max-body-bytes: no body decodes past it
        self.threads = ThreadIndex()
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, tuple[dict[str, Any], int]] = OrderedDict()  # row, its bodies' size
        self._cache_size = cache_size
        self._cache_bytes = 0
        self._cache_bytes_max = max(CACHE_BODY_BYTES, 2 * max_body_bytes)

    def warm(self, rows: list[dict[str, Any]]) -> None:
        """Teach thread inference the recent past (rows from the store, oldest first)."""
        self.threads.warm(rows)

    def forget(self, capture_ids: frozenset[str]) -> None:
        """Let deleted captures' rows go (a privacy delete: they are never asked for again)."""
        with self._lock:
            for key in [k for k in self._cache if k.partition(":")[0] in capture_ids]:
                self._cache_bytes -= self._cache.pop(key)[1]

    def __call__(self, record: dict[str, Any]) -> dict[str, Any]:
        # A capture re-spooled with more bytes (data after its terminal event) is a new key.
        key = f"{record.get('id')}:{record.get('response_size')}"
        with self._lock:
            cached = self._cache.get(key)
            if cached is None:
                row = self._enrich(record)
                size = len(row["request_body"]) + len(row["response_body"])
                self._cache[key] = (row, size)
                self._cache_bytes += size
                while len(self._cache) > self._cache_size or (
                    self._cache_bytes > self._cache_bytes_max and len(self._cache) > 1
                ):
                    self._cache_bytes -= self._cache.popitem(last=False)[1][1]
            else:
                row = cached[0]
                self._cache.move_to_end(key)
        return dict(row)

    def _enrich(self, rec: dict[str, Any]) -> dict[str, Any]:
        notes: list[str] = []
        req_headers: dict[str, str] = rec.get("request_headers") or {}
        resp_headers: dict[str, str] = rec.get("response_headers") or {}
        limit = self.max_body_bytes
        req = decode_body(record_body_bytes(rec, "request"), req_headers.get("content-encoding", ""), limit)
        resp = decode_body(record_body_bytes(rec, "response"), resp_headers.get("content-encoding", ""), limit)
        notes += [req.note, resp.note]
        if rec.get("truncated"):
            notes.append("body truncated at the size limit")
        for side, decoded in (("request", req), ("response", resp)):
            if decoded.cut:
                notes.append(f"{side} body decodes to more than the size limit: the first {limit} bytes are kept")
        req_body, resp_body = req.body, resp.body

        row: dict[str, Any] = {name: None for name in COLUMN_NAMES}
        for name in COLUMN_NAMES:
            if name in rec:
                row[name] = rec[name]
        row["truncated"] = bool(rec.get("truncated")) or req.cut or resp.cut
        row["request_body"], row["request_body_encoding"] = _as_text(req_body, req.cut)
        row["response_body"], row["response_body_encoding"] = _as_text(resp_body, resp.cut)

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
