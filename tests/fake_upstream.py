"""Deterministic fake LLM upstream (OpenAI, Anthropic, Ollama, Gemini) for prompttap's proxy tests.

A raw ASGI app served by uvicorn (h11) over a real socket, either in a background thread
(``with FakeUpstream() as fake: fake.base_url``) or as a script (``python tests/fake_upstream.py --port N``,
``--port 0`` picks one; it prints ``FAKE_UPSTREAM_READY http://127.0.0.1:<port>`` once listening).

Determinism -- the plain response body is ``render(method, path, query, headers, body).body``:
- ids derive from ``request_key(body)``: sha256 of the canonical JSON body minus ``stream``/``stream_options``
  (a streamed and a non-streamed request share ids), or of the ``nonce`` field when the body has one;
  timestamps are constants (``CREATED``); JSON is ``dumps()`` (compact, UTF-8 unescaped).
- reply text is ``reply_text(last user text)`` = ``"Echo: <text> 🦜你好"`` ("Echo <i>:" for choice i > 0),
  streamed as ``split_words()`` pieces; ``max_tokens``-style limits cut it to that many pieces.
- prompt tokens = ``count_words(messages...)``; completion tokens = number of streamed pieces.
- tools + "call tool" in the last user message -> two calls to the first tool, arguments from
  ``tool_arguments(schema, k)``, streamed in ``TOOL_ARG_PIECE_CHARS``-character pieces.
- a stream reassembled with ``reassemble_*()`` equals the non-stream JSON of the same request.

Fault controls (request headers; none applies to ``/__fake/*``):
  x-fake-status: N          error JSON in the API's own shape (+ x-fake-retry-after: S sets retry-after)
  x-fake-first-delay-ms     delay before the first body chunk (streams send headers at once)
  x-fake-chunk-delay-ms     delay between stream chunks
  x-fake-reset-after: N     cut the connection after N body chunks (x-fake-reset-mode: close (FIN, default)
                            or rst); the chunked terminator / rest of a content-length body never arrives
  x-fake-hang: 1            read the request, never answer (until the client leaves or the server stops)
  x-fake-gzip: 1            content-encoding: gzip; streams are one gzip member sync-flushed per chunk
  x-fake-slow-body-ms: D    non-stream body in x-fake-slow-body-bytes (default 32) pieces, D ms apart
  x-fake-echo-headers: 1    any method/path: JSON echo of method, path, query, headers, body sha256
  x-fake-binary: N          N bytes of random.Random(N).randbytes(N), application/octet-stream
  x-fake-answer-model: M    answer as model M whatever the request asked for (a gateway that routes or falls back)
Introspection: ``fake.requests`` (``RecordedRequest``), ``GET /__fake/requests``, ``POST /__fake/reset``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import hashlib
import json
import random
import re
import socket
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import uvicorn

try:
    from tests.servers import start_in_thread, stop_thread
except ImportError:  # script mode: ``python tests/fake_upstream.py`` puts tests/ itself on the path
    from servers import start_in_thread, stop_thread  # type: ignore[no-redef]

CREATED = 1_700_000_000
CREATED_AT_ISO = "2023-11-14T22:13:20Z"  # same instant as CREATED, for Ollama's created_at
FINGERPRINT = "fp_fake"
REPLY_SUFFIX = "🦜你好"  # 4-byte emoji + CJK so every reply exercises multi-byte UTF-8
DEFAULT_EMBED_DIMS = 8
TOOL_ARG_PIECE_CHARS = 7
MODELS = [
    "gpt-4o-mini",
    "gpt-4o",
    "text-embedding-3-small",
    "claude-sonnet-4-5",
    "llama3.2",
    "gemini-2.0-flash",
]
STREAM_KEYS = ("stream", "stream_options")

JSON_CT = "application/json"
SSE_CT = "text/event-stream; charset=utf-8"
NDJSON_CT = "application/x-ndjson"


# --------------------------------------------------------------------------------------------------
# Planning: request -> exact plain bytes (pure, so tests can predict responses byte for byte)
# --------------------------------------------------------------------------------------------------


@dataclass
class Plan:
    status: int
    headers: list[tuple[str, str]]
    chunks: list[bytes]  # one element per SSE event / NDJSON line; one element for plain JSON
    stream: bool  # streamed responses use chunked encoding, others get content-length

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


class _BadRequest(Exception):
    pass


def dumps(obj: Any) -> str:
    """The JSON serialisation used for every body and event the fake sends."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _json_plan(obj: Any, status: int = 200, extra: list[tuple[str, str]] | None = None) -> Plan:
    return Plan(status, [("content-type", JSON_CT), *(extra or [])], [dumps(obj).encode()], False)


def _stream_plan(chunks: list[bytes], content_type: str, extra: list[tuple[str, str]] | None = None) -> Plan:
    headers = [("content-type", content_type), ("cache-control", "no-cache"), *(extra or [])]
    return Plan(200, headers, chunks, True)


def _sse(data: Any, event: str | None = None, sep: str = "\n\n") -> bytes:
    payload = data if isinstance(data, str) else dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}{sep}".encode()


def request_key(body: Any, raw: bytes = b"") -> str:
    """24 hex chars every id in a response is derived from (see module docstring)."""
    if isinstance(body, dict) and "nonce" in body:
        basis = "nonce:" + dumps(body["nonce"])
    elif isinstance(body, dict):
        basis = json.dumps({k: v for k, v in body.items() if k not in STREAM_KEYS}, sort_keys=True)
    else:
        basis = raw.decode("utf-8", "replace")
    return hashlib.sha256(basis.encode()).hexdigest()[:24]


def _collect_text(node: Any) -> list[str]:
    # Only content/text/parts keys: tool-call arguments and other metadata are not "prompt words".
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [t for item in node for t in _collect_text(item)]
    if isinstance(node, dict):
        return [t for key in ("content", "text", "parts") if key in node for t in _collect_text(node[key])]
    return []


def count_words(*nodes: Any) -> int:
    """Prompt token count: whitespace-separated words in all content/text/parts strings."""
    return sum(len(t.split()) for node in nodes for t in _collect_text(node))


def _last_user_text(messages: Any) -> str:
    if not isinstance(messages, list):
        return ""
    for msg in reversed(messages):
        if isinstance(msg, dict) and msg.get("role", "user") == "user":
            return " ".join(_collect_text(msg.get("content", msg.get("parts"))))
    return ""


