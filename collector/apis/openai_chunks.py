"""Rebuild the object a non-streaming chat or legacy completions call returns from its
stream chunks.

Chunk-only fields (``object``, ``obfuscation``) are dropped and nothing that did not arrive
is filled in: a cut stream keeps ``finish_reason`` None and ``usage`` None.
"""

from __future__ import annotations

from typing import Any

from prompttap.collector.apis.base import as_dict, as_index, as_list, as_str
from prompttap.collector.apis.openai_content import args_text

_CHUNK_ONLY = frozenset({"object", "choices", "usage", "obfuscation"})


def rebuild(chunks: list[dict[str, Any]], object_name: str, choice_type: type[Choice]) -> dict[str, Any]:
    """The non-streaming response object from its chunks.

    Top-level fields: first non-null value (they repeat in every chunk), an object gaining the
    keys later chunks add to it (Groq's ``x_groq`` gets its ``usage`` on the last chunk);
    ``usage`` from the last chunk that has one (the include_usage chunk); choices merged by index.
    """
    top: dict[str, Any] = {}
    usage = None
    choices: dict[int, Choice] = {}
    for chunk in chunks:
        for key, value in chunk.items():
            if key in _CHUNK_ONLY:
                continue
            prev = top.get(key)
            if prev is None:
                top[key] = value
            elif isinstance(prev, dict) and isinstance(value, dict):
                top[key] = {**value, **prev}
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


class Choice:
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


class ChatChoice(Choice):
    """A chat choice: ``delta`` fields merged into ``message``, tool calls by index."""

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
            acc["arguments"] += args_text(fn["arguments"])

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


class TextChoice(Choice):
    """A legacy completions choice: ``text`` concatenated."""

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
