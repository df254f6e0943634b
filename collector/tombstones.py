"""Captures deleted for privacy: no sink sends them again, and the ones that can give a copy back are asked.

Deleting a capture's rows from the store is not enough: copies wait in the spool for a sink that lags
(at-least-once: a re-delivery would insert the row again), and Langfuse already holds its trace. So a
delete leaves a tombstone: the encoder process skips a tombstoned record before it enriches or encodes
it, for every sink and every path (batches, halves, retries of ``rejected/``), and each sink that can
delete what it received (``recall``: Langfuse's public API) is asked to, until it has done so. What a
generic OTLP endpoint received cannot be recalled: OTLP has no delete.

Tombstones live in ``<home>/spool/tombstones.jsonl`` (one JSON line per event, fsynced), so a restart
keeps them. One is dropped once nothing can bring its capture back: its recalls are done, a day has
passed (a capture is re-spooled when its exchange ends, within the upstream timeout), and every record
spooled before that moment has left the spool's files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("prompttap.recorder")

KEEP_S = 86400.0
"""A tombstone lives at least this long after the delete."""
PRUNE_EVERY_S = 60.0


class Tombstones:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = {}  # id -> {"id", "trace_id", "at", "recall": [sinks]}
        self._horizon: dict[str, int] = {}  # id -> spool seq once its day had passed
        self._pruned_at = 0.0
        with contextlib.suppress(FileNotFoundError), open(path, "rb") as f:
            for line in f:
                try:
                    self._replay(orjson.loads(line))
                except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                    continue  # a line torn by a crash: the delete it belonged to never answered
        self.ids = frozenset(self._entries)

    def _replay(self, event: dict[str, Any]) -> None:
        capture_id = str(event["id"])
        if "recalled" in event:
            entry = self._entries.get(capture_id)
            if entry is not None and event["recalled"] in entry["recall"]:
                entry["recall"].remove(event["recalled"])
        else:
            self._entries[capture_id] = {**event, "recall": list(event.get("recall", []))}

    def add(self, capture_id: str, trace_id: str, recall: Iterable[str]) -> None:
        """Tombstone a capture (durably, before this returns); ``recall``: the sinks to ask for their copy."""
        event = {"id": capture_id, "trace_id": trace_id, "at": time.time(), "recall": sorted(set(recall))}
        with self._lock:
            self._append(event)
            self._replay(event)
            self.ids = frozenset(self._entries)

    def pending(self, sink: str) -> list[tuple[str, str]]:
        """(capture id, trace id) of the tombstoned captures ``sink`` still has to be asked to delete."""
        with self._lock:
            return [(i, e["trace_id"]) for i, e in self._entries.items() if sink in e["recall"]]

    def recalled(self, capture_id: str, sink: str) -> None:
        with self._lock:
            self._append({"id": capture_id, "recalled": sink})
            self._replay({"id": capture_id, "recalled": sink})

    def prune(self, seqs: tuple[int, int], now: float | None = None) -> bool:
        """Drop the tombstones nothing can bring back (see the module docstring), given the spool's
        ``seqs()`` (oldest record on disk, next record); at most every ``PRUNE_EVERY_S``. True if any went."""
        now = time.time() if now is None else now
        oldest, following = seqs
        with self._lock:
            if now - self._pruned_at < PRUNE_EVERY_S:
                return False
            self._pruned_at = now
            doomed = []
            for capture_id, e in self._entries.items():
                if e["recall"] or now - e["at"] < KEEP_S:
                    continue
                if oldest >= self._horizon.setdefault(capture_id, following):
                    doomed.append(capture_id)
            if not doomed:
                return False
            for capture_id in doomed:
                del self._entries[capture_id]
                self._horizon.pop(capture_id, None)
            self._rewrite()
            self.ids = frozenset(self._entries)
        log.info("dropped %d tombstones: nothing left can send those captures again", len(doomed))
        return True

    def _append(self, event: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, orjson.dumps(event) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            _fsync_dir(self.path.parent)

    def _rewrite(self) -> None:
        """The live entries only, replacing the file atomically."""
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "wb") as f:
            f.writelines(orjson.dumps(e) + b"\n" for e in self._entries.values())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
