"""Loosely typed JSON values read as types, and written as JSON text that never fails.

Capture rows come from the enricher (JSON columns as Python objects) or from the store (JSON
columns as text), and their contents are whatever a client sent; a value of the wrong type
reads as absent rather than failing what is built from it (a span, an export line).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson


def as_str(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else str(value)


def as_json(value: Any) -> Any:
    """A JSON column's value: rows from the enricher hold objects, rows from the store text."""
    if isinstance(value, str):
        if not value:
            return None
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def as_dicts(value: Any) -> list[dict[str, Any]]:
    value = as_json(value)
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def as_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def first_of(params: dict[str, Any], keys: tuple[str, ...], convert: Callable[[Any], Any]) -> Any:
    """The first of ``keys`` in ``params`` whose value ``convert`` accepts (not None)."""
    for key in keys:
        if key in params:
            value = convert(params[key])
            if value is not None:
                return value
    return None


def dumps(value: Any) -> str:
    """Compact JSON text that OTLP's UTF-8 strings can carry."""
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # lone surrogates, or an int too big for orjson: the slow, forgiving way
        return _clean(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str))


def _clean(text: str) -> str:
    # Lone surrogates (a client cut an emoji in half) cannot be encoded as OTLP's UTF-8 strings.
    if text.isascii():
        return text
    return text.encode("utf-8", "replace").decode("utf-8")