def reply_text(user_text: str, index: int = 0) -> str:
    """The assistant text for choice ``index``; it is streamed as the pieces of ``split_words``."""
    label = "Echo:" if index == 0 else f"Echo {index}:"
    return f"{label} {user_text} {REPLY_SUFFIX}"


def split_words(text: str) -> list[str]:
    """Word pieces that concatenate back to ``text`` exactly (a space leads every piece but the first)."""
    words = text.split(" ")
    return [words[0]] + [" " + w for w in words[1:]]


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def tool_arguments(schema: Any, call_index: int) -> dict[str, Any]:
    """Arguments for call ``call_index``: one value per schema property, chosen by its type."""
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict) or not props:
        return {"call": call_index}
    out: dict[str, Any] = {}
    for name, spec in props.items():
        spec = spec if isinstance(spec, dict) else {}
        kind = spec.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), None)
        if isinstance(kind, str):
            kind = kind.lower()  # Gemini spells types in upper case
        enum = spec.get("enum")
        if isinstance(enum, list) and enum:
            out[name] = enum[call_index % len(enum)]
        elif kind == "integer":
            out[name] = call_index
        elif kind == "number":
            out[name] = call_index + 0.5
        elif kind == "boolean":
            out[name] = call_index % 2 == 0
        elif kind == "array":
            out[name] = []
        elif kind == "object":
            out[name] = {}
        else:
            out[name] = f"{name}-{call_index}"
    return out


@dataclass
class _Call:
    index: int
    name: str
    args: dict[str, Any]

    @property
    def args_json(self) -> str:
        return json.dumps(self.args, ensure_ascii=False)

    @property
    def arg_pieces(self) -> list[str]:
        return _pieces(self.args_json, TOOL_ARG_PIECE_CHARS)


@dataclass
class _Gen:
    text_pieces: list[str]
    calls: list[_Call]
    truncated: bool

    @property
    def text(self) -> str:
        return "".join(self.text_pieces)

    @property
    def tokens(self) -> int:  # completion tokens == number of streamed pieces
        return sum(len(c.arg_pieces) for c in self.calls) if self.calls else len(self.text_pieces)


def _generate(user_text: str, tool: tuple[str, Any] | None, limit: Any, index: int = 0) -> _Gen:
    if tool is not None and "call tool" in user_text.lower():
        name, schema = tool
        return _Gen([], [_Call(k, name, tool_arguments(schema, k)) for k in range(2)], False)
    pieces = split_words(reply_text(user_text, index))
    if isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit < len(pieces):
        return _Gen(pieces[:limit], [], True)
    return _Gen(pieces, [], False)


def embedding_vector(text: str, dims: int = DEFAULT_EMBED_DIMS) -> list[float]:
    """k/1024 - 1 values: exact in float32 and short in JSON, so base64 and float forms agree."""
    out: list[float] = []
    counter = 0
    while len(out) < dims:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        out += [(int.from_bytes(digest[i : i + 2], "big") % 2048) / 1024 - 1 for i in range(0, 32, 2)]
        counter += 1
    return out[:dims]


def binary_body(n: int) -> bytes:
    return random.Random(n).randbytes(n)


# ---------------------------------------------------------------- errors


_OPENAI_ERR = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "not_found"),
    429: ("requests", "rate_limit_exceeded"),
}
_ANTHROPIC_ERR = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_GEMINI_ERR = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def error_plan(family: str, status: int, message: str, extra: list[tuple[str, str]] | None = None) -> Plan:
    """An error in the API family's own shape: openai | anthropic | ollama | gemini."""
    if family == "anthropic":
        kind = _ANTHROPIC_ERR.get(status, "api_error" if status >= 500 else "invalid_request_error")
        obj: Any = {"type": "error", "error": {"type": kind, "message": message}}
    elif family == "ollama":
        obj = {"error": message}
    elif family == "gemini":
        name = _GEMINI_ERR.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")
        obj = {"error": {"code": status, "message": message, "status": name}}
    else:
        kind, code = _OPENAI_ERR.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
        obj = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return _json_plan(obj, status, extra)


def _family(path: str) -> str:
    if path.startswith("/api/"):
        return "ollama"
    if path.startswith("/v1/messages"):
        return "anthropic"
    if _GEMINI_PATH.match(path) or path.startswith("/v1beta/"):
        return "gemini"
    return "openai"


# ---------------------------------------------------------------- OpenAI


def _openai_tool(tools: Any) -> tuple[str, Any] | None:
    for tool in tools if isinstance(tools, list) else []:
        if not isinstance(tool, dict):
            continue
        fn = tool.get("function") if isinstance(tool.get("function"), dict) else tool
        if isinstance(fn.get("name"), str) and tool.get("type", "function") == "function":
            return fn["name"], fn.get("parameters")
    return None


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _include_usage(body: dict[str, Any]) -> bool:
    opts = body.get("stream_options")
    return isinstance(opts, dict) and bool(opts.get("include_usage"))


def _openai_chat(body: dict[str, Any], key: str) -> Plan:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise _BadRequest("'messages' must be a list")
    model = body.get("model") or MODELS[0]
    n = body.get("n") or 1
    if not isinstance(n, int) or not 1 <= n <= 8:
        raise _BadRequest("'n' must be an integer between 1 and 8")
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    user = _last_user_text(messages)
    tool = _openai_tool(body.get("tools"))
    gens = [_generate(user, tool, limit, i) for i in range(n)]
    usage = _usage(count_words(messages), sum(g.tokens for g in gens))
    head = {"id": f"chatcmpl-{key}", "object": "chat.completion", "created": CREATED, "model": model}
    head["system_fingerprint"] = FINGERPRINT
    chunk_head = {**head, "object": "chat.completion.chunk"}

    def call_id(i: int, call: _Call) -> str:
        return f"call_{key[:16]}_{i}_{call.index}"

    def finish(g: _Gen) -> str:
        return "tool_calls" if g.calls else "length" if g.truncated else "stop"

    if not body.get("stream"):
        choices = []
        for i, g in enumerate(gens):
            message: dict[str, Any] = {
                "role": "assistant",
                "content": None if g.calls else g.text,
                "refusal": None,
            }
            if g.calls:
                message["tool_calls"] = [
                    {
                        "id": call_id(i, c),
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.args_json},
                    }
                    for c in g.calls
                ]
            choices.append({"index": i, "message": message, "logprobs": None, "finish_reason": finish(g)})
        return _json_plan({**head, "choices": choices, "usage": usage})

    per_choice: list[list[tuple[dict[str, Any], str | None]]] = []
    for i, g in enumerate(gens):
        deltas: list[tuple[dict[str, Any], str | None]] = [
            ({"role": "assistant", "content": None if g.calls else "", "refusal": None}, None)
        ]
        for c in g.calls:
            start = {"index": c.index, "id": call_id(i, c), "type": "function"}
            deltas.append(({"tool_calls": [{**start, "function": {"name": c.name, "arguments": ""}}]}, None))
            deltas += [({"tool_calls": [{"index": c.index, "function": {"arguments": p}}]}, None) for p in c.arg_pieces]
        deltas += [({"content": p}, None) for p in g.text_pieces]
        deltas.append(({}, finish(g)))
        per_choice.append(deltas)
    with_usage = _include_usage(body)
    chunks = []
    # Interleave choices position by position, as the real API does for n > 1.
    for pos in range(max(len(d) for d in per_choice)):
        for i, deltas in enumerate(per_choice):
            if pos < len(deltas):
                delta, reason = deltas[pos]
                choice = {"index": i, "delta": delta, "logprobs": None, "finish_reason": reason}
                chunk: dict[str, Any] = {**chunk_head, "choices": [choice]}
                if with_usage:
                    chunk["usage"] = None
                chunks.append(_sse(chunk))
    if with_usage:
        chunks.append(_sse({**chunk_head, "choices": [], "usage": usage}))
    chunks.append(_sse("[DONE]"))
    return _stream_plan(chunks, SSE_CT)


