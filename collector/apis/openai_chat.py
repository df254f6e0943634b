"""OpenAI Chat Completions (``/chat/completions``) and legacy Completions (``/v1/completions``):
the two choice-list APIs, plain and streamed.

- System and developer messages go to ``system_prompt`` only, joined with a blank line;
  ``messages`` holds the user/assistant/tool turns.
- Legacy ``function`` role messages become role ``tool`` with ``name``.
- Legacy completions: one user message per prompt.
- With n > 1 the output columns describe choice 0; every choice stays in ``response``.
- Streams are rebuilt into the object the non-streaming API returns (``openai_chunks``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prompttap.collector.apis.base import Exchange, Understanding, as_dict, as_index, as_list, as_str, message
from prompttap.collector.apis.openai_chunks import ChatChoice, Choice, TextChoice, rebuild
from prompttap.collector.apis.openai_common import (
    cost,
    count,
    data_events,
    read_request,
    response_json,
    response_kind,
    run,
    time_stream,
)
from prompttap.collector.apis.openai_content import (
    input_messages,
    opt_str,
    settle,
    text_and_parts,
    tool_calls,
    tools,
)

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


def understand_chat(x: Exchange) -> Understanding:
    """``POST /v1/chat/completions`` (and any path ending in ``/chat/completions``)."""
    return run("openai.chat", x, _chat)


def understand_completions(x: Exchange) -> Understanding:
    """Legacy ``POST /v1/completions``: one user message per prompt."""
    return run("openai.completions", x, _completions)


def _chat(x: Exchange, u: Understanding, notes: list[str]) -> None:
    req = read_request(x, u, notes, CHAT_PARAMS)
    msgs = req.get("messages")
    if msgs is not None and not isinstance(msgs, list):
        notes.append("request: messages is not a list")
    u.system_prompt, u.messages = _chat_messages(as_list(msgs), notes)
    u.tools = tools(req.get("tools"), req.get("functions"))
    _choices_response(x, u, notes, "chat.completion", ChatChoice, _chat_output, _chat_has_content)
    cost(u)


def _completions(x: Exchange, u: Understanding, notes: list[str]) -> None:
    req = read_request(x, u, notes, COMPLETIONS_PARAMS)
    u.messages = input_messages(req.get("prompt"))
    _choices_response(x, u, notes, "text_completion", TextChoice, _text_output, _text_has_content)
    cost(u)


def _choices_response(
    x: Exchange,
    u: Understanding,
    notes: list[str],
    object_name: str,
    choice_type: type[Choice],
    output: Callable[[Understanding, dict[str, Any]], None],
    has_content: Callable[[Any], bool],
) -> None:
    """The response side of the two choice-list APIs.

    A JSON body is read with ``output``; a stream is rebuilt into the same object
    (``object_name``, choices merged by ``choice_type``) and timed from the first chunk
    ``has_content`` accepts.
    """
    kind = response_kind(x, u, notes)
    if kind == "json":
        resp = response_json(x, notes)
        if resp is not None:
            u.response = resp
            output(u, resp)
    elif kind == "sse":
        events, done = data_events(x, u, notes)
        chunks = [obj for _, obj, _ in events if isinstance(obj, dict)]
        if chunks:
            resp = rebuild(chunks, object_name, choice_type)
            u.response = resp
            output(u, resp)
            u.incomplete = not done or any(c.get("finish_reason") is None for c in resp["choices"])
        else:
            u.incomplete = not done
        time_stream(x, u, next((end for _, obj, end in events if has_content(obj)), None))
    elif kind == "none" and u.stream:
        u.incomplete = True


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
        text, parts = text_and_parts(content)
        if role in ("system", "developer"):
            if text:
                system.append(text)
            continue
        if isinstance(m.get("refusal"), str):
            parts.append({"type": "refusal", "text": m["refusal"]})
        audio = m.get("audio")
        if isinstance(audio, dict) and isinstance(audio.get("id"), str):  # a previous audio answer
            parts.append({"type": "audio", "id": audio["id"]})
        calls = tool_calls(m.get("tool_calls"), m.get("function_call"))
        if role == "function":  # legacy function result: identified by name only
            role = "tool"
        out.append(message(role, text, parts, calls, opt_str(m.get("tool_call_id")), opt_str(m.get("name"))))
    return "\n\n".join(system), settle(out)


def _chat_output(u: Understanding, resp: dict[str, Any]) -> None:
    u.response_id = as_str(resp.get("id"))
    u.response_model = as_str(resp.get("model"))
    choice = _first_choice(resp.get("choices"))
    msg = as_dict(choice.get("message"))
    u.output_text = text_and_parts(msg.get("content"))[0]
    u.output_tool_calls = tool_calls(msg.get("tool_calls"), msg.get("function_call"))
    u.finish_reason = as_str(choice.get("finish_reason"))
    _usage(u, resp)


def _text_output(u: Understanding, resp: dict[str, Any]) -> None:
    u.response_id = as_str(resp.get("id"))
    u.response_model = as_str(resp.get("model"))
    choice = _first_choice(resp.get("choices"))
    u.output_text = as_str(choice.get("text"))
    u.finish_reason = as_str(choice.get("finish_reason"))
    _usage(u, resp)


def _first_choice(choices: Any) -> dict[str, Any]:
    items = [c for c in as_list(choices) if isinstance(c, dict)]
    return next((c for c in items if as_index(c.get("index")) == 0), items[0] if items else {})


def _usage(u: Understanding, resp: dict[str, Any]) -> None:
    # Groq without stream_options reports a stream's usage only in ``x_groq.usage`` of the final chunk.
    usage = as_dict(resp.get("usage")) or as_dict(as_dict(resp.get("x_groq")).get("usage"))
    u.input_tokens = count(usage.get("prompt_tokens"))
    u.output_tokens = count(usage.get("completion_tokens"))
    u.cached_tokens = count(as_dict(usage.get("prompt_tokens_details")).get("cached_tokens"))
    u.reasoning_tokens = count(as_dict(usage.get("completion_tokens_details")).get("reasoning_tokens"))


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
