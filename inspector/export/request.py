"""Export requests: the parameters of ``prompttap export`` and ``/api/export`` (the CLI
flags' names, with underscores) as a ``Selection`` and ``Options``."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping
from typing import Any

from prompttap.inspector.export.select import Options, Selection

FORMATS: tuple[str, ...] = ("openai-chat", "anthropic", "sharegpt", "parquet", "langfuse")
JSONL_FORMATS = frozenset({"openai-chat", "anthropic", "sharegpt", "langfuse"})
PARTS = ("train", "validation")


class ExportError(ValueError):
    """A bad export request; the message is shown to the user as is."""


def parse_when(value: str, now: dt.datetime | None = None) -> dt.datetime:
    """An ISO 8601 time (UTC unless it says otherwise) or an age: ``30m``, ``24h``, ``7d``, ``2w``."""
    text = value.strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", text)
    if m:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
        return (now or dt.datetime.now(dt.UTC)) - dt.timedelta(seconds=float(m.group(1)) * unit)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ExportError(f"not a time: {value!r} (use ISO 8601 like 2026-01-31T12:00, or an age: 24h, 7d)") from None
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


def parse_request(params: Mapping[str, Any]) -> tuple[Selection, Options]:
    """Selection and options from query parameters or a JSON body (same names as the CLI
    flags, with underscores). Raises ExportError with a one-line reason."""

    def text(name: str) -> str | None:
        value = params.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, list | tuple):
            value = value[-1]
        return str(value)

    def flag(name: str, default: bool) -> bool:
        value = params.get(name)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return value
        lowered = str(value).strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ExportError(f"{name} must be true or false, got {value!r}")

    def integer(name: str) -> int | None:
        value = text(name)
        if value is None:
            return None
        try:
            number = int(value)
        except ValueError:
            raise ExportError(f"{name} must be an integer, got {value!r}") from None
        if number < 0:
            raise ExportError(f"{name} must not be negative")
        return number

    fmt = text("format") or "openai-chat"
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    outcome = text("outcome")
    outcomes: tuple[str, ...] | None = ("ok",)
    if outcome is not None:
        outcomes = None if outcome == "any" else tuple(o.strip() for o in outcome.split(",") if o.strip())
    ids_raw = params.get("ids") or ()
    if isinstance(ids_raw, str):
        ids_raw = [ids_raw]
    ids: list[str] = []
    for chunk in ids_raw:
        for item in str(chunk).replace(",", " ").split():
            try:
                ids.append(str(uuid.UUID(item)))
            except ValueError:
                raise ExportError(f"not a capture id: {item!r}") from None
    split = text("split")
    split_value: float | None = None
    if split is not None:
        try:
            split_value = float(split)
        except ValueError:
            raise ExportError(f"split must be a fraction like 0.9, got {split!r}") from None
        if not 0 < split_value < 1:
            raise ExportError("split must be between 0 and 1 (the share of threads in the train file)")
    part = text("part")
    if part is not None and (part not in PARTS or split_value is None):
        raise ExportError("part must be train or validation, together with split")
    since, until = text("since"), text("until")
    selection = Selection(
        since=parse_when(since) if since else None,
        until=parse_when(until) if until else None,
        route=text("route"),
        model=text("model"),
        api=text("api"),
        status=integer("status"),
        outcomes=outcomes,
        template=text("template"),
        thread=text("thread"),
        session=text("session"),
        user=text("user"),
        tag=text("tag"),
        min_output_tokens=integer("min_output_tokens"),
        ids=tuple(ids),
        complete_only=not flag("include_incomplete", False),
        per_capture=flag("per_capture", False),
        dedupe=flag("dedupe", True),
    )
    dataset = text("dataset") or ""
    options = Options(format=fmt, redact=flag("redact", False), split=split_value, part=part, dataset=dataset)
    return selection, options