def _openai_completion(body: dict[str, Any], key: str) -> Plan:
    prompt = body.get("prompt", "")
    prompts = prompt if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt) else [prompt]
    texts = [p if isinstance(p, str) else dumps(p) for p in prompts]
    model = body.get("model") or "gpt-3.5-turbo-instruct"
    gens = [_generate(t, None, body.get("max_tokens"), 0) for t in texts]
    usage = _usage(count_words(texts), sum(g.tokens for g in gens))
    head = {"id": f"cmpl-{key}", "object": "text_completion", "created": CREATED, "model": model}
    if not body.get("stream"):
        choices = [
            {
                "text": g.text,
                "index": i,
                "logprobs": None,
                "finish_reason": "length" if g.truncated else "stop",
            }
            for i, g in enumerate(gens)
        ]
        return _json_plan({**head, "choices": choices, "usage": usage})
    chunks = []
    for i, g in enumerate(gens):
        for p in g.text_pieces:
            chunks.append(_sse({**head, "choices": [{"text": p, "index": i, "logprobs": None, "finish_reason": None}]}))
        reason = "length" if g.truncated else "stop"
        chunks.append(_sse({**head, "choices": [{"text": "", "index": i, "logprobs": None, "finish_reason": reason}]}))
    if _include_usage(body):
        chunks.append(_sse({**head, "choices": [], "usage": usage}))
    chunks.append(_sse("[DONE]"))
    return _stream_plan(chunks, SSE_CT)


def _embed_inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return [" ".join(map(str, value))]  # a single token array
    if isinstance(value, list):
        return [v if isinstance(v, str) else " ".join(map(str, v)) if isinstance(v, list) else dumps(v) for v in value]
    raise _BadRequest("'input' must be a string or a list")


def _openai_embeddings(body: dict[str, Any]) -> Plan:
    texts = _embed_inputs(body.get("input"))
    dims = body.get("dimensions") or DEFAULT_EMBED_DIMS
    as_b64 = body.get("encoding_format") == "base64"
    data = []
    for i, text in enumerate(texts):
        vec: Any = embedding_vector(text, dims)
        if as_b64:
            vec = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
        data.append({"object": "embedding", "index": i, "embedding": vec})
    words = count_words(texts)
    usage = {"prompt_tokens": words, "total_tokens": words}
    return _json_plan({"object": "list", "data": data, "model": body.get("model") or MODELS[2], "usage": usage})


