"""What the inspector's reads filter and page by: the filter, the keyset cursor, the time values.

A filter chooses among fixed SQL fragments; its values travel as ClickHouse query parameters.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

# The full-text index expression of migration 0003, verbatim: ClickHouse only uses a skip index
# when the query repeats its expression exactly.
SEARCH_EXPR = (
    r"lowerUTF8(concat(system_prompt, ' ', replaceRegexpAll(concat(messages, ' ', output_tool_calls), "
    r"'\\\\(?:u[0-9a-fA-F]{4}|.)|data:[a-zA-Z0-9.+/-]+\x3Bbase64,[A-Za-z0-9+/=]*', ' '), ' ', output_text))"
)
# The start of the last user message, for the list; parsed from `messages` only for the rows shown.
LAST_USER_EXPR = (
    "leftUTF8(JSONExtractString(arrayLast(m -> JSONExtractString(m, 'role') = 'user', "
    "JSONExtractArrayRaw(messages)), 'content'), 240)"
)
# A word is what splitByNonAlpha keeps: ASCII letters/digits and any non-ASCII character.
_WORD = re.compile(r"[0-9A-Za-z\u0080-\U0010ffff]")
# A live tail looks this far back in started_at for rows recorded since its cursor (a long stream
# is recorded long after it started); the bound keeps the read to the newest parts.
TAIL_WINDOW_HOURS = 6
# Full scans under FINAL skip merging across partitions: the partition key (toYYYYMM(started_at)) is a
# function of the sorting key, so two versions of a capture always share a partition. chDB's automatic
# decision does not take this; forcing it saves ~25% of a scan.
FINAL_SETTINGS = "SETTINGS do_not_merge_across_partitions_select_final = 1"


@dataclass(frozen=True, slots=True)
class CaptureFilter:
    route: str | None = None
    model: str | None = None
    status: int | None = None
    outcome: str | None = None
    api: str | None = None
    thread: str | None = None
    session: str | None = None
    template: str | None = None
    user: str | None = None
    tag: str | None = None
    q: str | None = None  # full-text: every word must occur in the prompt or the output
    since: datetime | None = None  # started_at >= since
    until: datetime | None = None  # started_at < until

    def where(self) -> tuple[str, dict[str, Any]]:
        clauses, params = self.conditions()
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def conditions(self) -> tuple[list[str], dict[str, Any]]:
        clauses: list[str] = []
        params: dict[str, Any] = {}
        for field_name, column, ch_type in (
            ("route", "route", "String"),
            ("model", "model", "String"),
            ("status", "status_code", "UInt16"),
            ("outcome", "outcome", "String"),
            ("api", "api", "String"),
            ("thread", "thread_id", "String"),
            ("session", "session_id", "String"),
            ("template", "prompt_template_id", "String"),
            ("user", "user_id", "String"),
        ):
            value = getattr(self, field_name)
            if value is not None and value != "":
                clauses.append(f"{column} = {{{field_name}:{ch_type}}}")
                params[field_name] = value
        if self.tag:
            clauses.append("has(tags, {tag:String})")
            params["tag"] = self.tag
        if self.q and _WORD.search(self.q):
            clauses.append(f"hasAllTokens({SEARCH_EXPR}, tokens(lowerUTF8({{q:String}}), 'splitByNonAlpha'))")
            params["q"] = self.q
        if self.since is not None:
            clauses.append("started_at >= {since:DateTime64(6, 'UTC')}")
            params["since"] = ch_time(self.since)
        if self.until is not None:
            clauses.append("started_at < {until:DateTime64(6, 'UTC')}")
            params["until"] = ch_time(self.until)
        return clauses, params

    def as_params(self) -> dict[str, str]:
        """The filter as query-string values (for links that keep the current filters)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or value == "":
                continue
            out[f.name] = value.isoformat() if isinstance(value, datetime) else str(value)
        return out


@dataclass(frozen=True, slots=True)
class Cursor:
    """A keyset position: (started_at, id) of the last row seen."""

    started_at: datetime
    id: uuid.UUID

    @classmethod
    def parse(cls, text: str) -> Cursor:
        ts, sep, cid = text.rpartition(",")
        if not sep:
            raise ValueError("cursor must be <started_at>,<id>")
        return cls(parse_time(ts), uuid.UUID(cid.strip()))

    def __str__(self) -> str:
        return f"{self.started_at.isoformat()},{self.id}"


def parse_time(text: str) -> datetime:
    """An ISO 8601 instant (naive means UTC)."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace(" ", "T", 1))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def ch_time(value: datetime) -> str:
    """A DateTime64(6, 'UTC') parameter value."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


def cursor_of(row: dict[str, Any]) -> str:
    return str(Cursor(parse_time(row["started_at"]), uuid.UUID(row["id"])))
