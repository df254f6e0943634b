"""Prompt templates, the scalar masks: dates, times, numbers, ids, emails and URLs outside the
variable spans become ``{{kind}}`` placeholders (``schemas/threads-and-templates.md`` §3).
"""

from __future__ import annotations

import re

_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
    r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\b\.?"
)
_WEEKDAY = (
    r"(?:Mon(?:day)?|Tue(?:s(?:day)?)?|Wed(?:nesday)?|Thu(?:r(?:s(?:day)?)?)?|Fri(?:day)?|Sat(?:urday)?"
    r"|Sun(?:day)?)\b\.?"
)
_ORD = r"(?:st|nd|rd|th)?"
_AMPM = r"(?:[AaPp]\.[Mm]\.|[AaPp][Mm]\b)"  # "p.m." keeps its dots; "PM." leaves the full stop
_TZ = r"(?:\s?(?:UTC|GMT)(?:[+-]\d{1,2}(?::?\d{2})?)?|\s?[A-Z]{2,4}T\b|Z\b|[+-]\d{2}:?\d{2}\b)?"
_SCALARS = re.compile(
    "|".join(
        (
            r"(?P<keep>(?m:^)[ \t]*\d{1,3}[.)](?=\s))",  # list ordinals stay: they are layout
            r"(?P<url>\b(?:https?|ftp|wss?)://[^\s<>\"'`)\]]*[^\s<>\"'`)\].,;:!?])",
            r"(?P<email>\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b)",
            r"(?P<uuid>\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b)",
            rf"(?P<datetime>\b\d{{4}}-\d{{2}}-\d{{2}}[T ]\d{{2}}:\d{{2}}(?::\d{{2}}(?:[.,]\d+)?)?{_TZ})",
            rf"(?P<date>(?i:\b(?:{_WEEKDAY},?\s+)?(?:{_MONTH}\s+\d{{1,2}}{_ORD}\b(?:,?\s+\d{{4}}\b)?"
            rf"|\d{{1,2}}{_ORD}\s+(?:of\s+)?{_MONTH}(?:,?\s+\d{{4}}\b)?|{_MONTH}\s+\d{{4}}\b))"
            r"|\b\d{4}-\d{1,2}-\d{1,2}\b|\b\d{4}/\d{1,2}/\d{1,2}\b|\b\d{1,2}/\d{1,2}/(?:\d{4}|\d{2})\b"
            r"|\b\d{1,2}\.\d{1,2}\.\d{4}\b|\b\d{1,2}-\d{1,2}-\d{4}\b)",
            rf"(?P<time>\b\d{{1,2}}:\d{{2}}(?::\d{{2}}(?:[.,]\d+)?)?(?:\s?{_AMPM})?{_TZ}|\b\d{{1,2}}\s?{_AMPM})",
            r"(?P<hex>\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{16,}\b)",
            r"(?P<number>(?<![\w.])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)*(?![\w]))",
        )
    )
)


def mask_scalars(segment: str, variables: list[tuple[str, str]]) -> str:
    def sub(m: re.Match[str]) -> str:
        kind = m.lastgroup or ""
        if kind == "keep":
            return m.group(0)
        variables.append((kind, m.group(0)))
        return "{{" + kind + "}}"

    return _SCALARS.sub(sub, segment)
