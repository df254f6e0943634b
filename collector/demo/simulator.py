"""A small simulated LLM upstream for ``prompttap demo``: no network, no keys, no model.

OpenAI chat completions (JSON; SSE with ``include_usage``; tool calls), OpenAI embeddings and
Anthropic messages (JSON, SSE). Answers are derived from the request: a RAG prompt (``[CONTEXT n]``
blocks) gets the context sentences that best match the question, citing the document; with
``tools``, an id in the question (``A-10423``) calls the first tool, a tool result that fills
another tool's required parameters calls that one, else the results are summarized; otherwise a
canned answer by keyword. Sampling is simulated: at temperature > 0 an identical request answered
again is phrased differently; at 0 never. Failures: model ``gpt-4.5-preview`` answers 429 (quota),
a request header ``x-simulate-status: N`` answers N. Usage counts ~4 characters per token.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import uvicorn

QUOTA_MODELS = {"gpt-4.5-preview"}
QUOTA_MESSAGE = "You exceeded your current quota, please check your plan and billing details."
OPENERS = ("", "Based on the documents: ", "Short answer: ", "According to the handbook, ")
CLOSERS = ("", " Let me know if you want the exact wording.", " I can pull up the full policy if that helps.")
CANNED = (  # (keywords in the question, answer)
    (
        ("reverse proxy",),
        "A reverse proxy sits in front of a service and forwards each request to it, so traffic can be logged, "
        "authenticated or rate-limited without changing either side. In front of an LLM API, it shows exactly "
        "which prompts your apps send and what comes back, and keeps keys and spending in one place.",
    ),
    (
        ("five", "child", "kid"),
        "Imagine a helper who carries your notes to a friend and brings the answers back. The helper copies "
        "every note and every answer into a notebook, so later you can read exactly what was asked and said.",
    ),
)
_STOP = {"the", "and", "for", "are", "does", "did", "that", "this", "what", "how", "can", "with", "about", "you"}
JSON_CT = [(b"content-type", b"application/json")]
SSE_CT = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]


def tokens(text: str) -> int:
    return max(1, round(len(text) / 4))


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def _words(text: str) -> set[str]:
    return {w.rstrip("s") for w in re.findall(r"[a-z][a-z-]{2,}", text.lower()) if w not in _STOP}


def _last_user(messages: list[dict[str, Any]]) -> str:
    return next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")


def _sse(obj: Any, event: str = "") -> str:
    return (f"event: {event}\n" if event else "") + f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n"


def _pieces(text: str) -> list[str]:
    return re.findall(r"\s*\S+", text) or [""]  # one stream piece per word, leading space included


def rag_answer(system: str, question: str, variant: int) -> str | None:
    """The context sentences that best match the question, citing their document; None without context."""
    blocks = re.findall(r"\[CONTEXT (\d+)\]:\n(.*?)\n\[END CONTEXT \1\]", system, re.S)
    if not blocks:
        return None
    asked = _words(question)
    scored = []
    for order, (_, block) in enumerate(blocks):
        named = re.search(r"sourceDocument: (.+)", block)
        source = named[1].strip() if named else "the documents"
        body = block.split("</document_metadata>")[-1]
        for pos, sentence in enumerate(re.split(r"(?<=[.!?])\s+", body.strip())):
            scored.append((len(asked & _words(sentence)), -order, -pos, sentence, source))
    scored.sort(reverse=True)
    best = [s for s in scored[:2] if s[0] > 0]
    if not best:
        return "The documents I was given do not cover that. Could you rephrase, or add the relevant policy?"
    opener = OPENERS[variant % len(OPENERS)]
    body = " ".join(s[3] for s in best)
    body = opener + (body[0].lower() + body[1:] if opener.endswith(", ") else body)
    sources = ", ".join(dict.fromkeys(s[4] for s in best))
    return f"{body} (Source: {sources}.){CLOSERS[variant % len(CLOSERS)]}"


def plain_answer(question: str, variant: int) -> str:
    q = question.lower()
    for keys, answer in CANNED:
        if any(k in q for k in keys):
            return answer if variant % 2 == 0 else "In short: " + answer[0].lower() + answer[1:]
    return (
        "This is prompttap's simulated upstream, so it only knows the demo's questions. Start "
        "`prompttap serve --upstream <your provider>` to get real answers, recorded the same way."
    )


def tool_step(messages: list[dict[str, Any]], tools: list[Any]) -> tuple[dict[str, Any] | None, str]:
    """(the next tool call, '') or (None, a summary of the tool results)."""
    fns = [t["function"] for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    called = {c["function"]["name"] for m in messages for c in m.get("tool_calls") or []}
    last = messages[-1] if messages else {}
    facts: dict[str, Any] = {}  # what the tools returned so far
    for m in messages:
        with contextlib.suppress(ValueError, TypeError):
            facts |= json.loads(_text(m.get("content"))) if m.get("role") == "tool" else {}
    for fn in fns:
        params = fn.get("parameters") or {}
        required = params.get("required") or list(params.get("properties") or {})
        if not required or fn["name"] in called:
            continue
        if last.get("role") == "user":
            ids = re.findall(r"\b[A-Z]{1,3}-?\d{3,}\b", _text(last.get("content")))
            if ids:
                return {"name": fn["name"], "arguments": {required[0]: ids[0]}}, ""
        elif all(r in facts for r in required):
            return {"name": fn["name"], "arguments": {r: facts[r] for r in required}}, ""
    if not facts:
        return None, plain_answer(_text(last.get("content")), 0)
    details = ", ".join(f"the {k.replace('_', ' ')} is {v}" for k, v in facts.items() if not isinstance(v, dict | list))
    return None, f"I looked that up for you: {details}. Is there anything else I can help with?"


def _embeddings(req: dict[str, Any]) -> str:
    inputs = req.get("input") if isinstance(req.get("input"), list) else [req.get("input") or ""]
    data = []
    for i, text in enumerate(inputs):
        seed = hashlib.sha512(str(text).encode()).digest() * 8  # 512 bytes -> 256 dimensions
        vec = [int.from_bytes(seed[j : j + 2], "big") / 32768 - 1 for j in range(0, 512, 2)]
        b64 = req.get("encoding_format") == "base64"  # float32 little-endian, as the real API sends it
        emb = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode() if b64 else vec
        data.append({"object": "embedding", "index": i, "embedding": emb})
    usage = dict.fromkeys(("prompt_tokens", "total_tokens"), sum(tokens(str(t)) for t in inputs))
    return json.dumps({"object": "list", "data": data, "model": req.get("model"), "usage": usage})


def openai_chat(req: dict[str, Any], variant: int, rid: str, gap: float) -> list[tuple[float, str]]:
    """The response body as (delay, text) pieces: one JSON object, or SSE chunks."""
    messages = req.get("messages") or []
    system = "\n".join(_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer"))
    question = _last_user(messages)
    call, text = tool_step(messages, req["tools"]) if req.get("tools") else (None, "")
    if call is None and not text:
        text = rag_answer(system, question, variant) or plain_answer(question, variant)
    args = json.dumps(call["arguments"], separators=(",", ":")) if call else ""
    fn = {"name": call["name"], "arguments": args} if call else {}
    prompt, completion = sum(tokens(_text(m.get("content"))) + 4 for m in messages) + 3, tokens(args or text)
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    finish = "tool_calls" if call else "stop"
    head = {"id": f"chatcmpl-{rid}", "created": int(time.time()), "model": req.get("model") or "gpt-4o-mini"}
    ttft = 0.15 + (variant % 7) / 50
    if not req.get("stream"):
        msg: dict[str, Any] = {"role": "assistant", "content": None if call else text, "refusal": None}
        if call:
            msg["tool_calls"] = [{"id": f"call_{rid}", "type": "function", "function": fn}]
        choice = {"index": 0, "message": msg, "logprobs": None, "finish_reason": finish}
        whole = {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
        return [(ttft + completion * 0.004, json.dumps(whole))]
    head |= {"object": "chat.completion.chunk"}
    with_usage = bool((req.get("stream_options") or {}).get("include_usage"))

    def chunk(delta: dict[str, Any], reason: str | None = None, wait: float = gap) -> tuple[float, str]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        return wait, _sse({**head, "choices": [choice], **({"usage": None} if with_usage else {})})

    out = [chunk({"role": "assistant", "content": None if call else "", "refusal": None}, wait=ttft)]
    if call:
        opened = {"index": 0, "id": f"call_{rid}", "type": "function", "function": {**fn, "arguments": ""}}
        out.append(chunk({"tool_calls": [opened]}))
        parts = [args[i : i + 8] for i in range(0, len(args), 8)]
        out += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}) for p in parts]
    else:
        out += [chunk({"content": p}) for p in _pieces(text)]
    out.append(chunk({}, finish))
    if with_usage:  # a separate last chunk, after the finish_reason, as OpenAI sends it
        out.append((gap, _sse({**head, "choices": [], "usage": usage})))
    return [*out, (0.0, _sse("[DONE]"))]


def anthropic_messages(req: dict[str, Any], variant: int, rid: str, gap: float) -> list[tuple[float, str]]:
    messages = req.get("messages") or []
    text, model = plain_answer(_last_user(messages), variant), req.get("model") or "claude-sonnet-4-5"
    prompt = tokens(_text(req.get("system"))) + sum(tokens(_text(m.get("content"))) + 3 for m in messages)
    usage = {"input_tokens": prompt, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    message = {"id": f"msg_{rid}", "type": "message", "role": "assistant", "model": model}
    message |= {"content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None}
    ttft = 0.2 + (variant % 5) / 50
    if not req.get("stream"):
        whole = {**message, "usage": {**usage, "output_tokens": tokens(text)}}
        return [(ttft + tokens(text) * 0.004, json.dumps(whole))]

    def event(obj: dict[str, Any], wait: float = 0.0) -> tuple[float, str]:
        return wait, _sse(obj, obj["type"])

    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    out = [event({"type": "message_start", "message": start}, ttft)]
    out.append(event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}))
    out.append(event({"type": "ping"}))
    delta = {"type": "content_block_delta", "index": 0}
    out += [event({**delta, "delta": {"type": "text_delta", "text": p}}, gap) for p in _pieces(text)]
    out.append(event({"type": "content_block_stop", "index": 0}))
    stop = {"stop_reason": "end_turn", "stop_sequence": None}
    out.append(event({"type": "message_delta", "delta": stop, "usage": {"output_tokens": tokens(text)}}))
    return [*out, event({"type": "message_stop"})]


class _App:
    def __init__(self, gap: float) -> None:
        self.gap, self.seen = gap, Counter[str]()

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return
        raw, more = b"", True
        while more:
            msg = await receive()
            raw, more = raw + msg.get("body", b""), msg.get("more_body", False)
        path, headers = scope["path"], {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        anthropic = path.endswith("/messages")
        try:
            req = json.loads(raw) if raw else {}
        except ValueError:
            return await self._error(send, anthropic, 400, "the request body is not valid JSON")
        forced = headers.get("x-simulate-status", "")
        if forced.isdigit():
            return await self._error(send, anthropic, int(forced), f"simulated HTTP {forced} (x-simulate-status)")
        if req.get("model") in QUOTA_MODELS:
            return await self._error(send, anthropic, 429, QUOTA_MESSAGE, (b"retry-after", b"20"))
        if path.endswith("/embeddings"):
            return await self._send(send, 200, JSON_CT, [(0.03, _embeddings(req))])
        if not anthropic and not path.endswith("/chat/completions"):
            return await self._error(send, anthropic, 404, f"the simulator has no endpoint {path}")
        # The n-th identical request: sampling at temperature > 0 varies the phrasing, at 0 it does not.
        key = hashlib.sha256(raw).hexdigest()
        repeat = self.seen[key] if req.get("temperature", 1) else 0
        self.seen[key] += 1
        variant = int(hashlib.sha256(f"{req.get('model')}:{req.get('temperature')}".encode()).hexdigest(), 16) + repeat
        rid = hashlib.sha256(f"{key}:{self.seen[key]}".encode()).hexdigest()[:24]
        body = (anthropic_messages if anthropic else openai_chat)(req, variant, rid, self.gap)
        headers = [*(SSE_CT if req.get("stream") else JSON_CT), (b"request-id", f"req_{rid}".encode())]
        await self._send(send, 200, headers, body)

    @staticmethod
    async def _send(send: Callable[..., Any], status: int, headers: list[Any], body: list[tuple[float, str]]) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for delay, piece in body:
            await asyncio.sleep(delay)
            await send({"type": "http.response.body", "body": piece.encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def _error(self, send: Any, anthropic: bool, status: int, message: str, *extra: tuple[bytes, bytes]) -> None:
        if anthropic:
            kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
            obj: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
        else:
            kind = {429: "insufficient_quota"}.get(status, "server_error" if status >= 500 else "invalid_request_error")
            obj = {"error": {"message": message, "type": kind, "param": None, "code": kind if status == 429 else None}}
        await self._send(send, status, [*JSON_CT, *extra], [(0.05, json.dumps(obj))])


class Simulator:
    """The simulated upstream on a loopback socket, served from a daemon thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, chunk_delay: float = 0.012) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((host, port))  # bound now: port 0 picks a free port without a race
        self.base_url = f"http://{host}:{self.sock.getsockname()[1]}"
        app = _App(chunk_delay)
        self.server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning", http="h11", ws="none"))
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve([self.sock])), daemon=True)

    def start(self) -> Simulator:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self.server.started:
            raise RuntimeError("the simulated upstream did not start")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)