def _model_obj(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": CREATED, "owned_by": "fake-upstream"}


# ---------------------------------------------------------------- OpenAI Responses


def _responses(body: dict[str, Any], key: str) -> Plan:
    raw_input = body.get("input", "")
    if isinstance(raw_input, str):
        user = raw_input
        prompt_nodes: list[Any] = [raw_input]
    elif isinstance(raw_input, list):
        user = _last_user_text([m for m in raw_input if isinstance(m, dict) and "role" in m])
        prompt_nodes = raw_input
    else:
        raise _BadRequest("'input' must be a string or a list")
    instructions = body.get("instructions")
    tools = body.get("tools") if isinstance(body.get("tools"), list) else []
    gen = _generate(user, _openai_tool(tools), body.get("max_output_tokens"))
    prompt = count_words(instructions, prompt_nodes)
    usage = {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": gen.tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + gen.tokens,
    }
    status = "incomplete" if gen.truncated else "completed"
    msg_id = f"msg_{key}"
    part = {"type": "output_text", "text": gen.text, "annotations": [], "logprobs": []}
    if gen.calls:
        items: list[dict[str, Any]] = [
            {
                "type": "function_call",
                "id": f"fc_{key[:16]}_{c.index}",
                "call_id": f"call_{key[:16]}_{c.index}",
                "name": c.name,
                "arguments": c.args_json,
                "status": "completed",
            }
            for c in gen.calls
        ]
    else:
        items = [{"type": "message", "id": msg_id, "status": status, "role": "assistant", "content": [part]}]
    response: dict[str, Any] = {
        "id": f"resp_{key}",
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if gen.truncated else None,
        "instructions": instructions,
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body.get("model") or MODELS[0],
        "output": items,
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": tools,
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": usage,
        "metadata": body.get("metadata") or {},
    }
    if not body.get("stream"):
        return _json_plan(response)

    events: list[tuple[str, dict[str, Any]]] = []
    pending = {**response, "status": "in_progress", "output": [], "usage": None, "incomplete_details": None}
    events += [("response.created", {"response": pending}), ("response.in_progress", {"response": pending})]
    if gen.calls:
        for out_index, (item, call) in enumerate(zip(items, gen.calls, strict=True)):
            ref = {"item_id": item["id"], "output_index": out_index}
            events.append(
                (
                    "response.output_item.added",
                    {"output_index": out_index, "item": {**item, "arguments": "", "status": "in_progress"}},
                )
            )
            events += [("response.function_call_arguments.delta", {**ref, "delta": p}) for p in call.arg_pieces]
            events.append(
                (
                    "response.function_call_arguments.done",
                    {**ref, "name": call.name, "arguments": call.args_json},
                )
            )
            events.append(("response.output_item.done", {"output_index": out_index, "item": item}))
    else:
        ref = {"item_id": msg_id, "output_index": 0, "content_index": 0}
        open_item = {**items[0], "status": "in_progress", "content": []}
        events.append(("response.output_item.added", {"output_index": 0, "item": open_item}))
        events.append(("response.content_part.added", {**ref, "part": {**part, "text": ""}}))
        events += [("response.output_text.delta", {**ref, "delta": p, "logprobs": []}) for p in gen.text_pieces]
        events.append(("response.output_text.done", {**ref, "text": gen.text, "logprobs": []}))
        events.append(("response.content_part.done", {**ref, "part": part}))
        events.append(("response.output_item.done", {"output_index": 0, "item": items[0]}))
    events.append(("response.incomplete" if gen.truncated else "response.completed", {"response": response}))
    chunks = [_sse({"type": name, "sequence_number": seq, **data}, name) for seq, (name, data) in enumerate(events)]
    return _stream_plan(chunks, SSE_CT)


# ---------------------------------------------------------------- Anthropic


def _anthropic_tool(tools: Any) -> tuple[str, Any] | None:
    for tool in tools if isinstance(tools, list) else []:
        if isinstance(tool, dict) and isinstance(tool.get("name"), str) and "input_schema" in tool:
            return tool["name"], tool["input_schema"]
    return None


def _anthropic_messages(body: dict[str, Any], key: str) -> Plan:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise _BadRequest("messages: field required")
    gen = _generate(_last_user_text(messages), _anthropic_tool(body.get("tools")), body.get("max_tokens"))
    prompt = count_words(body.get("system"), messages)
    stop = "tool_use" if gen.calls else "max_tokens" if gen.truncated else "end_turn"
    usage = {"input_tokens": prompt, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    if gen.calls:
        blocks: list[dict[str, Any]] = [
            {"type": "tool_use", "id": f"toolu_{key[:16]}_{c.index}", "name": c.name, "input": c.args}
            for c in gen.calls
        ]
    else:
        blocks = [{"type": "text", "text": gen.text}]
    message = {
        "id": f"msg_{key}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model") or MODELS[3],
        "content": blocks,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": gen.tokens},
    }
    extra = [("request-id", f"req_{key}")]
    if not body.get("stream"):
        return _json_plan(message, extra=extra)

    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(blocks):
        if block["type"] == "tool_use":
            opened = {**block, "input": {}}
            call = gen.calls[index]
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in call.arg_pieces]
        else:
            opened = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in gen.text_pieces]
        events.append({"type": "content_block_start", "index": index, "content_block": opened})
        if index == 0:
            events.append({"type": "ping"})
        events += [{"type": "content_block_delta", "index": index, "delta": d} for d in deltas]
        events.append({"type": "content_block_stop", "index": index})
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"output_tokens": gen.tokens},
        }
    )
    events.append({"type": "message_stop"})
    return _stream_plan([_sse(e, e["type"]) for e in events], SSE_CT, extra)


# ---------------------------------------------------------------- Ollama


def _ollama_timing(prompt: int, completion: int) -> dict[str, int]:
    load, prompt_ns, eval_ns = 1_000_000, prompt * 100_000, completion * 1_000_000
    return {
        "total_duration": load + prompt_ns + eval_ns,
        "load_duration": load,
        "prompt_eval_count": prompt,
        "prompt_eval_duration": prompt_ns,
        "eval_count": completion,
        "eval_duration": eval_ns,
    }


def _ndjson(obj: Any) -> bytes:
    return (dumps(obj) + "\n").encode()


def _ollama(body: dict[str, Any], chat: bool) -> Plan:
    model = body.get("model") or MODELS[4]
    options = body.get("options") if isinstance(body.get("options"), dict) else {}
    limit = options.get("num_predict")
    head = {"model": model, "created_at": CREATED_AT_ISO}
    if chat:
        messages = body.get("messages") or []
        gen = _generate(_last_user_text(messages), _openai_tool(body.get("tools")), limit)
        prompt = count_words(messages)
    else:
        gen = _generate(str(body.get("prompt", "")), None, limit)
        prompt = count_words(body.get("system"), body.get("prompt"))
    calls = [{"function": {"name": c.name, "arguments": c.args}} for c in gen.calls]
    # Tool calls arrive whole in one line, so they count as one generated piece.
    pieces: list[Any] = [calls] if calls else gen.text_pieces
    done = {
        "done": True,
        "done_reason": "length" if gen.truncated else "stop",
        **_ollama_timing(prompt, len(pieces)),
    }
    if not chat:
        done["context"] = [1, 2, 3]

    def message(content: str, tool_calls: list[Any] | None = None) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": "assistant", "content": content}
        if tool_calls:
            msg["tool_calls"] = tool_calls
        return msg

    def piece_obj(piece: Any) -> dict[str, Any]:
        if chat:
            return {"message": message("", piece) if isinstance(piece, list) else message(piece)}
        return {"response": piece}

    if body.get("stream", True) is False:
        result = {"message": message(gen.text, calls)} if chat else {"response": gen.text}
        return _json_plan({**head, **result, **done})
    lines = [_ndjson({**head, **piece_obj(p), "done": False}) for p in pieces]
    lines.append(_ndjson({**head, **({"message": message("")} if chat else {"response": ""}), **done}))
    return _stream_plan(lines, NDJSON_CT)


def _ollama_embed(body: dict[str, Any], legacy: bool) -> Plan:
    model = body.get("model") or MODELS[4]
    if legacy:
        return _json_plan({"embedding": embedding_vector(str(body.get("prompt", "")))})
    texts = _embed_inputs(body.get("input"))
    timing = _ollama_timing(count_words(texts), 0)
    obj = {"model": model, "embeddings": [embedding_vector(t) for t in texts]}
    obj.update({k: timing[k] for k in ("total_duration", "load_duration", "prompt_eval_count")})
    return _json_plan(obj)


# ---------------------------------------------------------------- Gemini

_GEMINI_PATH = re.compile(r"^/(v1beta|v1|v1alpha)/models/([^/:]+):([A-Za-z]+)$")


def _gemini_tool(tools: Any) -> tuple[str, Any] | None:
    for tool in tools if isinstance(tools, list) else []:
        if not isinstance(tool, dict):
            continue
        for decl in tool.get("functionDeclarations") or tool.get("function_declarations") or []:
            if isinstance(decl, dict) and isinstance(decl.get("name"), str):
                return decl["name"], decl.get("parameters") or decl.get("parametersJsonSchema")
    return None


