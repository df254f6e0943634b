"""Gemini API ``models/{model}:generateContent`` and ``:streamGenerateContent``.

A stream is SSE with ``?alt=sse`` and otherwise one JSON array whose elements arrive over
time; either way each element is a ``GenerateContentResponse``. They are merged into one:
per candidate (by ``index``) consecutive text parts are concatenated (thought text apart
from answer text), other parts appended, other candidate fields and the top-level fields
(``usageMetadata``, ``modelVersion``, ``responseId``...) taken from the last chunk that
has them. Field names are read in both spellings the REST API accepts (camel and snake).
"""

from __future__ import annotations

import json
import re
from typing import Any

from prompttap.collector.apis import pricing
from prompttap.collector.apis.base import (
    Exchange,
    Understanding,
    as_count,
    as_dict,
    as_index,
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
from prompttap.collector.apis.timing import ChunkClock, sse_events_at, tokens_per_second

API = "gemini.generate"
PROVIDER = "google"

_MODEL = re.compile(r"(?:^|/)(?:models|tunedModels)/([^/:]+):")
_TEXT_KEYS = frozenset({"text", "thought", "thoughtSignature"})


def understand_generate(x: Exchange) -> Understanding:
    """Understand one generateContent / streamGenerateContent exchange; never raises.

    ``input_tokens`` is ``promptTokenCount`` (which already includes
    ``cachedContentTokenCount``) plus ``toolUsePromptTokenCount``; ``output_tokens`` is
    ``candidatesTokenCount`` plus ``thoughtsTokenCount`` (both billed as output; other
    APIs count reasoning inside output too); ``reasoning_tokens`` is ``thoughtsTokenCount``.
    """
    u = Understanding(api=API, provider=PROVIDER)
    m = _MODEL.search(x.path)
    u.model = m.group(1) if m else ""
    u.stream = ":streamGenerateContent" in x.path
    with parse_note(u, "request"):
        _read_request(x, u)
    with parse_note(u, "response"):
        _read_response(x, u)
    return u


# -- request ---------------------------------------------------------------------------


def _read_request(x: Exchange, u: Understanding) -> None:
    req = load_json_object(x.request_body)
    u.params = dict(as_dict(_get(req, "generationConfig", "generation_config")))
    for camel, snake in (("toolConfig", "tool_config"), ("safetySettings", "safety_settings")):
        if _get(req, camel, snake) is not None:
            u.params[camel] = _get(req, camel, snake)
    if _get(req, "cachedContent", "cached_content") is not None:
        u.params["cachedContent"] = _get(req, "cachedContent", "cached_content")
    u.system_prompt = _system_text(_get(req, "systemInstruction", "system_instruction"))
    contents = _get(req, "contents")
    u.messages = _messages(contents if isinstance(contents, list) else [contents])
    u.tools = _tools(req.get("tools"))


def _system_text(sys: Any) -> str:
    if isinstance(sys, str):
        return sys
    parts = as_list(sys.get("parts")) if isinstance(sys, dict) else as_list(sys)
    return "\n".join(as_str(p.get("text")) for p in parts if isinstance(p, dict) and "text" in p)


def _messages(contents: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for c in contents:
        if not isinstance(c, dict):
            continue
        role = {"model": "assistant", "": "user"}.get(as_str(c.get("role")), as_str(c.get("role")))
        emitted = len(out)
        parts: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []
        for p in as_list(c.get("parts")):
            if not isinstance(p, dict):
                continue
            fc, fr = (
                _get(p, "functionCall", "function_call"),
                _get(p, "functionResponse", "function_response"),
            )
            if isinstance(fc, dict):
                calls.append(_call(fc))
            elif isinstance(fr, dict):
                # A function response is its own "tool" message; other parts stay with the role.
                if parts:
                    out.append(_from_parts(role, parts))
                    parts = []
                name = as_str(fr.get("name"))
                content = json_text(fr.get("response", {}))
                out.append(message("tool", content, tool_call_id=as_str(fr.get("id")) or name, name=name or None))
            else:
                parts.append(_part(p))
        if parts or calls or len(out) == emitted:
            out.append(_from_parts(role, parts, calls))
    return out


def _from_parts(role: str, parts: list[dict[str, Any]], calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    text = "\n".join(p["text"] for p in parts if p["type"] == "text")
    if all(p["type"] == "text" for p in parts):
        parts = []  # plain text: ``content`` says it all
    return message(role, text, parts, calls)


def _part(p: dict[str, Any]) -> dict[str, Any]:
    if "text" in p:
        kind = "thinking" if p.get("thought") is True else "text"
        return {"type": kind, "text": as_str(p.get("text"))}
    inline = _get(p, "inlineData", "inline_data")
    if isinstance(inline, dict):
        media = as_str(_get(inline, "mimeType", "mime_type"))
        return {"type": _media_kind(media), "url": f"data:{media};base64,{as_str(inline.get('data'))}"}
    file = _get(p, "fileData", "file_data")
    if isinstance(file, dict):
        media = as_str(_get(file, "mimeType", "mime_type"))
        return {"type": _media_kind(media), "url": as_str(_get(file, "fileUri", "file_uri")), "media_type": media}
    key = next(iter(p), "unknown")  # executableCode, codeExecutionResult...: kept as sent
    return {"type": key, **p}


def _media_kind(media: str) -> str:
    top = media.split("/", 1)[0]
    return top if top in ("image", "audio", "video") else "file"


def _call(fc: dict[str, Any]) -> dict[str, Any]:
    name = as_str(fc.get("name"))
    # ids are optional in Gemini: without one, the name is what links call and response
    return {"id": as_str(fc.get("id")) or name, "name": name, "arguments": json_text(fc.get("args", {}))}


def _tools(raw: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for t in as_list(raw):
        if not isinstance(t, dict):
            continue
        for key, value in t.items():
            if key in ("functionDeclarations", "function_declarations"):
                for fd in as_list(value):
                    if isinstance(fd, dict):
                        params = fd.get("parameters", _get(fd, "parametersJsonSchema", "parameters_json_schema"))
                        out.append(
                            {
                                "name": as_str(fd.get("name")),
                                "description": as_str(fd.get("description")),
                                "parameters": as_dict(params),
                            }
                        )
            else:  # googleSearch, codeExecution, urlContext...: built-in tools without a schema
                out.append({"name": key, "description": "", "parameters": {}, "type": key})
    return out


# -- response --------------------------------------------------------------------------


def _read_response(x: Exchange, u: Understanding) -> None:
    if read_error_or_empty(x, u):
        return
    body = x.response_body
    head = body.lstrip()[:5]
    if head.startswith(b"["):
        chunks, complete = _array_chunks(body)
        _read_stream(x, u, chunks, complete)
    elif "event-stream" in x.response_content_type.lower() or head.startswith((b"data:", b"event")):
        events, complete = sse_events_at(body)
        chunks = []
        for ev, end in events:
            try:
                chunks.append((json.loads(ev.data), end))
            except ValueError:
                chunks.append((ValueError(f"event {len(chunks) + 1} data is not JSON"), end))
        _read_stream(x, u, chunks, complete)
    else:
        u.response = load_json(body)
        _read_gcr(u.response, u)


def _array_chunks(body: bytes) -> tuple[list[tuple[Any, int]], bool]:
    """Elements of a (possibly cut-off) JSON array with the byte offset past each."""
    text = body.decode("utf-8", "replace")
    decoder = json.JSONDecoder()
    out: list[tuple[Any, int]] = []
    i = len(text) - len(text.lstrip()) + 1  # past "["
    char_pos = byte_pos = 0
    while True:
        while i < len(text) and text[i] in " \t\r\n,":
            i += 1
        if i >= len(text):
            return out, False  # cut before the closing bracket
        if text[i] == "]":
            return out, not text[i + 1 :].strip()
        try:
            obj, j = decoder.raw_decode(text, i)
        except ValueError:
            return out, False  # torn element
        byte_pos += len(text[char_pos:j].encode("utf-8"))
        char_pos = i = j
        out.append((obj, byte_pos))


def _read_stream(x: Exchange, u: Understanding, chunks: list[tuple[Any, int]], complete: bool) -> None:
    clock = ChunkClock(x.stream_timing, len(x.response_body))
    resp: dict[str, Any] = {}
    cands: dict[int, dict[str, Any]] = {}
    first_ms = last_ms = None
    notes: list[str] = []
    error: Any = None
    for obj, end in chunks:
        u.chunk_count += 1
        if isinstance(obj, ValueError):
            notes.append(str(obj))
            continue
        if not isinstance(obj, dict):
            continue
        if "error" in obj:
            error = obj["error"]
            err = as_dict(error)
            notes.append(f"stream error: {err.get('status') or err.get('code') or ''}: {as_str(err.get('message'))}")
            continue
        content = False
        for key, value in obj.items():
            if key == "candidates":
                for c in as_list(value):
                    if isinstance(c, dict):
                        content |= _merge_candidate(cands, c)
            elif value is not None:
                resp[key] = value
        if content:
            t = clock.at(end)
            first_ms = t if first_ms is None else first_ms
            last_ms = t

    u.parse_error = join_notes(u.parse_error, "; ".join(notes))
    if cands:
        resp["candidates"] = [cands[i] for i in sorted(cands)]
    finished = bool(cands) and all(c.get("finishReason") for c in cands.values())
    blocked = bool(as_dict(resp.get("promptFeedback")).get("blockReason"))
    u.incomplete = not complete or error is not None or not (finished or blocked)
    if error is not None:
        resp["error"] = error  # the stream ended on an error: keep it with what arrived
    if not resp:
        return
    u.response = resp
    _read_gcr(resp, u)
    u.ttft_ms = first_ms
    u.tokens_per_second = tokens_per_second(u.output_tokens, first_ms, last_ms)


def _merge_candidate(cands: dict[int, dict[str, Any]], c: dict[str, Any]) -> bool:
    """Fold one streamed candidate in; True when it carried content."""
    idx = as_index(c.get("index"))
    merged = cands.setdefault(0 if idx is None else idx, {})
    content = False
    for key, value in c.items():
        if key != "content" or not isinstance(value, dict):
            merged[key] = value
            continue
        target = merged.get("content")
        if not isinstance(target, dict):
            target = merged["content"] = {}
        for ckey, cvalue in value.items():
            if ckey != "parts":
                target[ckey] = cvalue
                continue
            parts = target.setdefault("parts", [])
            for p in as_list(cvalue):
                content |= _merge_part(parts, p)
    return content


def _merge_part(parts: list[Any], p: Any) -> bool:
    if not isinstance(p, dict):
        parts.append(p)
        return False
    prev = parts[-1] if parts else None
    if (
        isinstance(prev, dict)
        and "text" in p
        and "text" in prev
        and p.keys() <= _TEXT_KEYS
        and prev.keys() <= _TEXT_KEYS
        and bool(p.get("thought")) == bool(prev.get("thought"))
        and "thoughtSignature" not in prev  # a signature closes its part
    ):
        prev["text"] = as_str(prev.get("text")) + as_str(p.get("text"))
        if "thoughtSignature" in p:
            prev["thoughtSignature"] = p["thoughtSignature"]
    else:
        parts.append(dict(p))
    return bool(p.get("text")) or not p.keys() <= _TEXT_KEYS


def _read_gcr(resp: Any, u: Understanding) -> None:
    if not isinstance(resp, dict):
        raise ValueError("body is not a JSON object")
    u.response_model = as_str(resp.get("modelVersion"))
    u.response_id = as_str(resp.get("responseId"))
    cands = [c for c in as_list(resp.get("candidates")) if isinstance(c, dict)]
    first = cands[0] if cands else {}
    texts: list[str] = []
    for p in as_list(as_dict(first.get("content")).get("parts")):
        if not isinstance(p, dict):
            continue
        fc = _get(p, "functionCall", "function_call")
        if isinstance(fc, dict):
            u.output_tool_calls.append(_call(fc))
        elif "text" in p and p.get("thought") is not True:
            texts.append(as_str(p.get("text")))
    u.output_text = "".join(texts)
    feedback = as_dict(resp.get("promptFeedback"))
    u.finish_reason = as_str(first.get("finishReason")) or as_str(feedback.get("blockReason"))

    usage = as_dict(resp.get("usageMetadata"))
    u.input_tokens = _sum(usage.get("promptTokenCount"), usage.get("toolUsePromptTokenCount"))
    u.output_tokens = _sum(usage.get("candidatesTokenCount"), usage.get("thoughtsTokenCount"))
    u.cached_tokens = as_count(usage.get("cachedContentTokenCount"))
    u.reasoning_tokens = as_count(usage.get("thoughtsTokenCount"))
    u.cost_usd = pricing.cost_usd(
        PROVIDER, u.response_model or u.model, u.input_tokens, u.output_tokens, u.cached_tokens
    )


# -- helpers ---------------------------------------------------------------------------


def _get(d: dict[str, Any], camel: str, snake: str | None = None) -> Any:
    return d[camel] if camel in d else d.get(snake) if snake else None


def _sum(*values: Any) -> int | None:
    counts = [c for c in map(as_count, values) if c is not None]
    return sum(counts) if counts else None
