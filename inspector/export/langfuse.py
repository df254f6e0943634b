"""Langfuse dataset items: one per conversation, built on the openai-chat line.

The item's ``input`` is the conversation without its last message (and the tools), its
``expected_output`` the captured answer; ``metadata`` says where it came from. The export
streams the items as JSONL; ``prompttap export --format langfuse`` pushes them with the
langfuse SDK (``LangfusePush``, used by ``prompttap export``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import uuid
from collections.abc import Mapping
from typing import Any

from prompttap.inspector.export.errors import CliError


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


class LangfusePush:
    """Adds dataset items through the langfuse SDK (credentials from LANGFUSE_* variables)."""

    @staticmethod
    def check_env() -> None:
        missing = [v for v in ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY") if not os.environ.get(v)]
        if missing:
            raise CliError(
                f"--format langfuse needs {' and '.join(missing)} in the environment "
                "(and LANGFUSE_BASE_URL or LANGFUSE_HOST for a self-hosted Langfuse)"
            )

    def __init__(self, dataset: str) -> None:
        self.check_env()
        from langfuse import Langfuse

        self.dataset = dataset
        self.pushed = 0
        self.client = Langfuse(tracing_enabled=False)
        try:
            self.client.create_dataset(
                name=dataset, description="exported by prompttap", metadata={"source": "prompttap"}
            )
        except Exception as exc:
            raise CliError(f"cannot create the Langfuse dataset {dataset!r}: {_short(exc)}") from None

    def push(self, item: dict[str, Any]) -> None:
        try:
            self.client.create_dataset_item(dataset_name=self.dataset, **item)
        except Exception as exc:
            raise CliError(f"Langfuse refused dataset item {item.get('id')}: {_short(exc)}") from None
        self.pushed += 1

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.shutdown()


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__
