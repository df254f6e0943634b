"""Real provider traffic through the real proxy.

``tests/fixtures/real-traffic/`` holds cassettes recorded against the real provider APIs by
pydantic-ai's test suite (MIT: ``LICENSE-pydantic-ai`` next to them; see the README there).
Every interaction that is an LLM call prompttap understands (``SELECTED``: by request path) is
sent through one real ``prompttap serve`` to a replay upstream, a real HTTP server that answers
with the recorded status, headers and body bytes (streams one event per write). Each one is
checked (``CHECKS``):

- ``bytes``: the client got the recorded status and exactly the recorded body bytes;
- ``request``: the upstream got the request the client sent (method, raw path, query, headers,
  body), and that request is the recorded one;
- ``api``, ``model``, ``stream``, ``output_text``, ``tool_calls``, ``tokens`` (input and
  output), ``response`` (the rebuilt response object), ``incomplete`` and ``parse_error``: the
  capture agrees with values computed here from the recording, never with prompttap's parsers.
  OpenAI and Anthropic streams go through the official SDKs' own stream classes and
  accumulators (``openai.Stream`` + ``ChatCompletionStream``/``ResponseStream``,
  ``anthropic.Stream`` + ``MessageStream``); Gemini, which has no SDK here, by concatenating
  the documented chunk fields.

Every other interaction is excluded by one rule of ``EXCLUDED``, each with its reason;
``test_every_interaction_is_selected_or_excluded`` keeps that true.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
import uvicorn
import yaml
from anthropic.lib.streaming import MessageStream
from anthropic.types import Message, RawMessageStreamEvent
from openai import omit
from openai.lib.streaming.chat import ChatCompletionStream
from openai.lib.streaming.responses import ResponseStream
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent

from tests.harness import Prompttap
from tests.servers import start_in_thread, stop_thread

CORPUS = Path(__file__).resolve().parent / "fixtures" / "real-traffic"

# The LLM calls prompttap understands, by request path (POST only): the api id each must get.
SELECTED: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("openai.chat", re.compile(r"/chat/completions$")),
    ("openai.responses", re.compile(r"/responses$")),
    ("anthropic.messages", re.compile(r"/v1/messages$")),
    ("gemini.generate", re.compile(r"/models/[^/:]+:(generateContent|streamGenerateContent)$")),
)
# Why each other interaction is not replayed: (reason, method pattern, path pattern).
EXCLUDED: tuple[tuple[str, str, re.Pattern[str]], ...] = (
    ("token counting is not an LLM call", "POST", re.compile(r"(/count_tokens|:countTokens|/input_tokens)$")),
    (
        "file, vector store, file-search store and conversation management are not LLM calls",
        "POST|DELETE",
        re.compile(r"/(files|vector_stores|fileSearchStores|conversations)(/|$)|:uploadToFileSearchStore$"),
    ),
    (
        "retrieving or compacting a stored response is not an LLM call",
        "GET|POST",
        re.compile(r"/responses/(resp_[^/]+|compact)$"),
    ),
    ("an OAuth token exchange is not an LLM call", "POST", re.compile(r"^/token$")),
    ("a document or image the client downloaded itself, not a provider API", "GET", re.compile(r"\.\w{2,4}$")),
    ("an API prompttap does not understand (Cohere v2 chat)", "POST", re.compile(r"^/v2/chat$")),
    ("an API prompttap does not understand (AWS Bedrock Runtime)", "POST", re.compile(r"/(invoke|converse)$")),
)

CHECKS = (
    "bytes",
    "request",
    "api",
    "model",
    "stream",
    "output_text",
    "tool_calls",
    "tokens",
    "response",
    "incomplete",
    "parse_error",
)
# Set by the client's transport on each leg; everything else must arrive as sent.
TRANSPORT_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive"})
# Recorded response headers that describe the original wire, not the stored body.
WIRE_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding", "connection", "keep-alive"})


# -- the recordings ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """One recorded HTTP interaction, as bytes."""

    name: str
    method: str
    path: str  # raw, percent-encoding kept
    query: str
    request_headers: tuple[tuple[str, str], ...]
    request_body: bytes
    status: int
    response_headers: tuple[tuple[str, str], ...]
    response_body: bytes

    @property
    def content_type(self) -> str:
        return next((v for k, v in self.response_headers if k == "content-type"), "")

    @property
    def is_event_stream(self) -> bool:
        return "text/event-stream" in self.content_type.lower()

    @property
    def request_json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.request_body)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    @property
    def tag(self) -> str:
        return "rt-" + hashlib.sha256(self.name.encode()).hexdigest()[:16]


def _body(part: dict[str, Any]) -> bytes:
    """A recorded body: ``parsed_body`` re-serialized as JSON, or ``body`` (text, or ``{string: text}``)."""
    if "parsed_body" in part:
        return json.dumps(part["parsed_body"], ensure_ascii=False).encode()
    body = part.get("body")
    if isinstance(body, dict) and "string" in body:
        body = body["string"]
    if isinstance(body, dict | list):
        return json.dumps(body, ensure_ascii=False).encode()
    if isinstance(body, bytes):
        return body
    return (body or "").encode()


def _headers(raw: dict[str, Any] | None, drop: frozenset[str]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for name, values in (raw or {}).items():
        for value in values if isinstance(values, list) else [values]:
            if name.lower() not in drop:
                pairs.append((name.lower(), str(value)))
    return tuple(pairs)


def load_corpus() -> list[Recorded]:
    """Every interaction of the vendored cassettes (all HTTP: the corpus's gRPC samples are not vendored)."""
    recorded: list[Recorded] = []
    for path in sorted(CORPUS.glob("*/*.yaml")):
        doc = yaml.load(path.read_text("utf-8"), Loader=yaml.CSafeLoader)
        for i, item in enumerate(doc.get("interactions") or []):
            name = f"{path.parent.name}/{path.stem}#{i}"
            req, resp = item["request"], item["response"]
            uri = urllib.parse.urlsplit(req["uri"])
            recorded.append(
                Recorded(
                    name=name,
                    method=req["method"].upper(),
                    path=uri.path,
                    query=uri.query,
                    request_headers=_headers(req.get("headers"), TRANSPORT_HEADERS),
                    request_body=_body(req),
                    status=int(resp["status"]["code"]),
                    response_headers=_headers(resp.get("headers"), WIRE_HEADERS),
                    response_body=_body(resp),
                )
            )
    return recorded


def selected_api(rec: Recorded) -> str | None:
    if rec.method != "POST":
        return None
    return next((api for api, pattern in SELECTED if pattern.search(rec.path)), None)


def exclusion(rec: Recorded) -> str | None:
    reasons = [r for r, methods, p in EXCLUDED if rec.method in methods.split("|") and p.search(rec.path)]
    return reasons[0] if len(reasons) == 1 else None


CORPUS_ITEMS = load_corpus()
REPLAYED = [r for r in CORPUS_ITEMS if selected_api(r)]


# -- the oracle: what each capture must say, computed from the recording ------------------------


@dataclass
class Expected:
    """What the capture of one interaction must say (``response`` as seen through ``view``)."""

    api: str
    model: str
    stream: bool
    output_text: str = ""
    tool_calls: list[tuple[str, str, Any]] = field(default_factory=list)
    tokens: tuple[int | None, int | None] = (None, None)
    response: Any = None  # compared after ``view``
    view: Callable[[Any], Any] = lambda r: r
    incomplete: bool = False
    parse_error: bool = False  # a parse_error note is promised (other notes are not checked)


def args(value: Any) -> Any:
    """Tool-call arguments compared as JSON values (formatting may differ), as text when not JSON;
    arguments that never arrived are the empty text."""
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def sdk_response(rec: Recorded) -> Any:
    """The recorded answer as the httpx response class the SDK streams from."""
    return httpx2.Response(
        rec.status,
        headers=list(rec.response_headers),
        content=rec.response_body,
        request=httpx2.Request(rec.method, "https://provider.invalid" + rec.path),
    )


def expected(rec: Recorded) -> Expected:
    api = selected_api(rec)
    assert api is not None
    req = rec.request_json
    if api == "gemini.generate":
        model = re.search(r"/models/([^/:]+):", rec.path).group(1)  # type: ignore[union-attr]
        exp = Expected(api, model, ":streamGenerateContent" in rec.path)
    else:
        model = req.get("model")
        exp = Expected(api, model if isinstance(model, str) else "", req.get("stream") is True)
    body = rec.response_body
    if not 200 <= rec.status < 300:  # an error answer: its JSON is the response, nothing was generated
        try:
            exp.response = json.loads(body)
        except ValueError:
            exp.response = None
        return exp
    looks_like_json = body.lstrip()[:1] in (b"{", b"[")
    if not looks_like_json and not rec.is_event_stream:  # e.g. a gateway's text/plain page
        exp.parse_error = True
        return exp
    {
        "openai.chat": chat,
        "openai.responses": responses,
        "anthropic.messages": messages,
        "gemini.generate": gemini,
    }[api](rec, exp)
    return exp


# OpenAI chat completions


def chat(rec: Recorded, exp: Expected) -> None:
    if not rec.is_event_stream:
        resp = json.loads(rec.response_body)
        final = ChatCompletion.construct(**resp)
        exp.response = resp
        _chat_outputs(final, exp, resp.get("usage"), as_dict(resp.get("x_groq")).get("usage"))
        return
    client = openai.OpenAI(api_key="replay", base_url="https://provider.invalid")
    raw = openai.Stream(cast_to=ChatCompletionChunk, response=sdk_response(rec), client=client)
    stream = ChatCompletionStream(raw_stream=raw, response_format=omit, input_tools=omit)
    errored = False
    try:
        for _ in stream:
            pass
    except openai.APIError:  # the SDK raises on an error event: what arrived before it stands
        errored = True
    final = stream.current_completion_snapshot
    # Usage as reported: the last non-null ``usage`` (the SDK's snapshot takes the last chunk's, even a
    # null that follows it), else Groq's ``x_groq.usage`` (Groq without stream_options reports only that).
    chunks = _data_objects(rec)
    usage = next((c["usage"] for c in chunks[::-1] if c.get("usage")), None)
    groq = next(
        (as_dict(c.get("x_groq")).get("usage") for c in chunks[::-1] if as_dict(c.get("x_groq")).get("usage")), None
    )
    _chat_outputs(final, exp, usage, groq)
    exp.view = _chat_view
    exp.response = {**_chat_view(final.to_dict(warnings=False)), "usage": usage}
    done = any(e.data.strip() == "[DONE]" for e in openai._streaming.SSEDecoder().iter_bytes(iter([rec.response_body])))
    exp.incomplete = errored or not done or any(c.finish_reason is None for c in final.choices)


def _chat_outputs(final: Any, exp: Expected, usage: Any, groq_usage: Any) -> None:
    choices = sorted(final.choices or [], key=lambda c: c.index)
    if choices:
        msg = choices[0].message
        content = msg.content
        if isinstance(content, list):  # some compatible servers answer with content parts
            content = "\n".join(p.get("text", "") for p in content if as_dict(p).get("type") == "text")
        exp.output_text = content or ""
        for tc in msg.tool_calls or []:
            fn = tc.function if getattr(tc, "function", None) is not None else tc.custom
            raw_args = fn.arguments if hasattr(fn, "arguments") else fn.input
            exp.tool_calls.append((tc.id or "", fn.name or "", args(raw_args)))
        if getattr(msg, "function_call", None):
            exp.tool_calls.append(("", msg.function_call.name, args(msg.function_call.arguments)))
    usage = as_dict(usage) or as_dict(groq_usage)
    exp.tokens = (usage.get("prompt_tokens"), usage.get("completion_tokens"))


def _chat_view(resp: Any) -> Any:
    """What a chat response says. Not ``role``: the SDK's ``accumulate_delta`` concatenates a role that
    is repeated in every delta (OpenRouter sends it so) into "assistantassistant..."."""
    resp = as_dict(resp)
    return {
        "id": resp.get("id"),
        "model": resp.get("model"),
        "created": resp.get("created"),
        "usage": resp.get("usage"),
        "choices": [
            {
                "index": c.get("index"),
                "finish_reason": c.get("finish_reason"),
                "content": as_dict(c.get("message")).get("content") or "",
                "tool_calls": [
                    (
                        t.get("id"),
                        as_dict(t.get("function")).get("name"),
                        args(as_dict(t.get("function")).get("arguments")),
                    )
                    for t in as_dict(c.get("message")).get("tool_calls") or []
                ],
            }
            for c in resp.get("choices") or []
        ],
    }


def _data_objects(rec: Recorded) -> list[dict[str, Any]]:
    out = []
    for sse in openai._streaming.SSEDecoder().iter_bytes(iter([rec.response_body])):
        try:
            value = json.loads(sse.data)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


# OpenAI Responses


def responses(rec: Recorded, exp: Expected) -> None:
    if not rec.is_event_stream:
        resp = json.loads(rec.response_body)
        exp.response = resp
        _responses_outputs(Response.construct(**resp), exp)
        return
    client = openai.OpenAI(api_key="replay", base_url="https://provider.invalid")
    raw = openai.Stream(cast_to=ResponseStreamEvent, response=sdk_response(rec), client=client)
    stream = ResponseStream(raw_stream=raw, text_format=omit, input_tools=omit, starting_after=None)
    final = stream.get_final_response()
    _responses_outputs(final, exp)
    exp.view = _responses_view
    exp.response = _responses_view(final.to_dict(warnings=False))


def _responses_outputs(final: Any, exp: Expected) -> None:
    exp.output_text = final.output_text
    for item in final.output or []:
        if item.type == "function_call":
            exp.tool_calls.append((item.call_id, item.name, args(item.arguments)))
        elif item.type == "custom_tool_call":
            exp.tool_calls.append((item.call_id, item.name, args(item.input)))
    usage = final.usage
    exp.tokens = (usage.input_tokens, usage.output_tokens) if usage else (None, None)
    exp.incomplete = False


def _responses_view(resp: Any) -> Any:
    resp = as_dict(resp)
    items = []
    for item in resp.get("output") or []:
        item = as_dict(item)
        parts = [
            (p.get("type"), p.get("text", p.get("refusal"))) for p in item.get("content") or [] if isinstance(p, dict)
        ]
        items.append(
            (
                item.get("type"),
                item.get("id"),
                item.get("call_id"),
                item.get("name"),
                args(item.get("arguments")),
                parts,
            )
        )
    return {
        "id": resp.get("id"),
        "model": resp.get("model"),
        "status": resp.get("status"),
        "usage": resp.get("usage"),
        "output": items,
    }


# Anthropic Messages


def messages(rec: Recorded, exp: Expected) -> None:
    if not rec.is_event_stream:
        resp = json.loads(rec.response_body)
        exp.response = resp
        _messages_outputs(Message.construct(**resp), exp)
        return
    client = anthropic.Anthropic(api_key="replay", base_url="https://provider.invalid")
    raw = anthropic.Stream(cast_to=RawMessageStreamEvent, response=sdk_response(rec), client=client)
    stream = MessageStream(raw, output_format=anthropic.NOT_GIVEN)
    final = stream.get_final_message()
    _messages_outputs(final, exp)
    exp.view = _messages_view
    exp.response = _messages_view(final.to_dict(warnings=False))
    exp.incomplete = b"event: message_stop" not in rec.response_body


# The SDK's accumulator carries these usage counters over from ``message_delta`` and tracks tool input
# only for these block types (it keeps other blocks' ``input`` as ``content_block_start`` gave it, and
# writes ``stop_details`` None when the delta has none): the view compares what the SDK models.
SDK_USAGE = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "server_tool_use",
    "output_tokens_details",
)
SDK_TOOL_INPUT = ("tool_use", "server_tool_use")


