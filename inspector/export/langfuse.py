"""Langfuse dataset items: one per conversation, built on the openai-chat line.

The item's ``input`` is the conversation without its last message (and the tools), its
``expected_output`` the captured answer; ``metadata`` says where it came from. The export
streams the items as JSONL; ``prompttap export --format langfuse`` pushes them with the
langfuse SDK (``collector.export_cli``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any


def dataset_item(row: Mapping[str, Any], chat: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """The item for ``row``, whose openai-chat line is ``chat``, in the dataset ``dataset``."""
    messages = chat["messages"]
    started = row.get("started_at")
    metadata = {
        "capture_id": row["id"],
        "thread_id": row.get("thread") or "",
        "model": row.get("model") or "",
        "route": row.get("route") or "",
        "api": row.get("api") or "",
        "started_at": started.isoformat() if isinstance(started, dt.datetime) else str(started or ""),
        "session_id": row.get("session_id") or "",
        "user_id": row.get("user_id") or "",
        "tags": list(row.get("tags") or ()),
        "source": "prompttap",
    }
    item_input: dict[str, Any] = {"messages": messages[:-1]}
    if chat.get("tools"):
        item_input["tools"] = chat["tools"]
    return {
        # Stable per dataset and capture: exporting again updates the item instead of adding one.
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"prompttap:{dataset}:{row['id']}")),
        "input": item_input,
        "expected_output": messages[-1],
        "metadata": metadata,
        "source_trace_id": row.get("trace_id") or None,
        "source_observation_id": row.get("span_id") or None,
    }


def item_chat(item: Mapping[str, Any]) -> dict[str, Any]:
    """The openai-chat line an item was made from (what validates it)."""
    line = {"messages": [*item["input"]["messages"], item["expected_output"]]}
    tools = item["input"].get("tools")
    return {**line, "tools": tools} if tools else line
