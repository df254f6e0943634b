"""Redaction: e-mail addresses, phone numbers, IP addresses and API-key-like secrets.

The same patterns serve twice: ``Redactor`` scrubs the JSONL formats' rows in Python, and
the ``sql_*`` functions build the ClickHouse expressions that redact the parquet export in
SQL (``redaction_counts`` counts what they replace, for the report).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from prompttap.inspector.export.select import SELECT_SETTINGS, Options, Selection, selection_sql

# Applied in this order (a key can hold digits that look like a phone number). Written for
# both Python's ``re`` (ASCII mode) and ClickHouse's RE2: no look-around, no back-references.
REDACTIONS: tuple[tuple[str, str, str], ...] = (
    (
        "secret",
        r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{20,}"
        r"|\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"
        r"|\bAKIA[0-9A-Z]{16}\b"
        r"|\bAIza[0-9A-Za-z_-]{35}"
        r"|\bgh[pousr]_[A-Za-z0-9]{36,}"
        r"|\bgithub_pat_[A-Za-z0-9_]{22,}"
        r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"
        r"|\bhf_[A-Za-z0-9]{30,}"
        r"|\bglpat-[A-Za-z0-9_-]{20,}"
        r"|\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"
        r"|(?i:bearer)[ \t]+[A-Za-z0-9._~+/=-]{20,}",
        "[SECRET]",
    ),
    ("email", r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}", "[EMAIL]"),
    (
        "ip",
        r"\b(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\b"
        r"|\b(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}\b"
        r"|\b(?:[0-9A-Fa-f]{1,4}:){1,6}:(?:[0-9A-Fa-f]{1,4}:){0,5}[0-9A-Fa-f]{1,4}\b",
        "[IP]",
    ),
    (
        "phone",
        r"(?:\+[0-9]{1,3}[ .-]?)?(?:\([0-9]{2,4}\)[ .-]?|\b[0-9]{2,4}[ .-])[0-9]{3,4}[ .-][0-9]{3,4}\b"
        r"|\+[0-9]{8,15}\b",
        "[PHONE]",
    ),
)
REDACTION_KINDS = tuple(kind for kind, _, _ in REDACTIONS)
_RULES = [(kind, re.compile(pattern, re.ASCII), token) for kind, pattern, token in REDACTIONS]

# JSON text (tool-call arguments) is redacted with its escapes swapped for control
# characters that no pattern matches (raw control characters cannot occur in JSON text),
# so ``\nbob@x.io`` loses the address and keeps a valid ``\n``.
_ESCAPES = (("\\\\", "\x05"), ('\\"', "\x04"), ("\\/", "\x06"), ("\\n", "\x01"), ("\\t", "\x02"), ("\\r", "\x03"))
_ESCAPES += (("\\b", "\x0e"), ("\\f", "\x0f"))
_UNICODE_ESCAPE = re.compile(r"\\u([0-9A-Fa-f]{4})")
_UNICODE_MARK = re.compile("\x07([0-9A-Fa-f]{4})\x07")


def protect_json(text: str) -> str:
    for escape, mark in _ESCAPES:
        text = text.replace(escape, mark)
    return _UNICODE_ESCAPE.sub("\x07\\1\x07", text)


def unprotect_json(text: str) -> str:
    text = _UNICODE_MARK.sub(r"\\u\1", text)
    for escape, mark in _ESCAPES:
        text = text.replace(mark, escape)
    return text


class Redactor:
    """Scrubs e-mail addresses, phone numbers, IP addresses and API-key-like secrets, and
    counts what it replaced per kind."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def text(self, value: str, count: bool = True) -> str:
        if not value:
            return value
        for kind, rx, token in _RULES:
            value, n = rx.subn(token, value)
            if n and count:
                self.counts[kind] += n
        return value

    def json_text(self, value: str, count: bool = True) -> str:
        if not value or ("\\" not in value):
            return self.text(value, count)
        return unprotect_json(self.text(protect_json(value), count))

    def row(self, row: dict[str, Any], identity: bool = False) -> None:
        """Redact a normalized row in place: instructions, message text, tool-call
        arguments, the answer (and the session/user labels when ``identity``)."""
        row["system_prompt"] = self.text(row["system_prompt"])
        for m in row["messages"]:
            if isinstance(m.get("content"), str):
                m["content"] = self.text(m["content"])
            for p in m.get("parts") or ():
                if isinstance(p, dict) and isinstance(p.get("text"), str):
                    # text parts repeat ``content``: scrub them, count them once
                    p["text"] = self.text(p["text"], count=p.get("type") != "text")
            self.calls(m.get("tool_calls") or ())
        row["output_text"] = self.text(row["output_text"])
        self.calls(row["output_tool_calls"])
        if identity:
            row["session_id"] = self.text(row["session_id"])
            row["user_id"] = self.text(row["user_id"])

    def calls(self, calls: Any) -> None:
        for c in calls:
            if isinstance(c, dict) and isinstance(c.get("arguments"), str):
                c["arguments"] = self.json_text(c["arguments"])