def _messages_view(resp: Any) -> Any:
    resp = as_dict(resp)
    blocks = [
        {k: v for k, v in as_dict(b).items() if k != "input" or as_dict(b).get("type") in SDK_TOOL_INPUT}
        for b in resp.get("content") or []
    ]
    usage = {k: v for k, v in as_dict(resp.get("usage")).items() if k in SDK_USAGE and v is not None}
    rest = {k: v for k, v in resp.items() if k not in ("content", "usage") and v is not None}
    return {**rest, "content": blocks, "usage": usage}


def _messages_outputs(final: Any, exp: Expected) -> None:
    exp.output_text = "".join(b.text for b in final.content if b.type == "text")
    exp.tool_calls = [(b.id, b.name, b.input) for b in final.content if b.type == "tool_use"]
    usage = final.usage
    inputs = [
        getattr(usage, k, None) for k in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    ]
    # prompttap follows the OpenTelemetry GenAI convention: input counts cached input too
    total = sum(c or 0 for c in inputs) if any(c is not None for c in inputs) else None
    exp.tokens = (total, usage.output_tokens)


# Gemini generateContent


def gemini(rec: Recorded, exp: Expected) -> None:
    if rec.is_event_stream:
        chunks = _data_objects(rec)
    else:
        body = json.loads(rec.response_body)
        chunks = body if isinstance(body, list) else [body]
        if not isinstance(body, list):
            exp.response = body
    texts: list[str] = []
    for chunk in chunks:
        for part in _gemini_parts(chunk):
            if "functionCall" in part:
                call = part["functionCall"]
                exp.tool_calls.append((call.get("id") or call.get("name"), call.get("name"), call.get("args", {})))
            elif "text" in part and part.get("thought") is not True:
                texts.append(part["text"])
    exp.output_text = "".join(texts)
    usage = next((c["usageMetadata"] for c in chunks[::-1] if "usageMetadata" in c), {})
    exp.tokens = (
        _total(usage, "promptTokenCount", "toolUsePromptTokenCount"),
        _total(usage, "candidatesTokenCount", "thoughtsTokenCount"),
    )
    finish = next(
        (
            c0.get("finishReason")
            for c in chunks[::-1]
            for c0 in (c.get("candidates") or [{}])[:1]
            if c0.get("finishReason")
        ),
        None,
    )
    if exp.response is None:  # a stream: the rebuilt response must say what the chunks said
        exp.view = _gemini_view
        exp.response = {
            "text": exp.output_text,
            "calls": exp.tool_calls,
            "finishReason": finish,
            "usageMetadata": usage or None,
            "modelVersion": next((c["modelVersion"] for c in chunks if "modelVersion" in c), None),
            "responseId": next((c["responseId"] for c in chunks if "responseId" in c), None),
        }
        exp.incomplete = finish is None


