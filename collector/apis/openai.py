"""OpenAI APIs: chat completions, responses, legacy completions, embeddings, models.

Pure functions from an ``Exchange`` to an ``Understanding``. None of them raises: a
failure becomes ``parse_error`` and whatever was understood before it is kept.

Normalization (message shape: ``base.Understanding``):

- System and developer text goes to ``system_prompt`` only, joined with a blank line
  (chat ``system``/``developer`` messages; responses ``instructions`` and system/developer
  input items). ``messages`` holds the user/assistant/tool turns.
- ``parts`` is empty for text-only messages; otherwise it lists every part in order, text
  parts included, so interleaving survives. Image URLs (data URLs too) are kept; base64
  audio and file payloads are dropped, ``data_length`` keeps their size.
- Legacy ``function`` role messages become role ``tool`` with ``name``; a legacy
  ``function_call`` becomes one tool call with id "".
- Responses input: consecutive assistant-side items (assistant message, reasoning,
  function calls) form one assistant message, as one chat turn would.
- With n > 1 the output columns describe choice 0; every choice stays in ``response``.
- Streams are rebuilt into the object the non-streaming API returns. Chunk-only fields
  (``object``, ``obfuscation``) are dropped and nothing that did not arrive is filled in:
  a cut stream keeps ``finish_reason`` None and ``usage`` None in ``response``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from prompttap.collector.apis.base import (
    Exchange,
    Understanding,
    as_count,
    as_dict,
    as_index,
    as_list,
    as_str,
    load_json,
    message,
)
from prompttap.collector.apis.events import SSEEvent
from prompttap.collector.apis.pricing import cost_usd
from prompttap.collector.apis.timing import ChunkClock, sse_events_at, tokens_per_second

PROVIDER = "openai"

CHAT_PARAMS = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "response_format",
    "tool_choice",
    "function_call",  # legacy tool_choice
    "reasoning_effort",
    "verbosity",
    "n",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "modalities",
    "audio",
    "stream_options",
    "parallel_tool_calls",
    "service_tier",
    "user",
)
RESPONSES_PARAMS = (
    "temperature",
    "top_p",
    "max_output_tokens",
    "max_tool_calls",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning",
    "text",
    "truncation",
    "top_logprobs",
    "include",
    "store",
    "background",
    "previous_response_id",
    "conversation",
    "stream_options",
    "service_tier",
    "user",
)
COMPLETIONS_PARAMS = (
    "temperature",
    "top_p",
    "max_tokens",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "n",
    "best_of",
    "logprobs",
    "echo",
    "suffix",
    "logit_bias",
    "stream_options",
    "user",
)
EMBEDDINGS_PARAMS = ("encoding_format", "dimensions", "user")

_CHUNK_ONLY = frozenset({"object", "choices", "usage", "obfuscation"})
_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_LIFECYCLE = frozenset({"response.created", "response.in_progress", "response.queued"})

_Body = Callable[[Exchange, Understanding, list[str]], None]


# --------------------------------------------------------------------------- entry points


def understand_chat(x: Exchange) -> Understanding:
    """``POST /v1/chat/completions`` (and any path ending in ``/chat/completions``)."""
    return _run("openai.chat", x, _chat)


def understand_responses(x: Exchange) -> Understanding:
    """``POST /v1/responses``."""
    return _run("openai.responses", x, _responses)


def understand_completions(x: Exchange) -> Understanding:
    """Legacy ``POST /v1/completions``: one user message per prompt."""
    return _run("openai.completions", x, _completions)


def understand_embeddings(x: Exchange) -> Understanding:
    """``POST /v1/embeddings``: one user message per input text.

    ``response`` is the response JSON with the vectors dropped: each ``data`` item keeps
    its other fields and gains ``dimensions`` (float count; base64 vectors are float32).
    """
    return _run("openai.embeddings", x, _embeddings)


def understand_models(x: Exchange) -> Understanding:
    """``GET /v1/models`` (and ``/v1/models/{id}``): ``response`` is the listing."""
    return _run("openai.models", x, _models)


def _run(api: str, x: Exchange, body: _Body) -> Understanding:
    u = Understanding(api=api, provider=PROVIDER)
    notes: list[str] = []
    try:
        body(x, u, notes)
    except Exception as exc:  # a parser bug must cost a note, not the capture
        notes.append(f"parser failed: {type(exc).__name__}: {exc}")
    u.parse_error = "; ".join(notes)[:1000]
    return u


# --------------------------------------------------------------------------- per API


def _chat(x: Exchange, u: Understanding, notes: list[str]) -> None:
    req = _request(x, u, notes, CHAT_PARAMS)
    msgs = req.get("messages")
    if msgs is not None and not isinstance(msgs, list):
        notes.append("request: messages is not a list")
    u.system_prompt, u.messages = _chat_messages(as_list(msgs), notes)
    u.tools = _tools(req.get("tools"), req.get("functions"))
    _choices_response(x, u, notes, "chat.completion", _ChatChoice, _chat_output, _chat_has_content)
    _cost(u)


def _responses(x: Exchange, u: Understanding, notes: list[str]) -> None:
    req = _request(x, u, notes, RESPONSES_PARAMS)
    system: list[str] = []
    instructions = req.get("instructions")
    if isinstance(instructions, str) and instructions:
        system.append(instructions)
    elif isinstance(instructions, list):  # a stored prompt's instructions come as items
        system.extend(m["content"] for m in _items(instructions, system) if m["content"])
    inp = req.get("input")
    if isinstance(inp, str):
        u.messages = [message("user", inp)]
    elif isinstance(inp, list):
        u.messages = _settle(_items(inp, system))
    elif inp is not None:
        notes.append("request: input is not a string or a list")
    u.system_prompt = "\n\n".join(system)
    u.tools = _tools(req.get("tools"))
    kind = _response_kind(x, u, notes)
    if kind == "json":
        resp = _response_json(x, notes)
        if resp is not None:
            u.response = resp
            _responses_output(u, resp)
    elif kind == "sse":
        _responses_stream(x, u, notes)
    elif kind == "none" and u.stream:
        u.incomplete = True
    _cost(u)


def _completions(x: Exchange, u: Understanding, notes: list[str]) -> None:
    req = _request(x, u, notes, COMPLETIONS_PARAMS)
    u.messages = _input_messages(req.get("prompt"))
    _choices_response(x, u, notes, "text_completion", _TextChoice, _text_output, _text_has_content)
    _cost(u)


def _choices_response(
    x: Exchange,
    u: Understanding,
    notes: list[str],
    object_name: str,
    choice_type: type[_Choice],
    output: Callable[[Understanding, dict[str, Any]], None],
    has_content: Callable[[Any], bool],
) -> None:
    """The response side of the two choice-list APIs (chat and legacy completions).

    A JSON body is read with ``output``; a stream is rebuilt into the same object
    (``object_name``, choices merged by ``choice_type``) and timed from the first chunk
    ``has_content`` accepts.
    """
    kind = _response_kind(x, u, notes)
    if kind == "json":
        resp = _response_json(x, notes)
        if resp is not None:
            u.response = resp
            output(u, resp)
    elif kind == "sse":
        events, done = _data_events(x, u, notes)
        chunks = [obj for _, obj, _ in events if isinstance(obj, dict)]
        if chunks:
            resp = _rebuild(chunks, object_name, choice_type)
            u.response = resp
            output(u, resp)
            u.incomplete = not done or any(c.get("finish_reason") is None for c in resp["choices"])
        else:
            u.incomplete = not done
        _timing(x, u, next((end for _, obj, end in events if has_content(obj)), None))
    elif kind == "none" and u.stream:
        u.incomplete = True


def _embeddings(x: Exchange, u: Understanding, notes: list[str]) -> None:
    req = _request(x, u, notes, EMBEDDINGS_PARAMS)
    u.messages = _input_messages(req.get("input"))
    kind = _response_kind(x, u, notes)
    if kind == "sse":
        notes.append("response: unexpected event stream")
    elif kind == "json":
        resp = _response_json(x, notes)
        if resp is not None:
            u.response = _slim_embeddings(resp)
            u.response_model = as_str(resp.get("model"))
            u.input_tokens = _count(as_dict(resp.get("usage")).get("prompt_tokens"))
    # Embeddings produce no output tokens by definition: 0 here is a fact, not a guess.
    no_output = 0 if u.input_tokens is not None else None
    u.cost_usd = cost_usd(PROVIDER, u.response_model or u.model, u.input_tokens, no_output, None)


def _models(x: Exchange, u: Understanding, notes: list[str]) -> None:
    found = re.search(r"/models/(.+)$", x.path or "")
    if found:  # retrieve one model: the id is in the path
        u.model = found.group(1)
    kind = _response_kind(x, u, notes)
    if kind == "sse":
        notes.append("response: unexpected event stream")
    elif kind == "json":
        try:
            u.response = load_json(x.response_body)
        except (ValueError, RecursionError) as exc:
            notes.append(f"response: {exc}")


# --------------------------------------------------------------------------- request side


def _request(x: Exchange, u: Understanding, notes: list[str], param_keys: tuple[str, ...]) -> dict[str, Any]:
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


def _chat_messages(msgs: list[Any], notes: list[str]) -> tuple[str, list[dict[str, Any]]]:
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            notes.append(f"request: messages[{i}] is not an object")
            continue
        role = as_str(m.get("role"))
        content = m.get("content")
        if content is not None and not isinstance(content, str | list):
            notes.append(f"request: messages[{i}].content is not text or parts")
        text, parts = _content(content)
        if role in ("system", "developer"):
            if text:
                system.append(text)
            continue
        if isinstance(m.get("refusal"), str):
            parts.append({"type": "refusal", "text": m["refusal"]})
        audio = m.get("audio")
        if isinstance(audio, dict) and isinstance(audio.get("id"), str):  # a previous audio answer
            parts.append({"type": "audio", "id": audio["id"]})
        calls = _tool_calls(m.get("tool_calls"), m.get("function_call"))
        if role == "function":  # legacy function result: identified by name only
            role = "tool"
        out.append(message(role, text, parts, calls, _opt_str(m.get("tool_call_id")), _opt_str(m.get("name"))))
    return "\n\n".join(system), _settle(out)


def _items(items: list[Any], system: list[str]) -> list[dict[str, Any]]:
    """Responses input items as normalized messages (system/developer text into ``system``)."""
    out: list[dict[str, Any]] = []

    def turn() -> dict[str, Any]:
        if out and out[-1]["role"] == "assistant":
            return out[-1]
        out.append(message("assistant"))
        return out[-1]

    for it in items:
        if isinstance(it, str):
            out.append(message("user", it, [{"type": "text", "text": it}]))
            continue
        if not isinstance(it, dict):
            continue
        kind, role = it.get("type"), it.get("role")
        if kind in (None, "message") and isinstance(role, str):
            text, parts = _content(it.get("content"))
            if role in ("system", "developer"):
                if text:
                    system.append(text)
            elif role == "assistant":
                m = turn()
                m["content"] = "\n".join(t for t in (m["content"], text) if t)
                m["parts"].extend(parts)
            else:
                out.append(message(role, text, parts))
        elif kind in ("function_call", "custom_tool_call"):
            turn()["tool_calls"].append(_item_call(it))
        elif kind in ("function_call_output", "custom_tool_call_output"):
            text, parts = _content(it.get("output"))
            out.append(message("tool", text, parts, tool_call_id=_opt_str(it.get("call_id"))))
        elif kind == "reasoning":
            turn()["parts"].append(_thinking(it))
        elif isinstance(kind, str) and kind.endswith("_call_output"):  # built-in tool results
            text, parts = _content(it.get("output"))
            out.append(message("tool", text, parts, tool_call_id=_opt_str(it.get("call_id"))))
        elif isinstance(kind, str):  # built-in tool calls, item references: a marker, raw body has the rest
            turn()["parts"].append({"type": kind, "id": as_str(it.get("id"))})
    return out


def _thinking(item: dict[str, Any]) -> dict[str, Any]:
    texts = [as_str(s.get("text")) for s in as_list(item.get("summary")) if isinstance(s, dict)]
    if not any(texts):
        texts = [as_str(c.get("text")) for c in as_list(item.get("content")) if isinstance(c, dict)]
    part: dict[str, Any] = {"type": "thinking", "text": "\n".join(t for t in texts if t)}
    if isinstance(item.get("encrypted_content"), str):
        part["encrypted"] = True
    return part


def _item_call(it: dict[str, Any]) -> dict[str, Any]:
    args = it.get("arguments") if it.get("type") == "function_call" else it.get("input")
    return {
        "id": as_str(it.get("call_id")) or as_str(it.get("id")),
        "name": as_str(it.get("name")),
        "arguments": _args_text(args),
    }


def _input_messages(value: Any) -> list[dict[str, Any]]:
    """One user message per prompt/input text; token-id inputs keep only their count."""
    if isinstance(value, str):
        return [message("user", value)]
    if not isinstance(value, list):
        return []
    if value and all(as_index(v) is not None for v in value):
        return [message("user", "", [{"type": "tokens", "count": len(value)}])]
    out = []
    for v in value:
        if isinstance(v, str):
            out.append(message("user", v))
        elif isinstance(v, list):
            out.append(message("user", "", [{"type": "tokens", "count": len(v)}]))
    return out


def _content(content: Any) -> tuple[str, list[dict[str, Any]]]:
    """A message's text (text parts joined with newlines) and all its parts in order."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, [{"type": "text", "text": content}]
    items = content if isinstance(content, list) else [content] if isinstance(content, dict) else []
    parts = [p for p in map(_part, items) if p is not None]
    return "\n".join(p["text"] for p in parts if p["type"] == "text"), parts


