"""Typed reads of a capture row's loosely typed values, and setting an attribute only when it says something.

Rows come from the enricher (JSON columns as Python objects) or from the store (JSON columns
as text); a value of the wrong type reads as absent rather than failing the span.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def put(a: dict[str, Any], key: str, value: Any) -> None:
    """Set an attribute unless it is empty: absent beats a misleading ''/0-length value."""
    if value is None or value == "" or (isinstance(value, list) and not value):
        return
    a[key] = value


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