def _gemini(body: dict[str, Any], model: str, method: str, query: str, key: str) -> Plan:
    if method == "countTokens":
        return _json_plan({"totalTokens": count_words(body.get("contents"))})
    if method == "embedContent":
        text = " ".join(_collect_text(body.get("content")))
        return _json_plan({"embedding": {"values": embedding_vector(text)}})
    if method not in ("generateContent", "streamGenerateContent"):
        return error_plan("gemini", 404, f"method {method} not found")
    contents = body.get("contents")
    if not isinstance(contents, list):
        raise _BadRequest("contents must be a list")
    config = body.get("generationConfig") if isinstance(body.get("generationConfig"), dict) else {}
    count = config.get("candidateCount") or 1
    user = _last_user_text(contents)
    tool = _gemini_tool(body.get("tools"))
    gens = [_generate(user, tool, config.get("maxOutputTokens"), i) for i in range(count)]
    prompt = count_words(body.get("systemInstruction"), contents)

    def parts_of(g: _Gen) -> list[list[dict[str, Any]]]:
        if g.calls:  # function calls arrive together in one chunk
            return [[{"functionCall": {"name": c.name, "args": c.args}} for c in g.calls]]
        return [[{"text": p}] for p in g.text_pieces]

    def finish(g: _Gen) -> str:
        return "MAX_TOKENS" if g.truncated else "STOP"

    def usage(completion: int) -> dict[str, int]:
        return {
            "promptTokenCount": prompt,
            "candidatesTokenCount": completion,
            "totalTokenCount": prompt + completion,
        }

    tail = {"modelVersion": model, "responseId": key}
    per = [parts_of(g) for g in gens]
    total = sum(len(p) for p in per)
    if method == "generateContent":
        cands = []
        for i, g in enumerate(gens):
            parts = per[i][0] if g.calls else [{"text": g.text}]
            cands.append({"content": {"parts": parts, "role": "model"}, "finishReason": finish(g), "index": i})
        return _json_plan({"candidates": cands, "usageMetadata": usage(total), **tail})

    objs = []
    sent = 0
    for pos in range(max(len(p) for p in per)):
        cands = []
        for i, g in enumerate(gens):
            if pos < len(per[i]):
                sent += 1
                cand: dict[str, Any] = {"content": {"parts": per[i][pos], "role": "model"}}
                if pos == len(per[i]) - 1:
                    cand["finishReason"] = finish(g)
                cands.append({**cand, "index": i})
        objs.append({"candidates": cands, "usageMetadata": usage(sent), **tail})
    if parse_qs(query).get("alt") == ["sse"]:
        return _stream_plan([_sse(o, sep="\r\n\r\n") for o in objs], SSE_CT)
    # Without alt=sse Gemini streams one JSON array, element by element.
    pieces = [("[" if i == 0 else ",\r\n") + dumps(o) for i, o in enumerate(objs)]
    pieces[-1] += "]"
    return _stream_plan([p.encode() for p in pieces], JSON_CT)


# ---------------------------------------------------------------- routing


def _echo(method: str, path: str, query: str, raw_headers: list[tuple[str, str]], body: bytes) -> dict[str, Any]:
    merged: dict[str, str] = {}
    for name, value in raw_headers:
        merged[name] = f"{merged[name]}, {value}" if name in merged else value
    return {
        "method": method,
        "path": path,
        "query": query,
        "headers": merged,
        "raw_headers": [[n, v] for n, v in raw_headers],
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "body_len": len(body),
    }


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None or not value.strip().lstrip("-").isdigit():
        return None
    return int(value)


def render(
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str] | list[tuple[str, str]],
    body: bytes,
) -> Plan:
    """The exact plain (un-gzipped, unpaced) response the fake gives to this request."""
    raw_headers = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    raw_headers = [(k.lower(), v) for k, v in raw_headers]
    hdrs = dict(raw_headers)
    family = _family(path)
    status = _int_header(hdrs, "x-fake-status")
    if hdrs.get("x-fake-echo-headers") == "1":
        return _json_plan(_echo(method, path, query, raw_headers, body), status or 200)
    size = _int_header(hdrs, "x-fake-binary")
    if size is not None and size >= 0:
        data = binary_body(size)
        chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)] or [b""]
        return Plan(status or 200, [("content-type", "application/octet-stream")], chunks, False)
    if status is not None and status >= 400:
        retry = hdrs.get("x-fake-retry-after")
        extra = [("retry-after", retry)] if retry else []
        return error_plan(family, status, f"fake upstream error {status}", extra)
    try:
        return _route(method, path, query, hdrs, body, family)
    except _BadRequest as exc:
        return error_plan(family, 400, str(exc))


_POST_ROUTES = {
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/api/chat",
    "/api/generate",
    "/api/embed",
    "/api/embeddings",
}