def _part(p: Any) -> dict[str, Any] | None:
    if isinstance(p, str):
        return {"type": "text", "text": p}
    if not isinstance(p, dict):
        return None
    kind = p.get("type")
    if kind in ("text", "input_text", "output_text"):
        return {"type": "text", "text": as_str(p.get("text"))}
    if kind in ("image_url", "input_image"):
        src = p.get("image_url")
        image: dict[str, Any] = {
            "type": "image",
            "url": as_str(src.get("url") if isinstance(src, dict) else src),
        }
        detail = (src if isinstance(src, dict) else p).get("detail")
        if isinstance(detail, str):
            image["detail"] = detail
        if isinstance(p.get("file_id"), str):
            image["file_id"] = p["file_id"]
        return image
    if kind == "input_audio":
        src = as_dict(p.get("input_audio"))
        return {"type": "audio", "format": as_str(src.get("format")), "data_length": len(as_str(src.get("data")))}
    if kind in ("file", "input_file"):
        src = as_dict(p.get("file")) if kind == "file" else p
        file: dict[str, Any] = {"type": "file"}
        for key in ("file_id", "filename", "file_url"):
            if isinstance(src.get(key), str):
                file[key] = src[key]
        if isinstance(src.get("file_data"), str):
            file["data_length"] = len(src["file_data"])
        return file
    if kind == "refusal":
        return {"type": "refusal", "text": as_str(p.get("refusal"))}
    return {**p, "type": kind if isinstance(kind, str) else "unknown"}


