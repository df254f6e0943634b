"""Records a sink refused, set aside in ``rejected/``: one JSON file per sink and capture, never lost.

A file holds the sink's name, its reason and the spooled record as it was (``{"sink", "reason",
"record"}``), named ``<sink>-<capture id>.json``, so refusing the same capture again replaces it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import orjson
from prompttap.schemas.credentials import scrub

log = logging.getLogger("prompttap.recorder")


class RejectedRecords:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def keep(self, sink: str, raw: bytes, reason: str) -> Path:
        """Set aside one record ``sink`` refused; returns its file."""
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            capture_id = orjson.loads(raw).get("id", "unknown")
        except orjson.JSONDecodeError:
            capture_id = f"unparsable-{time.time_ns()}"
        path = self.directory / f"{sink}-{capture_id}.json"
        reason = scrub(reason)[:2000]
        entry = {"sink": sink, "reason": reason, "record": raw.decode("utf-8", "replace")}
        path.write_bytes(orjson.dumps(entry))
        log.error("sink %s refused capture %s (kept in %s): %s", sink, capture_id, path, reason)
        return path
