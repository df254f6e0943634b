"""Reads of captures grouped: a thread's captures, prompt templates and their members."""

from __future__ import annotations

from typing import Any

from prompttap.inspector.queries.filters import FINAL_SETTINGS, CaptureFilter, ch_time, parse_time
from prompttap.inspector.queries.rows import decoded_rows

THREAD_COLUMNS = (
    "id",
    "started_at",
    "route",
    "api",
    "model",
    "status_code",
    "outcome",
    "duration_ms",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "prompt_template_id",
    "system_prompt",
    "messages",
    "output_text",
    "output_tool_calls",
)


def thread_captures(client: Any, thread_id: str, limit: int = 500) -> list[dict[str, Any]]:
    result = client.query(
        f"SELECT {', '.join(THREAD_COLUMNS)} FROM captures FINAL WHERE thread_id = {{t:String}} "
        "ORDER BY started_at, id LIMIT {limit:UInt32}",
        parameters={"t": thread_id, "limit": limit},
    )
    return decoded_rows(result)


def template_groups(client: Any, flt: CaptureFilter, limit: int = 200) -> list[dict[str, Any]]:
    clauses, params = flt.conditions()
    clauses.append("prompt_template_id != ''")
    # The newest member's prompt is read afterwards by primary key: argMax(system_prompt, ...) here
    # would decompress every system prompt in the store (0.7 s at a million captures). Threads are
    # counted on 64-bit hashes (exact but for collisions; 2.5x cheaper than on the strings).
    sql = (
        "SELECT prompt_template_id, count() AS captures, groupUniqArray(20)(route) AS routes, "
        "groupUniqArray(20)(model) AS models, min(started_at) AS first_seen, max(started_at) AS last_seen, "
        "uniqExact(cityHash64(thread_id)) AS threads, argMax(id, started_at) AS sample_id "
        f"FROM captures FINAL WHERE {' AND '.join(clauses)} "
        f"GROUP BY prompt_template_id ORDER BY last_seen DESC LIMIT {{limit:UInt32}} {FINAL_SETTINGS}"
    )
    groups = decoded_rows(client.query(sql, parameters={**params, "limit": limit}))
    prompts = _prompts_by_key(client, [(g["last_seen"], g["sample_id"]) for g in groups])
    rows = []
    for g in groups:
        sample_id = g.pop("sample_id")
        rows.append({"id": g.pop("prompt_template_id"), **g, "sample_system_prompt": prompts.get(sample_id, "")})
    for row in rows:
        row["routes"] = sorted(row["routes"])
        row["models"] = sorted(m for m in row["models"] if m)
    return rows


def _prompts_by_key(client: Any, keys: list[tuple[str, str]]) -> dict[str, str]:
    """System prompts of the captures with these (started_at, id): a primary-key read of a few granules."""
    if not keys:
        return {}
    result = client.query(
        "SELECT id, system_prompt FROM captures "
        "WHERE started_at IN {ts:Array(DateTime64(6, 'UTC'))} AND id IN {ids:Array(UUID)}",
        parameters={"ts": [ch_time(parse_time(ts)) for ts, _ in keys], "ids": [cid for _, cid in keys]},
    )
    return {str(cid): prompt for cid, prompt in result.result_rows}


def template_members(client: Any, template_id: str, limit: int = 200) -> list[dict[str, Any]]:
    result = client.query(
        "SELECT id, started_at, route, model, thread_id, outcome, system_prompt FROM captures FINAL "
        "WHERE prompt_template_id = {t:String} ORDER BY started_at DESC, id DESC LIMIT {limit:UInt32}",
        parameters={"t": template_id, "limit": limit},
    )
    return decoded_rows(result)
