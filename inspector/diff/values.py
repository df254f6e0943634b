"""How the diff reads a capture row's loosely typed fields, and how it writes values as text.

A row comes from ``inspector.queries.get_capture`` (JSON columns parsed), or is a partial dict
in tests; any field may be missing or of an unexpected type, so every read goes through here.
"""

from __future__ import annotations

import json
from typing import Any


def as_str(v: Any) -> str:
    return "" if v is None else v if isinstance(v, str) else str(v)


def dicts(v: Any) -> list[dict[str, Any]]:
    """The dict items of a list field (messages, tools, tool calls); anything else is dropped."""
    return [x for x in v if isinstance(x, dict)] if isinstance(v, list) else []


def as_dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def to_json(v: Any) -> str:
    """Canonical JSON text (sorted keys): two equal values give the same text."""
    return json.dumps(v, ensure_ascii=False, sort_keys=True, default=str)


def pretty(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False, indent=2, sort_keys=True, default=str)


def parse_args(v: Any) -> Any:
    """Tool-call arguments as a value when they are JSON text, else unchanged."""
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def canonical_args(v: Any) -> str:
    return to_json(parse_args(v))


def show(v: str | None) -> str:
    """A JSON value as a sentence shows it: strings without quotes, ``(unset)`` for None."""
    if v is None:
        return "(unset)"
    return v[1:-1] if len(v) >= 2 and v[0] == v[-1] == '"' else v


def plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"


def clip(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
