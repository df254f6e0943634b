"""Attribute values that say something, within bounds: empty values left out, every string at
most ``MAX_ATTR_BYTES``, lists and their items capped, and JSON content shortened so it stays
valid JSON where possible."""

from __future__ import annotations

from typing import Any

from prompttap.schemas.spans.model import AttrValue
from prompttap.schemas.values import dumps

MAX_ATTR_BYTES = 64 * 1024  # per string attribute; OTLP receivers and Langfuse cope with this
MAX_LIST_ITEMS = 128
MAX_ITEM_BYTES = 1024  # per element of a string-list attribute (tags, stop sequences)
TRUNCATION_MARK = "…[truncated by prompttap]"


def put(a: dict[str, Any], key: str, value: Any) -> None:
    """Set an attribute unless it is empty: absent beats a misleading ''/0-length value."""
    if value is None or value == "" or (isinstance(value, list) and not value):
        return
    a[key] = value


def clip(text: str, limit: int = MAX_ATTR_BYTES) -> str:
    """``text`` within ``limit`` UTF-8 bytes, marked when it was cut."""
    if text.isascii():  # the common case: one byte per character, nothing to clean
        if len(text) <= limit:
            return text
        data = text.encode("ascii")
    else:
        data = text.encode("utf-8", "replace")
        if len(data) <= limit:
            return data.decode("utf-8")
    keep = limit - len(TRUNCATION_MARK.encode("utf-8"))
    return data[: max(0, keep)].decode("utf-8", "ignore") + TRUNCATION_MARK


def _cap_strings(value: Any, cap: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= cap else value[:cap] + TRUNCATION_MARK
    if isinstance(value, list):
        return [_cap_strings(v, cap) for v in value]
    if isinstance(value, dict):
        return {k: _cap_strings(v, cap) for k, v in value.items()}
    return value


def bounded_json(value: Any, limit: int = MAX_ATTR_BYTES) -> tuple[str, bool]:
    """JSON text within ``limit`` bytes, still valid JSON where possible; (text, was_cut).

    Long strings are shortened first (keeping every message), then the oldest list items
    are dropped (the latest turn matters most); only then is the text itself cut.
    """
    text = dumps(value)
    if len(text.encode("utf-8")) <= limit:
        return text, False
    for cap in (8192, 2048, 512, 128):
        text = dumps(_cap_strings(value, cap))
        if len(text.encode("utf-8")) <= limit:
            return text, True
    if isinstance(value, list):
        items = _cap_strings(value, 128)
        lo, hi = 1, len(items)  # smallest number of leading items to drop so the rest fits
        while lo < hi:
            mid = (lo + hi) // 2
            if len(dumps(items[mid:]).encode("utf-8")) <= limit:
                hi = mid
            else:
                lo = mid + 1
        text = dumps(items[lo:])
        if len(text.encode("utf-8")) <= limit:
            return text, True
    return clip(text, limit), True


def bound(a: dict[str, Any], truncated: list[str]) -> dict[str, AttrValue]:
    """Every attribute within bounds; keys of strings that had to be cut are added to ``truncated``."""
    out: dict[str, AttrValue] = {}
    for key, value in a.items():
        if isinstance(value, str):
            clipped = clip(value)
            if clipped != value and key not in truncated and len(value.encode("utf-8", "replace")) > MAX_ATTR_BYTES:
                truncated.append(key)
            out[key] = clipped
        elif isinstance(value, list):
            items = value[:MAX_LIST_ITEMS]
            out[key] = [clip(v, MAX_ITEM_BYTES) if isinstance(v, str) else v for v in items]
        else:
            out[key] = value
    return out
