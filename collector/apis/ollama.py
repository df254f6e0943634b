"""Ollama's native API: ``/api/chat``, ``/api/generate``, ``/api/embed`` (and the legacy
``/api/embeddings``).

Chat and generate stream NDJSON unless the request says ``"stream": false`` (an absent
``stream`` means true). A stream is folded back into the object a ``stream: false`` call
returns: the text (and ``thinking``) pieces concatenated, tool calls collected (each chunk
carries whole calls), everything else from the final ``done: true`` line, which also
holds the counters (``prompt_eval_count``, ``eval_count``, durations in nanoseconds).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from prompttap.collector.apis import pricing
from prompttap.collector.apis.base import (
    Exchange,
    Understanding,
    as_count,
    as_dict,
    as_list,
    as_str,
    join_notes,
    json_text,
    load_json,
    load_json_object,
    message,
    parse_note,
    read_error_or_empty,
)
from prompttap.collector.apis.timing import ChunkClock, ndjson_lines_at, tokens_per_second

PROVIDER = "ollama"  # local models: the price database has none, cost stays None

_TOP_PARAMS = ("format", "think", "keep_alive", "raw", "suffix", "template", "truncate", "dimensions")
_STREAM_PARAMS = ("logprobs", "top_logprobs")


def understand_chat(x: Exchange) -> Understanding:
    """``POST /api/chat``; never raises."""
    return _understand(x, "ollama.chat", _chat_request, "chat")


def understand_generate(x: Exchange) -> Understanding:
    """``POST /api/generate``; never raises."""
    return _understand(x, "ollama.generate", _generate_request, "generate")


def understand_embed(x: Exchange) -> Understanding:
    """``POST /api/embed`` and the legacy ``/api/embeddings``; never raises."""
    return _understand(x, "ollama.embed", _embed_request, "embed")


def _understand(
    x: Exchange, api: str, read_request: Callable[[dict[str, Any], Understanding], None], kind: str
) -> Understanding:
    u = Understanding(api=api, provider=PROVIDER)
    with parse_note(u, "request"):
        req = load_json_object(x.request_body)
        u.model = as_str(req.get("model"))
        u.params = _params(req)
        read_request(req, u)
    with parse_note(u, "response"):
        _read_response(x, u, kind)
    return u


# -- requests --------------------------------------------------------------------------


def _params(req: dict[str, Any]) -> dict[str, Any]:
    params = dict(as_dict(req.get("options")))  # temperature, top_p, num_ctx, num_predict, seed, stop...
    params.update((k, req[k]) for k in (*_TOP_PARAMS, *_STREAM_PARAMS) if k in req)
    return params


def _chat_request(req: dict[str, Any], u: Understanding) -> None:
    u.stream = req.get("stream") is not False
    system: list[str] = []
    for m in as_list(req.get("messages")):
        if not isinstance(m, dict):
            continue
        role = as_str(m.get("role")) or "user"
        if role == "system":
            system.append(as_str(m.get("content")))
            continue
        parts = _parts(as_str(m.get("content")), as_str(m.get("thinking")), m.get("images"))
        calls = [_call(tc) for tc in as_list(m.get("tool_calls")) if isinstance(tc, dict)]
        tool_name = as_str(m.get("tool_name")) or None
        call_id = (as_str(m.get("tool_call_id")) or tool_name) if role == "tool" else None
        u.messages.append(message(role, as_str(m.get("content")), parts, calls, call_id, tool_name))
    u.system_prompt = "\n".join(system)
    u.tools = _tools(req.get("tools"))


def _generate_request(req: dict[str, Any], u: Understanding) -> None:
    u.stream = req.get("stream") is not False
    u.system_prompt = as_str(req.get("system"))
    prompt = as_str(req.get("prompt"))
    if prompt or as_list(req.get("images")):  # an empty prompt only loads/unloads the model
        u.messages.append(message("user", prompt, _parts(prompt, "", req.get("images"))))


def _embed_request(req: dict[str, Any], u: Understanding) -> None:
    inputs = req["input"] if "input" in req else req.get("prompt")  # /api/embeddings: "prompt"
    for item in inputs if isinstance(inputs, list) else [inputs]:
        if item is not None:
            u.messages.append(message("user", item if isinstance(item, str) else json_text(item)))


def _parts(text: str, thinking: str, images: Any) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if thinking:
        parts.append({"type": "thinking", "text": thinking})
    parts += [{"type": "image", "url": _image_url(img)} for img in as_list(images) if isinstance(img, str)]
    if parts and text:
        parts.insert(1 if thinking else 0, {"type": "text", "text": text})
    return parts


_MAGIC = (
    ("iVBORw0KGgo", "image/png"),
    ("/9j/", "image/jpeg"),
    ("R0lGOD", "image/gif"),
    ("UklGR", "image/webp"),
)


def _image_url(b64: str) -> str:
    # Ollama takes bare base64: the media type comes from the file's magic bytes.
    if b64.startswith("data:"):
        return b64
    media = next((m for prefix, m in _MAGIC if b64.startswith(prefix)), "application/octet-stream")
    return f"data:{media};base64,{b64}"


def _call(tc: dict[str, Any]) -> dict[str, Any]:
    fn = as_dict(tc.get("function"))
    name = as_str(fn.get("name"))
    args = fn.get("arguments")
    return {
        "id": as_str(tc.get("id")) or name,  # older servers send no id: the name is what links a result
        "name": name,
        "arguments": args if isinstance(args, str) else json_text(args if args is not None else {}),
    }


def _tools(raw: Any) -> list[dict[str, Any]]:
    out = []
    for t in as_list(raw):
        if isinstance(t, dict):
            fn = as_dict(t.get("function")) or t
            out.append(
                {
                    "name": as_str(fn.get("name")),
                    "description": as_str(fn.get("description")),
                    "parameters": as_dict(fn.get("parameters")),
                }
            )
    return out


# -- responses -------------------------------------------------------------------------


def _read_response(x: Exchange, u: Understanding, kind: str) -> None:
    if read_error_or_empty(x, u):  # an error's body is {"error": "..."}
        return
    body = x.response_body
    if kind == "embed":
        u.response = load_json(body)
        _read_counts(u.response, u)
        return
    if not u.stream:
        try:
            obj = load_json(body)
        except ValueError:
            obj = None  # not one object after all: read it as a stream
        if isinstance(obj, dict):
            u.response = obj
            _read_final(obj, u, kind)
            return
    _read_stream(x, u, kind)


def _read_stream(x: Exchange, u: Understanding, kind: str) -> None:
    lines, _ = ndjson_lines_at(x.response_body)
    clock = ChunkClock(x.stream_timing, len(x.response_body))
    text: list[str] = []
    thinking: list[str] = []
    calls: list[Any] = []
    msg_extra: dict[str, Any] = {}
    last: dict[str, Any] | None = None
    first_ms = last_ms = None
    notes: list[str] = []
    for line, end in lines:
        u.chunk_count += 1
        try:
            obj = json.loads(line)
        except ValueError:
            notes.append(f"line {u.chunk_count} is not JSON")
            continue
        if not isinstance(obj, dict):
            continue
        if "error" in obj:
            notes.append(f"stream error: {as_str(obj.get('error')) or json_text(obj.get('error'))}")
            continue
        if kind == "chat":
            m = as_dict(obj.get("message"))
            piece, think, new_calls = as_str(m.get("content")), as_str(m.get("thinking")), as_list(m.get("tool_calls"))
            msg_extra.update((k, v) for k, v in m.items() if k not in ("content", "thinking", "tool_calls"))
        else:
            piece, think, new_calls = as_str(obj.get("response")), as_str(obj.get("thinking")), []
        text.append(piece)
        thinking.append(think)
        calls += new_calls
        last = obj
        if piece or think or new_calls:
            t = clock.at(end)
            first_ms = t if first_ms is None else first_ms
            last_ms = t

    u.incomplete = not (last is not None and last.get("done") is True)
    u.parse_error = join_notes(u.parse_error, "; ".join(notes))
    if last is None:
        return
    resp = dict(last)  # the done line: model, created_at, done_reason, counters
    if kind == "chat":
        msg: dict[str, Any] = {"role": "assistant", **msg_extra, "content": "".join(text)}
        if "".join(thinking):
            msg["thinking"] = "".join(thinking)
        if calls:
            msg["tool_calls"] = calls
        resp["message"] = msg
    else:
        resp["response"] = "".join(text)
        resp.pop("thinking", None)
        if "".join(thinking):
            resp["thinking"] = "".join(thinking)
    u.response = resp
    _read_final(resp, u, kind)
    u.ttft_ms = first_ms
    if u.tokens_per_second is None:
        u.tokens_per_second = tokens_per_second(u.output_tokens, first_ms, last_ms)


def _read_final(resp: dict[str, Any], u: Understanding, kind: str) -> None:
    u.finish_reason = as_str(resp.get("done_reason"))
    if kind == "chat":
        m = as_dict(resp.get("message"))
        u.output_text = as_str(m.get("content"))
        u.output_tool_calls = [_call(tc) for tc in as_list(m.get("tool_calls")) if isinstance(tc, dict)]
    else:
        u.output_text = as_str(resp.get("response"))
    _read_counts(resp, u)
    u.output_tokens = as_count(resp.get("eval_count"))
    duration = resp.get("eval_duration")
    if u.output_tokens and isinstance(duration, int | float) and not isinstance(duration, bool) and duration > 0:
        u.tokens_per_second = u.output_tokens / (duration / 1e9)  # server-measured decode rate
    u.cost_usd = pricing.cost_usd(PROVIDER, u.response_model or u.model, u.input_tokens, u.output_tokens, None)


def _read_counts(resp: Any, u: Understanding) -> None:
    if not isinstance(resp, dict):
        raise ValueError("body is not a JSON object")
    u.response_model = as_str(resp.get("model"))
    u.input_tokens = as_count(resp.get("prompt_eval_count"))
