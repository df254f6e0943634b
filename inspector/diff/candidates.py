"""Captures worth comparing with one (the capture page's "compare with…" picker): a store read
with bound parameters only, in the style of ``inspector.queries``."""

from __future__ import annotations

import uuid
from typing import Any

# Captures that carry no prompt to compare (embeddings, model lists, unparsed traffic).
NOT_COMPARABLE_APIS = ["openai.embeddings", "openai.models", "ollama.embed", "unknown", ""]
PREVIEW_WORDS = 12

_CANDIDATES_SQL = """
SELECT
    id,
    started_at,
    model,
    route,
    api,
    status_code,
    multiIf(
        {thread:String} != '' AND thread_id = {thread:String}, 'thread',
        {template:String} != '' AND prompt_template_id = {template:String}, 'template',
        'route'
    ) AS relation,
    substringUTF8(
        JSONExtractString(
            arrayLast(m -> JSONExtractString(m, 'role') = 'user', JSONExtractArrayRaw(messages)),
            'content'
        ),
        1, 400
    ) AS last_user
FROM captures FINAL
WHERE id != {id:UUID}
  AND NOT has({skip:Array(String)}, api)
  AND (({thread:String} != '' AND thread_id = {thread:String})
       OR ({template:String} != '' AND prompt_template_id = {template:String})
       OR route = {route:String})
ORDER BY indexOf(['thread', 'template', 'route'], relation), started_at DESC, id DESC
LIMIT {limit:UInt32}
"""


def compare_candidates(client: Any, capture_id: uuid.UUID, limit: int = 20) -> list[dict[str, Any]] | None:
    """Captures worth comparing with ``capture_id``: same thread first, then same prompt
    template, then same route; newest first within each. ``None`` if the capture is unknown."""
    me = client.query(
        "SELECT thread_id, prompt_template_id, route, started_at FROM captures FINAL WHERE id = {id:UUID} LIMIT 1",
        parameters={"id": str(capture_id)},
    )
    if not me.result_rows:
        return None
    thread, template, route, started_at = me.result_rows[0]
    result = client.query(
        _CANDIDATES_SQL,
        parameters={
            "id": str(capture_id),
            "thread": thread or "",
            "template": template or "",
            "route": route or "",
            "skip": NOT_COMPARABLE_APIS,
            "limit": limit,
        },
    )
    items = []
    for values in result.result_rows:
        row = dict(zip(result.column_names, values, strict=True))
        other_id = str(row["id"])
        older_first = row["started_at"] <= started_at  # the diff reads older (A) → newer (B)
        a, b = (other_id, str(capture_id)) if older_first else (str(capture_id), other_id)
        items.append(
            {
                "id": other_id,
                "started_at": row["started_at"].isoformat(),
                "model": row["model"],
                "route": row["route"],
                "api": row["api"],
                "status_code": row["status_code"],
                "relation": row["relation"],
                "last_user": _preview(row["last_user"] or ""),
                "diff_url": f"/diff?a={a}&b={b}",
            }
        )
    return items


def _preview(text: str) -> str:
    words = text.split()
    return " ".join(words[:PREVIEW_WORDS]) + (" …" if len(words) > PREVIEW_WORDS else "")