def _settle(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Text-only messages carry no parts: their text is all in ``content``."""
    for m in msgs:
        if all(p.get("type") == "text" for p in m["parts"]):
            m["parts"] = []
    return msgs


def _tool_calls(calls: Any, function_call: Any = None) -> list[dict[str, Any]]:
    out = []
    for c in as_list(calls):
        if not isinstance(c, dict):
            continue
        fn = c.get("function") if isinstance(c.get("function"), dict) else as_dict(c.get("custom"))
        args = fn.get("arguments") if "arguments" in fn else fn.get("input")
        out.append({"id": as_str(c.get("id")), "name": as_str(fn.get("name")), "arguments": _args_text(args)})
    if isinstance(function_call, dict):
        name, args = function_call.get("name"), function_call.get("arguments")
        out.append({"id": "", "name": as_str(name), "arguments": _args_text(args)})
    return out


def _tools(*lists: Any) -> list[dict[str, Any]]:
    """Tool definitions as {name, description, parameters}; built-in tools are named by type."""
    out = []
    for t in (t for lst in lists for t in as_list(lst)):
        if not isinstance(t, dict):
            continue
        spec = t.get("function") if isinstance(t.get("function"), dict) else t
        if t.get("type") == "custom" and isinstance(t.get("custom"), dict):
            spec = t["custom"]
        params = spec.get("parameters")
        out.append(
            {
                "name": as_str(spec.get("name")) or as_str(t.get("type")),
                "description": as_str(spec.get("description")),
                "parameters": params if isinstance(params, dict) else None,
            }
        )
    return out


# --------------------------------------------------------------------------- response side


def _response_kind(x: Exchange, u: Understanding, notes: list[str]) -> str:
    """'error', 'none', 'json' or 'sse'. An error response is stored as its JSON when it parses."""
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
    return "json" if body.lstrip()[:1] in (b"{", b"[") else "sse"


def _response_json(x: Exchange, notes: list[str]) -> dict[str, Any] | None:
    try:
        resp = load_json(x.response_body)
    except (ValueError, RecursionError) as exc:
        notes.append(f"response: {exc}")
        return None
    if not isinstance(resp, dict):
        notes.append("response: body is not a JSON object")
        return None
    return resp


def _chat_output(u: Understanding, resp: dict[str, Any]) -> None:
    u.response_id = as_str(resp.get("id"))
    u.response_model = as_str(resp.get("model"))
    choice = _first_choice(resp.get("choices"))
    msg = as_dict(choice.get("message"))
    u.output_text = _content(msg.get("content"))[0]
    u.output_tool_calls = _tool_calls(msg.get("tool_calls"), msg.get("function_call"))
    u.finish_reason = as_str(choice.get("finish_reason"))
    _chat_usage(u, resp.get("usage"))


def _text_output(u: Understanding, resp: dict[str, Any]) -> None:
    u.response_id = as_str(resp.get("id"))
    u.response_model = as_str(resp.get("model"))
    choice = _first_choice(resp.get("choices"))
    u.output_text = as_str(choice.get("text"))
    u.finish_reason = as_str(choice.get("finish_reason"))
    _chat_usage(u, resp.get("usage"))


def _first_choice(choices: Any) -> dict[str, Any]:
    items = [c for c in as_list(choices) if isinstance(c, dict)]
    return next((c for c in items if as_index(c.get("index")) == 0), items[0] if items else {})


def _chat_usage(u: Understanding, usage: Any) -> None:
    usage = as_dict(usage)
    u.input_tokens = _count(usage.get("prompt_tokens"))
    u.output_tokens = _count(usage.get("completion_tokens"))
    u.cached_tokens = _count(as_dict(usage.get("prompt_tokens_details")).get("cached_tokens"))
    u.reasoning_tokens = _count(as_dict(usage.get("completion_tokens_details")).get("reasoning_tokens"))


def _responses_output(u: Understanding, resp: dict[str, Any]) -> None:
    u.response_id = as_str(resp.get("id"))
    u.response_model = as_str(resp.get("model"))
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in as_list(resp.get("output")):
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            for p in as_list(item.get("content")):
                if isinstance(p, dict) and p.get("type") == "output_text" and isinstance(p.get("text"), str):
                    texts.append(p["text"])
        elif item.get("type") in ("function_call", "custom_tool_call"):
            calls.append(_item_call(item))
    u.output_text = "".join(texts)  # as the SDK's ``response.output_text``
    u.output_tool_calls = calls
    status = resp.get("status")
    if status == "completed":
        u.finish_reason = "tool_calls" if calls else "stop"
    elif status == "incomplete":
        u.finish_reason = as_str(as_dict(resp.get("incomplete_details")).get("reason")) or "incomplete"
    elif status in ("failed", "cancelled"):
        u.finish_reason = status
    usage = as_dict(resp.get("usage"))
    u.input_tokens = _count(usage.get("input_tokens"))
    u.output_tokens = _count(usage.get("output_tokens"))
    u.cached_tokens = _count(as_dict(usage.get("input_tokens_details")).get("cached_tokens"))
    u.reasoning_tokens = _count(as_dict(usage.get("output_tokens_details")).get("reasoning_tokens"))


def _slim_embeddings(resp: dict[str, Any]) -> dict[str, Any]:
    out = dict(resp)
    if isinstance(resp.get("data"), list):
        out["data"] = [_slim_vector(d) for d in resp["data"]]
    return out


def _slim_vector(d: Any) -> Any:
    if not isinstance(d, dict) or "embedding" not in d:
        return d
    vector = d["embedding"]
    slim = {k: v for k, v in d.items() if k != "embedding"}
    if isinstance(vector, list):
        slim["dimensions"] = len(vector)
    elif isinstance(vector, str):  # encoding_format=base64: packed float32
        slim["dimensions"] = len(vector.rstrip("=")) * 3 // 4 // 4
    return slim


def _cost(u: Understanding) -> None:
    u.cost_usd = cost_usd(PROVIDER, u.response_model or u.model, u.input_tokens, u.output_tokens, u.cached_tokens)


# --------------------------------------------------------------------------- streams


def _data_events(x: Exchange, u: Understanding, notes: list[str]) -> tuple[list[tuple[SSEEvent, Any, int]], bool]:
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


def _timing(x: Exchange, u: Understanding, first_end: int | None) -> None:
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


def _chat_has_content(obj: Any) -> bool:
    for c in as_list(as_dict(obj).get("choices")):
        d = as_dict(as_dict(c).get("delta"))
        if as_str(d.get("content")) or as_str(d.get("refusal")) or d.get("tool_calls") or d.get("function_call"):
            return True
        audio = as_dict(d.get("audio"))
        if as_str(audio.get("transcript")) or as_str(audio.get("data")):
            return True
    return False


def _text_has_content(obj: Any) -> bool:
    return any(as_str(as_dict(c).get("text")) for c in as_list(as_dict(obj).get("choices")))


def _rebuild(chunks: list[dict[str, Any]], object_name: str, choice_type: type[_Choice]) -> dict[str, Any]:
    """The non-streaming response object from its chunks.

    Top-level fields: first non-null value (they repeat in every chunk); ``usage`` from the
    last chunk that has one (the include_usage chunk); choices merged by index.
    """
    top: dict[str, Any] = {}
    usage = None
    choices: dict[int, _Choice] = {}
    for chunk in chunks:
        for key, value in chunk.items():
            if key not in _CHUNK_ONLY and top.get(key) is None:
                top[key] = value
        if chunk.get("usage") is not None:
            usage = chunk["usage"]
        for c in as_list(chunk.get("choices")):
            idx = as_index(c.get("index", 0)) if isinstance(c, dict) else None
            if idx is None:
                continue
            if idx not in choices:
                choices[idx] = choice_type(idx)
            choices[idx].merge(c)
    resp = {"id": top.pop("id", None), "object": object_name, "created": top.pop("created", None)}
    resp["model"] = top.pop("model", None)
    resp.update(top)
    resp["choices"] = [choices[i].close() for i in sorted(choices)]
    resp["usage"] = usage
    return resp


class _Choice:
    """One choice being rebuilt from stream chunks."""

    __slots__ = ("extra", "finish_reason", "index", "logprobs")

    def __init__(self, index: int) -> None:
        self.index = index
        self.logprobs: Any = None
        self.finish_reason: Any = None
        self.extra: dict[str, Any] = {}

    def merge(self, c: dict[str, Any]) -> None:
        for key, value in c.items():
            if key == "logprobs":
                self.logprobs = _merge_logprobs(self.logprobs, value)
            elif key == "finish_reason":
                if value is not None:  # the final audio update omits it: keep the earlier one
                    self.finish_reason = value
            elif key != "index" and not self.take(key, value) and value is not None:
                self.extra[key] = value  # e.g. Azure's content_filter_results: the last is the fullest

    def take(self, key: str, value: Any) -> bool:
        return False

    def close(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "logprobs": self.logprobs,
            "finish_reason": self.finish_reason,
            **self.extra,
        }


class _ChatChoice(_Choice):
    __slots__ = ("message", "tools")

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.message: dict[str, Any] = {}
        self.tools: dict[int, dict[str, Any]] = {}

    def take(self, key: str, value: Any) -> bool:
        if key != "delta":
            return False
        for k, v in as_dict(value).items():
            if k == "role":
                if isinstance(v, str) and not self.message.get("role"):
                    self.message["role"] = v
            elif k == "tool_calls":
                for tc in as_list(v):
                    if isinstance(tc, dict):
                        self._tool_call(tc)
            elif k == "function_call" and isinstance(v, dict):
                fc = self.message.get("function_call")
                if not isinstance(fc, dict):
                    fc = self.message["function_call"] = {"name": "", "arguments": ""}
                if isinstance(v.get("name"), str) and not fc.get("name"):
                    fc["name"] = v["name"]
                if isinstance(v.get("arguments"), str):
                    fc["arguments"] = as_str(fc.get("arguments")) + v["arguments"]
            elif k == "audio" and isinstance(v, dict):
                audio = self.message.get("audio")
                if not isinstance(audio, dict):
                    audio = self.message["audio"] = {}
                for ak, av in v.items():
                    if ak in ("data", "transcript") and isinstance(av, str):
                        audio[ak] = as_str(audio.get(ak)) + av
                    elif av is not None and audio.get(ak) is None:
                        audio[ak] = av
            else:  # content, refusal, reasoning_content, annotations, ...
                self.message[k] = _accumulate(self.message.get(k), v)
        return True

    def _tool_call(self, tc: dict[str, Any]) -> None:
        idx = as_index(tc.get("index"))
        if idx is None:  # some compatible servers omit index: a new id starts a new call
            known = {t["id"] for t in self.tools.values()}
            idx = max(self.tools, default=-1) + (1 if not self.tools or tc.get("id") not in known else 0)
        acc = self.tools.setdefault(idx, {"id": None, "type": None, "name": None, "arguments": ""})
        fn = as_dict(tc.get("function"))
        for key, value in (("id", tc.get("id")), ("type", tc.get("type")), ("name", fn.get("name"))):
            if acc[key] is None and isinstance(value, str) and value:
                acc[key] = value
        if "arguments" in fn and fn["arguments"] is not None:
            acc["arguments"] += _args_text(fn["arguments"])

    def close(self) -> dict[str, Any]:
        msg = {"role": self.message.get("role") or "assistant"}
        msg.update((k, v) for k, v in self.message.items() if k != "role")
        if self.tools:
            msg["tool_calls"] = [
                {
                    "id": t["id"] or "",
                    "type": t["type"] or "function",
                    "function": {"name": t["name"] or "", "arguments": t["arguments"]},
                }
                for _, t in sorted(self.tools.items())
            ]
        return {"index": self.index, "message": msg, **super().close()}


class _TextChoice(_Choice):
    __slots__ = ("text",)

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.text = ""

    def take(self, key: str, value: Any) -> bool:
        if key != "text":
            return False
        self.text += as_str(value)
        return True

    def close(self) -> dict[str, Any]:
        return {"text": self.text, **super().close()}


def _merge_logprobs(acc: Any, new: Any) -> Any:
    """Token lists concatenate (chat ``content``/``refusal``, legacy ``tokens``/``text_offset``...)."""
    if not isinstance(new, dict):
        return acc
    if not isinstance(acc, dict):
        return {k: list(v) if isinstance(v, list) else v for k, v in new.items()}
    for k, v in new.items():
        acc[k] = _accumulate(acc.get(k), v)
    return acc


def _accumulate(prev: Any, new: Any) -> Any:
    if isinstance(prev, str) and isinstance(new, str):
        return prev + new
    if isinstance(prev, list) and isinstance(new, list):
        return prev + new
    return prev if new is None else new


def _responses_stream(x: Exchange, u: Understanding, notes: list[str]) -> None:
    """Prefer the terminal event's full response; rebuild from item events when the stream was cut."""
    events, _ = _data_events(x, u, notes)  # this API sends no [DONE]: the terminal event ends it
    final: dict[str, Any] | None = None
    snapshot: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    added: dict[int, dict[str, Any]] = {}
    finished: dict[int, dict[str, Any]] = {}
    first: int | None = None
    for ev, obj, end in events:
        if not isinstance(obj, dict):
            continue
        kind = obj["type"] if isinstance(obj.get("type"), str) else ev.event
        resp = obj.get("response")
        if kind in _TERMINAL and isinstance(resp, dict):
            final = resp
        elif kind in _LIFECYCLE and isinstance(resp, dict):
            snapshot = resp
        elif kind == "error":
            error = {k: v for k, v in obj.items() if k not in ("type", "sequence_number")}
        else:
            _item_event(kind, obj, added, finished)
        if first is None and _responses_has_content(kind, obj):
            first = end
    resp_obj: dict[str, Any] | None
    if final is not None:
        resp_obj = final
    elif snapshot is None and not added and not finished:
        resp_obj = {"error": error} if error is not None else None
    else:
        resp_obj = dict(snapshot or {})
        resp_obj["output"] = [
            finished[i] if i in finished else added[i] for i in sorted(added.keys() | finished.keys())
        ]
        if error is not None and resp_obj.get("error") is None:
            resp_obj["error"] = error
    u.response = resp_obj
    if resp_obj is not None:
        _responses_output(u, resp_obj)
    u.incomplete = final is None
    _timing(x, u, first)


def _item_event(kind: str, ev: dict[str, Any], added: dict[int, Any], finished: dict[int, Any]) -> None:
    idx = as_index(ev.get("output_index"))
    if idx is None:
        return
    if kind in ("response.output_item.added", "response.output_item.done"):
        if isinstance(ev.get("item"), dict):
            (added if kind.endswith("added") else finished)[idx] = ev["item"]
        return
    item = added.get(idx)
    if item is None:  # an event for an item we never saw begin: nothing to attach it to
        return
    if kind == "response.function_call_arguments.delta":
        item["arguments"] = as_str(item.get("arguments")) + as_str(ev.get("delta"))
    elif kind == "response.function_call_arguments.done" and isinstance(ev.get("arguments"), str):
        item["arguments"] = ev["arguments"]
    elif kind in ("response.content_part.added", "response.content_part.done"):
        if isinstance(ev.get("part"), dict):
            _slot(item, "content", ev.get("content_index"), ev["part"], replace=True)
    elif kind in ("response.output_text.delta", "response.refusal.delta", "response.reasoning_text.delta"):
        ptype, key = {
            "response.output_text.delta": ("output_text", "text"),
            "response.refusal.delta": ("refusal", "refusal"),
            "response.reasoning_text.delta": ("reasoning_text", "text"),
        }[kind]
        part = _slot(item, "content", ev.get("content_index"), {"type": ptype, key: ""})
        part[key] = as_str(part.get(key)) + as_str(ev.get("delta"))
    elif kind == "response.output_text.done" and isinstance(ev.get("text"), str):
        _slot(item, "content", ev.get("content_index"), {"type": "output_text", "text": ""})["text"] = ev["text"]
    elif kind == "response.reasoning_summary_part.added" and isinstance(ev.get("part"), dict):
        _slot(item, "summary", ev.get("summary_index"), ev["part"], replace=True)
    elif kind == "response.reasoning_summary_text.delta":
        part = _slot(item, "summary", ev.get("summary_index"), {"type": "summary_text", "text": ""})
        part["text"] = as_str(part.get("text")) + as_str(ev.get("delta"))


def _slot(item: dict[str, Any], key: str, index: Any, part: dict[str, Any], replace: bool = False) -> dict[str, Any]:
    """The part at ``item[key][index]``, created from ``part`` if missing (or replaced).

    Indexes past the end append rather than pad, so a garbage index cannot allocate.
    """
    parts = item.get(key)
    if not isinstance(parts, list):
        parts = item[key] = []
    i = as_index(index)
    if i is None or i < 0 or i >= len(parts):
        parts.append(part)
        return part
    if replace or not isinstance(parts[i], dict):
        parts[i] = part
    return parts[i]


def _responses_has_content(kind: str, ev: dict[str, Any]) -> bool:
    if kind in (
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
    ):
        return bool(as_str(ev.get("delta")))
    if kind == "response.output_item.added":
        return as_dict(ev.get("item")).get("type") in ("function_call", "custom_tool_call")
    return False


# --------------------------------------------------------------------------- coercions


def _opt_str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _count(v: Any) -> int | None:
    """``as_count``, also taking a whole float (12.0): some compatible servers send counts as floats."""
    return as_count(int(v) if isinstance(v, float) and v.is_integer() else v)


def _args_text(v: Any) -> str:
    """Tool-call arguments as JSON text; some compatible servers send an object."""
    if isinstance(v, str):
        return v
    if v is None:
        return ""
    try:
        return json.dumps(v, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return ""
