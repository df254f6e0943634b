"""Records a sink refused, set aside in ``rejected/``: one JSON file per sink and capture, never lost.

A file holds the sink's name, its reason, when, and the spooled record as it was (``{"sink",
"reason", "at", "record"}``), named ``<sink>-<capture id>.json``, so refusing the same capture again
replaces it. Client-controlled values are made storable before they reach a sink
(``collector.sinks.encoders``), so a record lands here only for a fault of prompttap's own (a schema
it got wrong, a receiver's limit): ``prompttap rejected list`` shows them, ``retry`` sends them again
once the cause is fixed (``Recorder.retry_rejected``), and a privacy delete removes them (``remove``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from prompttap.schemas.credentials import scrub

log = logging.getLogger("prompttap.recorder")

_NAME = re.compile(r"^(?P<sink>.+)-(?P<id>[0-9a-fA-F-]{36}|unparsable-\d+)\.json$")


@dataclass(frozen=True, slots=True)
class Entry:
    """One set-aside record, as its file name and time tell it (its contents are read on demand)."""

    path: Path
    sink: str
    capture_id: str
    at: float

    def summary(self) -> dict[str, Any]:
        return {"sink": self.sink, "id": self.capture_id, "at": datetime.fromtimestamp(self.at, UTC).isoformat()}

    def read(self) -> dict[str, Any]:
        """The file's ``{"sink", "reason", "at", "record"}``."""
        return orjson.loads(self.path.read_bytes())


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
        entry = {"sink": sink, "reason": reason, "at": time.time(), "record": raw.decode("utf-8", "replace")}
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(orjson.dumps(entry))
        os.replace(tmp, path)  # a reader (list, retry) sees the old file or the new one, never half of one
        log.error("sink %s refused capture %s (kept in %s): %s", sink, capture_id, path, reason)
        return path

    def entries(self) -> list[Entry]:
        """Every set-aside record, newest first; from the file names alone (files may be large)."""
        found = []
        with contextlib.suppress(FileNotFoundError), os.scandir(self.directory) as it:
            for f in it:
                m = _NAME.match(f.name)
                if m is None:
                    continue
                with contextlib.suppress(FileNotFoundError):  # retried or removed meanwhile
                    found.append(Entry(Path(f.path), m["sink"], m["id"], f.stat().st_mtime))
        return sorted(found, key=lambda e: e.at, reverse=True)

    def listing(self, limit: int | None = None, reasons: bool = False) -> dict[str, Any]:
        """``{"count", "items"}``: the newest ``limit`` records, with the sink's reason if ``reasons``
        (each file is read for it: keep ``limit`` small)."""
        entries = self.entries()
        items = []
        for e in entries[:limit]:
            item = e.summary()
            if reasons:
                with contextlib.suppress(OSError, orjson.JSONDecodeError):
                    item["reason"] = str(e.read().get("reason", ""))
            items.append(item)
        return {"count": len(entries), "items": items}

    def records(self, capture_id: str) -> list[dict[str, Any]]:
        """Every sink's set-aside copy of one capture, as spooled."""
        found = []
        for e in self.entries():
            if e.capture_id == capture_id:
                with contextlib.suppress(OSError, orjson.JSONDecodeError, KeyError):
                    found.append(orjson.loads(e.read()["record"]))
        return found

    def remove(self, capture_id: str) -> list[Path]:
        """Delete every sink's copy of one capture (a privacy delete); returns the files removed."""
        removed = []
        for e in self.entries():
            if e.capture_id == capture_id:
                e.path.unlink(missing_ok=True)
                removed.append(e.path)
                log.info("removed capture %s set aside for sink %s", capture_id, e.sink)
        return removed

    def each(self) -> Iterator[tuple[Entry, bytes]]:
        """Every set-aside record and its spooled bytes, one file read at a time, oldest first."""
        for e in reversed(self.entries()):
            try:
                raw = str(e.read()["record"]).encode()
            except (OSError, orjson.JSONDecodeError, KeyError):
                continue  # gone meanwhile, or not a file of ours
            yield e, raw
