"""The demo's OpenAI and Anthropic clients: the official ``openai``/``anthropic`` SDKs when installed,
the same wire shapes over httpx when not (the SDKs are dev extras; the demo works with the base install).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import httpx


def merge_chunks(chunks: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The assistant message of a chat completions stream (content and tool-call deltas merged by index)."""
    message: dict[str, Any] = {"role": "assistant", "content": "", "tool_calls": []}
    for chunk in chunks:
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            message["content"] += delta.get("content") or ""
            for call in delta.get("tool_calls") or []:
                while len(message["tool_calls"]) <= call["index"]:
                    message["tool_calls"].append(
                        {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
                    )
                merged = message["tool_calls"][call["index"]]
                merged["id"] = call.get("id") or merged["id"]
                for k in ("name", "arguments"):
                    merged["function"][k] += (call.get("function") or {}).get(k) or ""
    return message


def sse_data(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if line.startswith("data:") and line[5:].strip() != "[DONE]":
            yield json.loads(line[5:])


class OpenAIChat:
    """``chat.completions.create`` -> (status, assistant message), with the SDK or over httpx."""

    def __init__(self, base_url: str, key: str, http: httpx.Client) -> None:
        self.base_url, self.key, self.http = base_url, key, http
        try:
            import openai

            own = openai.DefaultHttpxClient(trust_env=False, timeout=60)  # the SDK's own httpx flavour
            self.sdk: Any = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, http_client=own)
            self.errors: tuple[type[Exception], ...] = (openai.APIStatusError,)
        except ImportError:
            self.sdk, self.errors = None, ()

    def create(self, **body: Any) -> tuple[int, dict[str, Any]]:
        if self.sdk is not None:
            try:
                if body.get("stream"):
                    return 200, merge_chunks(c.model_dump() for c in self.sdk.chat.completions.create(**body))
                return 200, self.sdk.chat.completions.create(**body).model_dump()["choices"][0]["message"]
            except self.errors as exc:
                return exc.status_code, {}  # type: ignore[attr-defined]
        headers = {"authorization": f"Bearer {self.key}"}
        with self.http.stream("POST", f"{self.base_url}/chat/completions", json=body, headers=headers) as resp:
            if resp.status_code >= 400 or not body.get("stream"):
                resp.read()
                return resp.status_code, {} if resp.status_code >= 400 else resp.json()["choices"][0]["message"]
            return 200, merge_chunks(sse_data(resp.iter_lines()))


class AnthropicChat:
    """``messages.create`` -> (status, answer text), with the SDK or over httpx."""

    def __init__(self, base_url: str, key: str, http: httpx.Client) -> None:
        self.base_url, self.key, self.http = base_url, key, http
        try:
            import anthropic

            own = anthropic.DefaultHttpxClient(trust_env=False, timeout=60)  # the SDK's own httpx flavour
            self.sdk: Any = anthropic.Anthropic(base_url=base_url, api_key=key, max_retries=0, http_client=own)
        except ImportError:
            self.sdk = None

    def create(self, **body: Any) -> tuple[int, str]:
        if self.sdk is not None:
            if body.get("stream"):
                return 200, _anthropic_text(e.model_dump() for e in self.sdk.messages.create(**body))
            return 200, _anthropic_text([self.sdk.messages.create(**body).model_dump()])
        headers = {"x-api-key": self.key, "anthropic-version": "2023-06-01"}
        with self.http.stream("POST", f"{self.base_url}/v1/messages", json=body, headers=headers) as resp:
            if resp.status_code >= 400 or not body.get("stream"):
                resp.read()
                return resp.status_code, "" if resp.status_code >= 400 else _anthropic_text([resp.json()])
            return 200, _anthropic_text(sse_data(resp.iter_lines()))


def _anthropic_text(events: Iterable[dict[str, Any]]) -> str:
    """The text of a message, or of a stream's text deltas."""
    out = []
    for e in events:
        if e.get("type") == "message":
            out += [b.get("text", "") for b in e.get("content") or [] if b.get("type") == "text"]
        elif e.get("type") == "content_block_delta" and (e.get("delta") or {}).get("type") == "text_delta":
            out.append(e["delta"]["text"])
    return "".join(out)