def _gemini_parts(chunk: dict[str, Any]) -> list[dict[str, Any]]:
    cands = chunk.get("candidates") or []
    first = next((c for c in cands if c.get("index", 0) == 0), None)
    return [p for p in as_dict(as_dict(first).get("content")).get("parts") or [] if isinstance(p, dict)]


def _total(usage: dict[str, Any], *keys: str) -> int | None:
    counts = [usage[k] for k in keys if isinstance(usage.get(k), int)]
    return sum(counts) if counts else None


def _gemini_view(resp: Any) -> Any:
    resp = as_dict(resp)
    parts = _gemini_parts(resp)
    return {
        "text": "".join(p["text"] for p in parts if "text" in p and p.get("thought") is not True),
        "calls": [
            (
                p["functionCall"].get("id") or p["functionCall"].get("name"),
                p["functionCall"].get("name"),
                p["functionCall"].get("args", {}),
            )
            for p in parts
            if "functionCall" in p
        ],
        "finishReason": next((c.get("finishReason") for c in (resp.get("candidates") or [{}])[:1]), None),
        "usageMetadata": resp.get("usageMetadata"),
        "modelVersion": resp.get("modelVersion"),
        "responseId": resp.get("responseId"),
    }


# -- the replay upstream ----------------------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes


class ReplayUpstream:
    """A real HTTP server answering each request with the armed recording's status, headers and
    body bytes; an event stream goes out one event per write, as providers send it."""

    def __init__(self) -> None:
        self.armed: Recorded | None = None
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                lifespan="off",
                log_level="warning",
                http="h11",
                interface="asgi3",
                server_header=False,
                date_header=False,
            )
        )
        self.thread: threading.Thread | None = None
        self.base_url = ""

    def start(self) -> None:
        import socket

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.thread = start_in_thread(self.server, lambda: self.server.serve(sockets=[sock]), "replay-upstream")

    def stop(self) -> None:
        assert self.thread is not None
        stop_thread(self.server, self.thread)

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        with self._lock:
            rec = self.armed
            self.received.append(
                Received(
                    scope["method"],
                    scope["raw_path"].decode("latin-1"),
                    scope["query_string"].decode("latin-1"),
                    [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]],
                    body,
                )
            )
        if rec is None:
            await send({"type": "http.response.start", "status": 599, "headers": []})
            await send({"type": "http.response.body", "body": b"nothing armed"})
            return
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in rec.response_headers]
        if rec.is_event_stream:
            await send({"type": "http.response.start", "status": rec.status, "headers": headers})
            for piece in re.split(rb"(?<=\n\n)", rec.response_body):
                if piece:
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        headers.append((b"content-length", str(len(rec.response_body)).encode()))
        await send({"type": "http.response.start", "status": rec.status, "headers": headers})
        await send({"type": "http.response.body", "body": rec.response_body})