def _route(method: str, path: str, query: str, hdrs: Mapping[str, str], raw: bytes, family: str) -> Plan:
    if method == "GET":
        if path == "/v1/models":
            return _json_plan({"object": "list", "data": [_model_obj(m) for m in MODELS]})
        if path.startswith("/v1/models/") and ":" not in path:
            return _json_plan(_model_obj(path.removeprefix("/v1/models/")))
        if path == "/api/tags":
            tags = [{"name": f"{m}:latest", "model": f"{m}:latest", "modified_at": CREATED_AT_ISO} for m in MODELS]
            return _json_plan({"models": tags})
        if path == "/api/version":
            return _json_plan({"version": "0.0.0-fake"})
    gemini = _GEMINI_PATH.match(path)
    if path not in _POST_ROUTES and not gemini:
        return error_plan(family, 404, f"no route for {method} {path}")
    if method != "POST":
        return error_plan(family, 405, f"{method} not allowed on {path}")
    # anthropic SDK >= 2 sends its api_key as "authorization: Bearer", older ones (and curl docs) x-api-key.
    bearer = hdrs.get("authorization", "").startswith("Bearer ") and len(hdrs["authorization"]) > 7
    if family == "anthropic" and not hdrs.get("x-api-key") and not bearer:
        return error_plan("anthropic", 401, "x-api-key header is required")
    try:
        body = json.loads(raw or b"{}")
    except ValueError as exc:
        raise _BadRequest(f"invalid JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise _BadRequest("body must be a JSON object")
    key = request_key(body, raw)
    if hdrs.get("x-fake-answer-model"):  # the response's model field; ids still follow the request
        body = {**body, "model": hdrs["x-fake-answer-model"]}
    if gemini:
        return _gemini(body, gemini.group(2), gemini.group(3), query, key)
    handlers: dict[str, Callable[[], Plan]] = {
        "/v1/chat/completions": lambda: _openai_chat(body, key),
        "/v1/completions": lambda: _openai_completion(body, key),
        "/v1/embeddings": lambda: _openai_embeddings(body),
        "/v1/responses": lambda: _responses(body, key),
        "/v1/messages": lambda: _anthropic_messages(body, key),
        "/v1/messages/count_tokens": lambda: _json_plan(
            {"input_tokens": count_words(body.get("system"), body.get("messages"))}
        ),
        "/api/chat": lambda: _ollama(body, chat=True),
        "/api/generate": lambda: _ollama(body, chat=False),
        "/api/embed": lambda: _ollama_embed(body, legacy=False),
        "/api/embeddings": lambda: _ollama_embed(body, legacy=True),
    }
    return handlers[path]()


# --------------------------------------------------------------------------------------------------
# Stream parsing / reassembly helpers (for tests: a reassembled stream equals the non-stream JSON)
# --------------------------------------------------------------------------------------------------


def parse_sse(data: bytes) -> list[tuple[str | None, str]]:
    """(event name, data) pairs of an SSE body."""
    out: list[tuple[str | None, str]] = []
    for block in data.decode("utf-8").replace("\r\n", "\n").split("\n\n"):
        event: str | None = None
        lines = []
        for line in block.split("\n"):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                lines.append(line[6:] if line.startswith("data: ") else line[5:])
        if lines:
            out.append((event, "\n".join(lines)))
    return out


def sse_json(data: bytes) -> list[Any]:
    return [json.loads(d) for _, d in parse_sse(data) if d != "[DONE]"]


def parse_ndjson(data: bytes) -> list[Any]:
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]


