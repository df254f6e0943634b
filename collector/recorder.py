"""The recorder: the proxy hands it finished captures; it spools them and drains the
spool into every sink, off the request path.

Shaped like OpenTelemetry's BatchProcessor, with the in-memory queue replaced by the
durable spool: ``record`` is a plain append (no I/O wait, never raises), and one worker
thread per sink reads batches after that sink's cursor, exports them, and acknowledges
only after the sink succeeded. A sink that is down just falls behind; nothing is dropped
on a timer or a retry count. A record the sink refuses as malformed is isolated by
splitting the batch and set aside in ``rejected/`` (counted), never silently lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import orjson

from collector.spool import Spool, SpoolFull
from schemas.capture import Capture

log = logging.getLogger("prompttap.recorder")


class Rejected(Exception):
    """The sink refuses this batch for what it contains, not because it is unavailable."""


class Sink(Protocol):
    """Where captures go. ``export`` raises to ask for a retry, ``Rejected`` for bad data."""

    name: str

    def export(self, records: Sequence[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...


class SinkWorker:
    """Drains the spool into one sink on its own thread."""

    def __init__(
        self,
        sink: Sink,
        spool: Spool,
        prepare: Callable[[dict[str, Any]], dict[str, Any]],
        rejected_dir: Path,
    ):
        self.sink = sink
        self.spool = spool
        self.prepare = prepare
        self.rejected_dir = rejected_dir
        self.exported = 0
        self.failed = 0
        self.rejected = 0
        self.last_error = ""
        self.last_error_at = 0.0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"prompttap-sink-{sink.name}", daemon=True)

    def _run(self) -> None:
        backoff = 0.1
        while not self.stopping.is_set():
            if self.drain_once():
                backoff = 0.1
            elif self.last_error_at and time.monotonic() - self.last_error_at < backoff:
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            else:
                self.spool.wait(0.2)

    def drain_once(self) -> bool:
        """Export one batch; True if anything was delivered."""
        batch = self.spool.read(self.sink.name)
        if not batch.records:
            return False
        try:
            records = [self.prepare(orjson.loads(raw)) for raw in batch.records]
            self._export(records)
        except Exception as exc:
            self.failed += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:500]
            self.last_error_at = time.monotonic()
            log.warning("sink %s: export failed, will retry: %s", self.sink.name, self.last_error)
            return False
        self.spool.ack(self.sink.name, batch)
        self.exported += len(records)
        self.last_error_at = 0.0
        return True

    def _export(self, records: list[dict[str, Any]]) -> None:
        try:
            self.sink.export(records)
        except Rejected as exc:
            if len(records) == 1:
                self._reject(records[0], str(exc))
                return
            half = len(records) // 2  # bisect to find the record(s) the sink refuses
            self._export(records[:half])
            self._export(records[half:])

    def _reject(self, record: dict[str, Any], reason: str) -> None:
        self.rejected += 1
        self.rejected_dir.mkdir(parents=True, exist_ok=True)
        path = self.rejected_dir / f"{self.sink.name}-{record.get('id', 'unknown')}.json"
        path.write_bytes(orjson.dumps({"reason": reason, "record": record}, default=str))
        log.error("sink %s rejected capture %s (kept in %s): %s", self.sink.name, record.get("id"), path, reason)

    def stats(self) -> dict[str, Any]:
        records, size = self.spool.pending(self.sink.name)
        return {
            "pending": records,
            "pending_bytes": size,
            "exported": self.exported,
            "failed_exports": self.failed,
            "rejected": self.rejected,
            "last_error": self.last_error,
            "healthy": not self.last_error_at,
        }


class Recorder:
    def __init__(
        self,
        spool: Spool,
        sinks: Sequence[Sink],
        prepare: Callable[[dict[str, Any]], dict[str, Any]],
        rejected_dir: Path,
    ) -> None:
        self.spool = spool
        self.workers = [SinkWorker(s, spool, prepare, rejected_dir) for s in sinks]
        self.recorded = 0
        self.dropped: dict[str, int] = {}
        self.last_drop = ""

    def start(self) -> None:
        for w in self.workers:
            w.thread.start()

    def record(self, capture: Capture) -> None:
        """Spool one capture. Called on the event loop; never raises into the traffic."""
        try:
            self.spool.append(orjson.dumps(capture.to_record()))
            self.recorded += 1
        except SpoolFull as exc:
            self._drop("disk_full", exc)
        except Exception as exc:
            self._drop("spool_error", exc)

    def _drop(self, reason: str, exc: Exception) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self.last_drop = f"{reason}: {exc}"
        log.error("capture NOT recorded (%s, %d so far): %s", reason, self.dropped[reason], exc)

    def close(self, timeout: float = 10.0) -> None:
        """Drain what can be drained within ``timeout``; the rest waits in the spool."""
        deadline = time.monotonic() + timeout
        for w in self.workers:
            while time.monotonic() < deadline and w.spool.pending(w.sink.name)[0] and not w.last_error_at:
                time.sleep(0.05)
            w.stopping.set()
        for w in self.workers:
            w.thread.join(max(0.1, deadline - time.monotonic()))
            w.sink.close()
        self.spool.close()

    def stats(self) -> dict[str, Any]:
        spool = self.spool.stats()
        return {
            "recorded": self.recorded,
            "dropped": dict(self.dropped),
            "last_drop": self.last_drop,
            "spool": spool,
            "sinks": {w.sink.name: w.stats() for w in self.workers},
        }