# -- replaying through prompttap ---------------------------------------------------------------


@dataclass
class Replay:
    status: int = 0
    body: bytes = b""
    sent: Received | None = None  # what the client put on the wire
    received: list[Received] = field(default_factory=list)  # what the upstream got
    error: str = ""
    capture: dict[str, Any] | None = None


def hop_free(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted((k.lower(), v) for k, v in headers if k.lower() not in TRANSPORT_HEADERS)


@pytest.fixture(scope="module")
def replays(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Replay]]:
    """Every interaction this session's tests check, replayed once through one prompttap, with its capture."""
    mine = [i for i in request.session.items if getattr(i, "module", None) is request.module]
    wanted = {i.callspec.params["rec"].name for i in mine if hasattr(i, "callspec") and "rec" in i.callspec.params}
    recs = [r for r in REPLAYED if r.name in wanted]
    upstream = ReplayUpstream()
    upstream.start()
    out: dict[str, Replay] = {}
    try:
        with (
            Prompttap(tmp_path_factory.mktemp("real-traffic"), upstream.base_url, "--upstream-timeout", "10") as pt,
            httpx.Client(timeout=30, trust_env=False) as client,
        ):
            for rec in recs:
                out[rec.name] = replay(pt, client, upstream, rec)
            pt.drained(timeout=120)
            by_tag = {rec.tag: out[rec.name] for rec in recs}
            for item in pt.captures(limit=1000):
                full = pt.capture(item["id"])
                for tag in full.get("tags") or []:
                    if tag in by_tag:
                        by_tag[tag].capture = full
            yield out
    finally:
        upstream.stop()