# ------------------------------------------------------------------------------------ in SQL


def sql_params(prefix: str) -> dict[str, str]:
    """The redaction patterns and tokens (and the JSON escape marks) as bound parameters for SQL."""
    params = {f"{prefix}{i}p": pattern for i, (_, pattern, _) in enumerate(REDACTIONS)}
    params.update({f"{prefix}{i}t": token for i, (_, _, token) in enumerate(REDACTIONS)})
    params.update({f"{prefix}e{i}": escape for i, (escape, _) in enumerate(_ESCAPES)})
    params.update({f"{prefix}m{i}": mark for i, (_, mark) in enumerate(_ESCAPES)})
    params.update({f"{prefix}ue": r"\\u([0-9A-Fa-f]{4})", f"{prefix}um": "\x07([0-9A-Fa-f]{4})\x07"})
    params.update({f"{prefix}ur": "\x07\\1\x07", f"{prefix}uu": "\\\\u\\1"})
    return params


def sql_redact(expr: str, p: str = "r") -> str:
    """``expr`` with every redaction applied, in SQL (parameters from ``sql_params(p)``)."""
    for i in range(len(REDACTIONS)):
        expr = f"replaceRegexpAll({expr}, {{{p}{i}p:String}}, {{{p}{i}t:String}})"
    return expr


def _sql_protect(expr: str, p: str = "r") -> str:
    for i in range(len(_ESCAPES)):
        expr = f"replaceAll({expr}, {{{p}e{i}:String}}, {{{p}m{i}:String}})"
    return f"replaceRegexpAll({expr}, {{{p}ue:String}}, {{{p}ur:String}})"


def _sql_unprotect(expr: str, p: str = "r") -> str:
    expr = f"replaceRegexpAll({expr}, {{{p}um:String}}, {{{p}uu:String}})"
    for i in range(len(_ESCAPES)):
        expr = f"replaceAll({expr}, {{{p}m{i}:String}}, {{{p}e{i}:String}})"
    return expr


def sql_redact_json(expr: str) -> str:
    """``sql_redact`` for JSON text: its escapes protected as ``Redactor.json_text`` does."""
    return _sql_unprotect(sql_redact(_sql_protect(expr)))


def redaction_counts(
    client: Any, sel: Selection, opts: Options, settings: dict[str, Any] | None = None
) -> Counter[str]:
    """What the parquet export's SQL redaction replaces, per kind (counted the way
    ``Redactor.row(identity=True)`` counts)."""
    msgs = "JSONExtractArrayRaw(messages)"
    arguments = _sql_protect("JSONExtractString(c, 'arguments')")
    texts = (
        "arrayConcat([system_prompt, output_text, session_id, user_id], "
        f"arrayMap(m -> JSONExtractString(m, 'content'), {msgs}), "
        "arrayFlatten(arrayMap(m -> arrayMap(q -> JSONExtractString(q, 'text'), arrayFilter(q -> "
        f"JSONExtractString(q, 'type') != 'text', JSONExtractArrayRaw(m, 'parts'))), {msgs})), "
        f"arrayFlatten(arrayMap(m -> arrayMap(c -> {arguments}, JSONExtractArrayRaw(m, 'tool_calls')), {msgs})), "
        f"arrayMap(c -> {arguments}, JSONExtractArrayRaw(output_tool_calls)))"
    )
    steps = [f"arrayStringConcat({texts}, '\\0') AS t0"]
    sums = []
    for i in range(len(REDACTIONS)):
        steps.append(f"replaceRegexpAll(t{i}, {{r{i}p:String}}, {{r{i}t:String}}) AS t{i + 1}")
        sums.append(f"sum(countMatches(t{i}, {{r{i}p:String}}))")
    inner, params = selection_sql(sel, opts, ", ".join(steps))
    params.update(sql_params("r"))
    settings = {**SELECT_SETTINGS, **(settings or {})}
    row = client.query(f"SELECT {', '.join(sums)} FROM ({inner})", parameters=params, settings=settings).result_rows[0]
    return Counter({kind: int(n) for kind, n in zip(REDACTION_KINDS, row, strict=True) if n})
