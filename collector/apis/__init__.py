"""Understanding LLM API traffic: detect the API, normalize the conversation,
reassemble streams, read usage and cost.

Everything here is pure and runs off the request path, on a spooled capture record.
``understand(exchange)`` never raises: a body that does not parse yields
``api='unknown'`` (or the detected api) and a ``parse_error`` note.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable

from prompttap.collector.apis.base import Exchange, Understanding

# (api, module, function, path pattern); first match wins. Paths are upstream-relative,
# so they match whether or not the app used a route prefix.
_ROUTES: tuple[tuple[str, str, str, re.Pattern[str]], ...] = tuple(
    (api, mod, fn, re.compile(pattern))
    for api, mod, fn, pattern in (
        ("openai.chat", "openai_chat", "understand_chat", r"/chat/completions$"),
        ("openai.responses", "openai_responses", "understand_responses", r"/responses$"),
        ("openai.completions", "openai_chat", "understand_completions", r"(^|/)v1/completions$|^/completions$"),
        ("openai.embeddings", "openai", "understand_embeddings", r"/embeddings$(?<!/api/embeddings)"),
        ("openai.models", "openai", "understand_models", r"/models(/[^/:]+)?$"),
        ("anthropic.messages", "anthropic", "understand_messages", r"/messages$"),
        ("ollama.chat", "ollama", "understand_chat", r"/api/chat$"),
        ("ollama.generate", "ollama", "understand_generate", r"/api/generate$"),
        ("ollama.embed", "ollama", "understand_embed", r"/api/embed(dings)?$"),
        ("gemini.generate", "gemini", "understand_generate", r"/models/[^/]+:(stream)?[gG]enerateContent$"),
    )
)


def detect(path: str) -> tuple[str, Callable[[Exchange], Understanding] | None]:
    """The api id for a request path and the function that understands it."""
    for api, mod, fn, pattern in _ROUTES:
        if pattern.search(path):
            try:
                module = importlib.import_module(f"prompttap.collector.apis.{mod}")
            except ImportError:
                return api, None
            return api, getattr(module, fn, None)
    return "unknown", None


def understand(x: Exchange) -> Understanding:
    """Normalize one exchange; never raises."""
    api, fn = detect(x.path)
    if fn is None:
        return Understanding(api=api)
    try:
        result = fn(x)
    except Exception as exc:
        return Understanding(api=api, parse_error=f"parser failed: {type(exc).__name__}: {exc}"[:500])
    if not result.api or result.api == "unknown":
        result.api = api
    return result