def replay(pt: Prompttap, client: httpx.Client, upstream: ReplayUpstream, rec: Recorded) -> Replay:
    result = Replay()
    upstream.armed, upstream.received = rec, []
    url = pt.url + rec.path + (f"?{rec.query}" if rec.query else "")
    headers = [*rec.request_headers, ("x-prompttap-tags", rec.tag)]
    try:
        with client.stream(rec.method, url, content=rec.request_body, headers=headers) as r:
            result.status = r.status_code
            result.body = b"".join(r.iter_raw())
            sent = r.request
            result.sent = Received(
                sent.method,
                sent.url.raw_path.decode("latin-1").partition("?")[0],
                sent.url.query.decode("latin-1"),
                [(k.decode("latin-1"), v.decode("latin-1")) for k, v in sent.headers.raw],
                rec.request_body,
            )
    except httpx.HTTPError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    result.received = list(upstream.received)
    upstream.armed = None
    return result


def problems(rec: Recorded, rep: Replay) -> dict[str, str]:
    """Each failed check with what differed; empty when the interaction passes every check."""
    out: dict[str, str] = {}
    if rep.error or rep.status != rec.status or rep.body != rec.response_body:
        out["bytes"] = (
            rep.error
            or f"status {rep.status} (recorded {rec.status}), {len(rep.body)} bytes (recorded {len(rec.response_body)})"
        )
    if len(rep.received) != 1 or rep.sent is None:
        out["request"] = f"the upstream got {len(rep.received)} requests"
    else:
        got, sent = rep.received[0], rep.sent
        own = [(k, v) for k, v in sent.headers if not k.lower().startswith("x-prompttap-")]
        if (got.method, got.path, got.query, got.body) != (sent.method, sent.path, sent.query, sent.body):
            out["request"] = (
                f"sent {sent.method} {sent.path}?{sent.query}, upstream got {got.method} {got.path}?{got.query}"
            )
        elif hop_free(got.headers) != hop_free(own):
            out["request"] = f"headers differ: {set(hop_free(got.headers)) ^ set(hop_free(own))}"
        elif (sent.path, sent.query, sent.body) != (rec.path, rec.query, rec.request_body):
            out["request"] = "the client did not send the recorded request"
    cap = rep.capture
    if cap is None:
        return {**out, **{c: "no capture" for c in CHECKS if c not in out}}
    exp = expected(rec)
    calls = [(c["id"], c["name"], args(c["arguments"])) for c in cap.get("output_tool_calls") or []]
    got_values = {
        "api": (cap["api"], exp.api),
        "model": (cap["model"], exp.model),
        "stream": (cap["stream"], exp.stream),
        "output_text": (cap["output_text"], exp.output_text),
        "tool_calls": (calls, exp.tool_calls),
        "tokens": ((cap["input_tokens"], cap["output_tokens"]), exp.tokens),
        "response": (exp.view(cap["response"]) if cap["response"] is not None else None, exp.response),
        "incomplete": (cap["incomplete"], exp.incomplete),
        # a note is promised for a body that does not parse; other notes are not checked here
        "parse_error": (bool(cap["parse_error"]) or not exp.parse_error, True),
    }
    for check, (got_value, want) in got_values.items():
        if got_value != want:
            out[check] = f"capture {str(got_value)[:300]!s} != expected {str(want)[:300]!s}"
    return out


@pytest.mark.parametrize("rec", REPLAYED, ids=[r.name for r in REPLAYED])
def test_real_interaction_through_the_proxy(rec: Recorded, replays: dict[str, Replay]) -> None:
    failed = problems(rec, replays[rec.name])
    assert not failed, "\n".join(f"{check}: {why}" for check, why in failed.items())


def test_every_interaction_is_selected_or_excluded() -> None:
    """Nothing is left out silently: an interaction is replayed, or exactly one stated rule excludes it."""
    unexplained = [r.name for r in CORPUS_ITEMS if not selected_api(r) and exclusion(r) is None]
    assert not unexplained
    assert not [r.name for r in REPLAYED if exclusion(r) is not None]
    assert len(REPLAYED) > 300  # the vendored corpus is there and parsed