def reassemble_openai_chat(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {k: v for k, v in chunks[0].items() if k not in ("choices", "usage")}
    out["object"] = "chat.completion"
    messages: dict[int, dict[str, Any]] = {}
    finish: dict[int, Any] = {}
    for chunk in chunks:
        if chunk.get("usage"):
            out["usage"] = chunk["usage"]
        for choice in chunk.get("choices", []):
            i = choice["index"]
            msg = messages.setdefault(i, {})
            for name, value in choice.get("delta", {}).items():
                if name == "tool_calls":
                    calls = msg.setdefault("tool_calls", [])
                    for tc in value:
                        if "id" in tc:
                            calls.append(
                                {
                                    "id": tc["id"],
                                    "type": tc["type"],
                                    "function": copy.deepcopy(tc["function"]),
                                }
                            )
                        else:
                            calls[tc["index"]]["function"]["arguments"] += tc["function"]["arguments"]
                elif isinstance(value, str) and isinstance(msg.get(name), str) and name != "role":
                    msg[name] += value
                else:
                    msg.setdefault(name, value)
            if choice.get("finish_reason") is not None:
                finish[i] = choice["finish_reason"]
    out["choices"] = [
        {"index": i, "message": messages[i], "logprobs": None, "finish_reason": finish.get(i)} for i in sorted(messages)
    ]
    return out


def reassemble_openai_completion(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    first = chunks[0]
    out = {k: first[k] for k in ("id", "object", "created", "model")}
    choices: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        if chunk.get("usage"):
            out["usage"] = chunk["usage"]
        for c in chunk.get("choices", []):
            dst = choices.setdefault(c["index"], {"text": "", "index": c["index"], "logprobs": None})
            dst["text"] += c["text"]
            if c.get("finish_reason") is not None:
                dst["finish_reason"] = c["finish_reason"]
    out["choices"] = [choices[i] for i in sorted(choices)]
    return out


def reassemble_anthropic(events: list[dict[str, Any]]) -> dict[str, Any]:
    message: dict[str, Any] = {}
    blocks: list[dict[str, Any]] = []
    partial: dict[int, str] = {}
    for ev in events:
        kind = ev["type"]
        if kind == "message_start":
            message = copy.deepcopy(ev["message"])
        elif kind == "content_block_start":
            blocks.append(copy.deepcopy(ev["content_block"]))
        elif kind == "content_block_delta":
            delta = ev["delta"]
            if delta["type"] == "text_delta":
                blocks[ev["index"]]["text"] += delta["text"]
            elif delta["type"] == "input_json_delta":
                partial[ev["index"]] = partial.get(ev["index"], "") + delta["partial_json"]
        elif kind == "content_block_stop" and ev["index"] in partial:
            blocks[ev["index"]]["input"] = json.loads(partial[ev["index"]] or "{}")
        elif kind == "message_delta":
            message.update(ev["delta"])
            message["usage"].update(ev.get("usage") or {})
    message["content"] = blocks
    return message


def reassemble_ollama(lines: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(lines[-1])
    if "message" in out:
        message = {"role": "assistant", "content": "".join(line["message"]["content"] for line in lines)}
        calls = [c for line in lines for c in line["message"].get("tool_calls", [])]
        if calls:
            message["tool_calls"] = calls
        out["message"] = message
    else:
        out["response"] = "".join(line["response"] for line in lines)
    return out


def reassemble_gemini(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    cands: dict[int, dict[str, Any]] = {}
    out: dict[str, Any] = {}
    for chunk in chunks:
        for c in chunk.get("candidates", []):
            i = c.get("index", 0)
            dst = cands.setdefault(i, {"content": {"parts": [], "role": "model"}, "index": i})
            parts = dst["content"]["parts"]
            for part in c.get("content", {}).get("parts", []):
                if "text" in part and parts and "text" in parts[-1]:
                    parts[-1]["text"] += part["text"]
                else:
                    parts.append(copy.deepcopy(part))
            if "finishReason" in c:
                dst["finishReason"] = c["finishReason"]
        out.update({k: v for k, v in chunk.items() if k != "candidates"})
    out["candidates"] = [cands[i] for i in sorted(cands)]
    return out


def reassemble_responses(events: list[dict[str, Any]]) -> dict[str, Any]:
    return next(e["response"] for e in reversed(events) if e["type"] in ("response.completed", "response.incomplete"))


# --------------------------------------------------------------------------------------------------
# Recording
# --------------------------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    """One request the fake received and what it sent back. Times are ``time.monotonic()``."""

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]  # lower-cased names, in arrival order, duplicates kept
    body: bytes
    time: float  # when the request head arrived
    wall_time: float
    status: int | None = None
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    planned_body: bytes = b""  # the plain body the fake meant to send (before gzip and cuts)
    response_chunks: list[bytes] = field(default_factory=list)  # body pieces exactly as written (post-gzip)
    chunk_times: list[float] = field(default_factory=list)
    response_start_time: float | None = None
    cancelled: bool = False  # the client/proxy went away before the response finished
    finished: bool = False  # the whole response including its terminator was written
    reset: bool = False  # the fake cut the connection on purpose (x-fake-reset-after)

    @property
    def response_bytes(self) -> bytes:
        return b"".join(self.response_chunks)

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in reversed(self.headers) if k == name), None)

    def json(self) -> Any:
        return json.loads(self.body)

    def to_json(self) -> dict[str, Any]:
        b64 = base64.b64encode
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": [list(h) for h in self.headers],
            "body_b64": b64(self.body).decode(),
            "time": self.time,
            "wall_time": self.wall_time,
            "status": self.status,
            "response_headers": [list(h) for h in self.response_headers],
            "planned_body_b64": b64(self.planned_body).decode(),
            "response_chunks_b64": [b64(c).decode() for c in self.response_chunks],
            "chunk_times": self.chunk_times,
            "response_start_time": self.response_start_time,
            "cancelled": self.cancelled,
            "finished": self.finished,
            "reset": self.reset,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RecordedRequest:
        unb64 = base64.b64decode
        return cls(
            method=d["method"],
            path=d["path"],
            query=d["query"],
            headers=[(k, v) for k, v in d["headers"]],
            body=unb64(d["body_b64"]),
            time=d["time"],
            wall_time=d["wall_time"],
            status=d["status"],
            response_headers=[(k, v) for k, v in d["response_headers"]],
            planned_body=unb64(d["planned_body_b64"]),
            response_chunks=[unb64(c) for c in d["response_chunks_b64"]],
            chunk_times=list(d["chunk_times"]),
            response_start_time=d["response_start_time"],
            cancelled=d["cancelled"],
            finished=d["finished"],
            reset=d["reset"],
        )


def fetch_requests(base_url: str) -> list[RecordedRequest]:
    """The recorded requests of a fake running in another process."""
    import httpx

    resp = httpx.get(f"{base_url}/__fake/requests", timeout=10)
    resp.raise_for_status()
    return [RecordedRequest.from_json(d) for d in resp.json()["requests"]]


def reset_remote(base_url: str) -> None:
    import httpx

    httpx.post(f"{base_url}/__fake/reset", timeout=10).raise_for_status()


# --------------------------------------------------------------------------------------------------
# Transport: ASGI app applying the x-fake-* controls to a Plan
# --------------------------------------------------------------------------------------------------


@dataclass
class _Controls:
    first_delay: float = 0.0  # before the first body chunk (streams: headers go out at once)
    chunk_delay: float = 0.0  # between stream chunks
    slow_body: float | None = None  # between pieces of a non-stream body
    slow_body_bytes: int = 32
    reset_after: int | None = None
    reset_rst: bool = False
    hang: bool = False
    gzip: bool = False

    @classmethod
    def parse(cls, h: Mapping[str, str]) -> _Controls:
        def ms(name: str) -> float:
            return max(_int_header(h, name) or 0, 0) / 1000

        slow = _int_header(h, "x-fake-slow-body-ms")
        return cls(
            first_delay=ms("x-fake-first-delay-ms"),
            chunk_delay=ms("x-fake-chunk-delay-ms"),
            slow_body=None if slow is None else max(slow, 0) / 1000,
            slow_body_bytes=max(_int_header(h, "x-fake-slow-body-bytes") or 32, 1),
            reset_after=None if (reset := _int_header(h, "x-fake-reset-after")) is None or reset < 0 else reset,
            reset_rst=h.get("x-fake-reset-mode", "").lower() == "rst",
            hang=h.get("x-fake-hang") == "1",
            gzip=h.get("x-fake-gzip") == "1",
        )


def gzip_chunks(chunks: list[bytes], stream: bool) -> list[bytes]:
    """gzip as the fake does it: one member; streams sync-flush after every chunk so each stays decodable."""
    comp = zlib.compressobj(wbits=31)  # 31 = gzip container, mtime 0, so output is deterministic
    if not stream:
        return [comp.compress(b"".join(chunks)) + comp.flush()]
    out = []
    for i, chunk in enumerate(chunks):
        mode = zlib.Z_FINISH if i == len(chunks) - 1 else zlib.Z_SYNC_FLUSH
        out.append(comp.compress(chunk) + comp.flush(mode))
    return out


class _App:
    def __init__(self, fake: FakeUpstream) -> None:
        self.fake = fake

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return
        arrived, wall = time.monotonic(), time.time()
        body = bytearray()
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        method, path = scope["method"], scope["path"]
        query = scope.get("query_string", b"").decode("latin-1")
        raw_headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
        if path.startswith("/__fake/"):
            await self._control(method, path, send)
            return
        rec = RecordedRequest(method, path, query, raw_headers, bytes(body), arrived, wall)
        self.fake._add(rec)
        gone = asyncio.Event()
        watcher = asyncio.create_task(self._watch(receive, gone))
        try:
            await self._respond(rec, send, gone)
        finally:
            watcher.cancel()

    @staticmethod
    async def _watch(receive: Callable[..., Any], gone: asyncio.Event) -> None:
        # Once the body is read, the next receive() only returns when the client disconnects.
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    async def _control(self, method: str, path: str, send: Callable[..., Any]) -> None:
        if path == "/__fake/requests" and method == "GET":
            obj: Any = {"requests": [r.to_json() for r in list(self.fake.requests)]}
        elif path == "/__fake/reset" and method == "POST":
            self.fake.reset()
            obj = {"ok": True}
        elif path == "/__fake/health":
            obj = {"ok": True}
        else:
            obj = {"error": f"unknown control {method} {path}"}
        data = dumps(obj).encode()
        headers = [(b"content-type", JSON_CT.encode()), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": 200 if "error" not in obj else 404, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def _respond(self, rec: RecordedRequest, send: Callable[..., Any], gone: asyncio.Event) -> None:
        hdrs = dict(rec.headers)
        ctl = _Controls.parse(hdrs)
        stopping = self.fake._stopping
        assert stopping is not None
        # uvicorn's protocol cycle owns the transport; needed to cut connections and notice closes early.
        transport: asyncio.Transport | None = getattr(getattr(send, "__self__", None), "transport", None)

        def client_gone() -> bool:
            return gone.is_set() or (transport is not None and transport.is_closing())

        async def pause(seconds: float) -> bool:
            """Sleep unless the client goes away or the server stops; True when interrupted."""
            if seconds > 0:
                waits = [asyncio.ensure_future(gone.wait()), asyncio.ensure_future(stopping.wait())]
                await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
                for w in waits:
                    w.cancel()
            else:
                await asyncio.sleep(0)  # let a pending disconnect be seen even without delays
            return client_gone() or stopping.is_set()

        async def interrupted() -> None:
            if client_gone():
                rec.cancelled = True
            else:  # server stopping: drop the connection rather than leave uvicorn waiting on us
                await self._cut(transport, gone, rst=False)

        if ctl.hang:
            await pause(3600 * 24)
            await interrupted()
            return
        plan = render(rec.method, rec.path, rec.query, rec.headers, rec.body)
        rec.planned_body = plan.body
        wire = gzip_chunks(plan.chunks, plan.stream) if ctl.gzip else list(plan.chunks)
        gap = ctl.chunk_delay if plan.stream else 0.0
        if ctl.slow_body is not None and not plan.stream:
            joined = b"".join(wire)
            wire = [joined[i : i + ctl.slow_body_bytes] for i in range(0, len(joined), ctl.slow_body_bytes)] or [b""]
            gap = ctl.slow_body
        headers = list(plan.headers)
        if ctl.gzip:
            headers.append(("content-encoding", "gzip"))
        if not plan.stream:
            headers.append(("content-length", str(sum(map(len, wire)))))
            if ctl.first_delay and await pause(ctl.first_delay):
                await interrupted()
                return
        # Record before each write: the client (another thread) may act on the bytes before send() returns.
        rec.status, rec.response_headers = plan.status, headers
        rec.response_start_time = time.monotonic()
        await send(
            {
                "type": "http.response.start",
                "status": plan.status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
            }
        )
        for i, piece in enumerate(wire):
            if ctl.reset_after is not None and i >= ctl.reset_after:
                break
            delay = (ctl.first_delay if plan.stream else 0.0) if i == 0 else gap
            if await pause(delay):
                await interrupted()
                return
            rec.response_chunks.append(piece)
            rec.chunk_times.append(time.monotonic())
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        if ctl.reset_after is not None and ctl.reset_after <= len(wire):
            rec.reset = True
            await self._cut(transport, gone, rst=ctl.reset_rst)
            return
        if client_gone():
            rec.cancelled = True
            return
        rec.finished = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    async def _cut(transport: asyncio.Transport | None, gone: asyncio.Event, rst: bool) -> None:
        """Close the TCP connection mid-response: FIN by default (incomplete body), RST when ``rst``."""
        if transport is None:  # not uvicorn's h11/httptools cycle: returning early makes uvicorn close it
            return
        if rst:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            transport.close()
        # Wait for connection_lost so uvicorn does not log "returned without completing response".
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(gone.wait(), 2)


# --------------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------------


class FakeUpstream:
    """The fake upstream on a real socket. ``with FakeUpstream() as fake: fake.base_url``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, tls: tuple[str, str] | None = None) -> None:
        self.host = host
        self.port = port
        self.tls = tls  # (certificate chain file, key file): serve HTTPS
        self.base_url = ""
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None

    # -- lifecycle

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))  # binding here (port 0) avoids the find-a-free-port race
        self.port = sock.getsockname()[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.base_url = f"{'https' if self.tls else 'http'}://{host}:{self.port}"
        return sock

    def _make_server(self) -> uvicorn.Server:
        config = uvicorn.Config(
            _App(self),
            lifespan="off",
            log_level="warning",
            access_log=False,
            http="h11",
            ws="none",
            server_header=False,  # no server/date headers: response headers stay deterministic
            date_header=False,
            timeout_graceful_shutdown=3,
            ssl_certfile=self.tls[0] if self.tls else None,
            ssl_keyfile=self.tls[1] if self.tls else None,
        )
        return uvicorn.Server(config)

    async def _serve(self, sock: socket.socket, announce: bool = False) -> None:
        assert self._server is not None
        server = self._server
        self._stopping = asyncio.Event()

        async def supervise() -> None:
            while not server.started and not server.should_exit:
                await asyncio.sleep(0.01)
            if announce and server.started:
                print(f"FAKE_UPSTREAM_READY {self.base_url}", flush=True)
            while not server.should_exit:
                await asyncio.sleep(0.05)
            assert self._stopping is not None
            self._stopping.set()  # release hung and delayed handlers so shutdown is quick

        task = asyncio.create_task(supervise())
        try:
            await server.serve(sockets=[sock])
        finally:
            task.cancel()

    def start(self) -> str:
        """Serve in a daemon thread; returns ``base_url`` (``http://127.0.0.1:<port>``)."""
        if self._thread is not None:
            return self.base_url
        sock = self._bind()
        self._server = self._make_server()
        self._thread = start_in_thread(self._server, lambda: self._serve(sock), f"fake-upstream:{self.port}")
        return self.base_url

    def stop(self) -> None:
        if self._thread is None or self._server is None:
            return
        stop_thread(self._server, self._thread)
        self._thread = None

    def serve_forever(self) -> None:
        """Script mode: serve in this thread until SIGINT/SIGTERM, announcing the URL on stdout."""
        sock = self._bind()
        self._server = self._make_server()
        asyncio.run(self._serve(sock, announce=True))

    def __enter__(self) -> FakeUpstream:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- introspection

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def _add(self, rec: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(rec)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    @property
    def last(self) -> RecordedRequest:
        return self.requests[-1]

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in list(self.requests) if r.path == path]

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Poll ``predicate`` (e.g. ``lambda: fake.last.cancelled``) until true or ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(IndexError):
                if predicate():
                    return True
            time.sleep(0.01)
        with contextlib.suppress(IndexError):
            return predicate()
        return False


try:
    import pytest
except ImportError:  # script mode on a machine without the dev extras
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def fake_upstream() -> Iterator[FakeUpstream]:
        """Function-scoped fake; import it into a conftest or test module to use it."""
        with FakeUpstream() as fake:
            yield fake


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Deterministic fake LLM upstream for prompttap tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (see the READY line)")
    args = parser.parse_args(argv)
    FakeUpstream(args.host, args.port).serve_forever()


if __name__ == "__main__":
    sys.exit(main())
