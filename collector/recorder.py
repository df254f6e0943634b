"""The recorder: the proxy hands it finished captures; it spools them and drains the
spool into every sink, off the request path.

Shaped like OpenTelemetry's BatchSpanProcessor with the in-memory queue replaced by the
durable spool: ``record`` is one append (no waiting on any sink, never raises), and one
thread per sink (``collector.drain``) reads batches after that sink's cursor, has the
encoder process turn them into the sink's payload, sends it, and acknowledges only after
the sink succeeded. A sink that is down just falls behind; a record a sink refuses is set
aside in ``rejected/`` (``collector.rejected``) until ``retry_rejected`` sends it again; when the
spool runs short of room, lagging secondary sinks give up their oldest backlog so the store never
loses a capture to them (``collector.headroom``). ``forget`` is a privacy delete's part outside the
store: no sink sends the capture again (``collector.tombstones``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from prompttap.collector.drain import SinkWorker
from prompttap.collector.encoder import Encoder, EncoderError
from prompttap.collector.headroom import Headroom
from prompttap.collector.priority import Priority
from prompttap.collector.recent import Recent
from prompttap.collector.rejected import RejectedRecords
from prompttap.collector.sinks.base import Rejected, Sink
from prompttap.collector.spool import Batch, Spool, SpoolFull
from prompttap.collector.tombstones import Tombstones
from prompttap.schemas.capture import Capture
from prompttap.schemas.credentials import scrub

log = logging.getLogger("prompttap.recorder")


class Recorder:
    def __init__(
        self,
        spool: Spool,
        sinks: Sequence[Sink],
        encoder: Encoder,
        rejected_dir: Path,
        priority: Priority | None = None,
        payload_dir: Path | None = None,
    ) -> None:
        self.spool = spool
        self.encoder = encoder
        self.priority = priority
        if payload_dir is not None:
            payload_dir.mkdir(parents=True, exist_ok=True)
        self.tombstones = Tombstones(spool.directory / "tombstones.jsonl")
        encoder.forget(self.tombstones.ids)  # before the first batch: what was deleted stays deleted
        self.workers = [
            SinkWorker(s, spool, encoder, rejected_dir, priority, payload_dir, self.tombstones) for s in sinks
        ]
        self.rejected = RejectedRecords(rejected_dir)
        self._retrying = threading.Lock()
        self.headroom = Headroom(spool, self.workers)
        for w in self.workers:
            w.after_drain = self._after_drain
        self.recorded = 0
        self.dropped: dict[str, int] = {}
        self.dropped_recent: dict[str, Recent] = {}  # the same, lately: /readyz's view
        self.last_drop = ""

    def start(self) -> None:
        for w in self.workers:
            w.thread.start()

    def record(self, capture: Capture) -> None:
        """Spool one capture. Called on the event loop; never raises into the traffic."""
        try:
            self._append(orjson.dumps(capture.to_record()))
            self.recorded += 1
        except SpoolFull as exc:
            self._drop("disk_full", exc)
        except Exception as exc:
            self._drop("spool_error", exc)

    def _after_drain(self) -> None:
        self.headroom.check()  # a store's ack may let backlog go
        if self.tombstones.ids and self.tombstones.prune(self.spool.seqs()):
            self.encoder.forget(self.tombstones.ids)

    def forget(self, capture_id: str, trace_id: str | None = None) -> dict[str, Any]:
        """A privacy delete, for everything but the store's rows (the inspector deletes those right after):
        tombstone the capture so that no sink sends it again (``collector.tombstones``), wait for the batches
        in flight, remove it from ``rejected/``, and ask each sink that can (Langfuse) to delete its copy.
        ``trace_id``: the capture's, from the store; None if the store does not have it. Returns what was
        done: ``found`` (false: neither the store nor ``rejected/`` knew the capture; nothing was done),
        ``rejected`` (copies removed), ``recalled`` ({sink: "deleted" or "pending: ..."}), ``not_recallable``
        (sinks that keep whatever they were sent of it: a generic OTLP endpoint has no delete)."""
        set_aside = self.rejected.records(capture_id)
        if trace_id is None:
            trace_id = next((str(r["trace_id"]) for r in set_aside if r.get("trace_id")), None)
        if trace_id is None and not set_aside:
            return {"found": False}
        recalling = [w for w in self.workers if w.recalls]
        self.tombstones.add(capture_id, trace_id or "", [w.sink.name for w in recalling])
        self.encoder.forget(self.tombstones.ids)  # no payload made from now on holds it ...
        recalled: dict[str, str] = {}
        for w in self.workers:
            with w.busy:  # ... and none made before is still on its way: it landed, or it never will
                if w.recalls:
                    outcome = w.recall_pending().get(capture_id)
                    still = any(i == capture_id for i, _ in self.tombstones.pending(w.sink.name))
                    recalled[w.sink.name] = outcome or ("pending: asked again later" if still else "deleted")
        removed = self.rejected.remove(capture_id)
        not_recallable = [w.sink.name for w in self.workers if w.sink.kind == "otlp" and not w.recalls]
        log.info("deleted capture %s: tombstoned, %d set-aside copies removed, recalled %s", capture_id,
                 len(removed), recalled or "from no sink")  # fmt: skip
        return {"found": True, "rejected": len(removed), "recalled": recalled, "not_recallable": not_recallable}

    def _append(self, record: bytes) -> None:
        """Append; while the spool is full, lagging secondary sinks give way (each round frees at least
        one segment, so this ends) until the record fits or none can."""
        while True:
            try:
                self.spool.append(record)
                return
            except SpoolFull:
                if not self.headroom.check(full=True):
                    raise

    def _drop(self, reason: str, exc: Exception) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self.dropped_recent.setdefault(reason, Recent()).add()
        self.last_drop = scrub(f"{reason}: {exc}")[:500]
        log.error("capture NOT recorded (%s, %d so far): %s", reason, self.dropped[reason], exc)

    def close(self, timeout: float = 10.0) -> dict[str, int]:
        """Drain what can be drained within ``timeout``; the rest waits in the spool.
        Returns the captures each sink still has waiting."""
        deadline = time.monotonic() + timeout
        for w in self.workers:
            while time.monotonic() < deadline and self.spool.pending(w.sink.name)[0] and not w.failing_since:
                time.sleep(0.05)
        for w in self.workers:
            w.stopping.set()
        for w in self.workers:
            if w.thread.is_alive():  # a recorder that never started (`prompttap rejected retry`) has none
                w.thread.join(max(0.5, deadline - time.monotonic()))
            w.sink.close()
        self.encoder.close()
        left = {w.sink.name: self.spool.pending(w.sink.name)[0] for w in self.workers}
        self.spool.close()
        return {name: n for name, n in left.items() if n}

    def stats(self) -> dict[str, Any]:
        return {
            "recorded": self.recorded,
            "dropped": dict(self.dropped),
            "dropped_recent": {r: n for r, w in self.dropped_recent.items() if (n := w.count())},
            "last_drop": self.last_drop,
            "spool": self.spool.stats(),
            "catching_up": bool(self.priority and self.priority.catching_up),
            "sinks": {w.sink.name: w.stats() for w in self.workers},
            "rejected": self.rejected.listing(limit=20),  # no reasons here: they may quote a record
        }

    def retry_rejected(self) -> dict[str, Any]:
        """Send every record in ``rejected/`` again to the sink that refused it (once its cause is fixed).
        A record delivered leaves the folder; one refused again stays, with the new reason; one its sink
        cannot take now (down, or no longer configured) stays as it is."""
        with self._retrying:  # two retries at once (the page and the CLI) would send a record twice
            return self._retry_rejected()

    def _retry_rejected(self) -> dict[str, Any]:
        workers = {w.sink.name: w for w in self.workers}
        report: dict[str, list[dict[str, Any]]] = {"delivered": [], "refused": [], "not_sent": []}
        for entry, raw in self.rejected.each():
            worker = workers.get(entry.sink)
            item = entry.summary()
            try:
                if worker is None:
                    raise LookupError(f"sink {entry.sink} is not configured")
                worker.deliver(raw)
            except (Rejected, EncoderError) as exc:
                if isinstance(exc, EncoderError) and exc.retry:
                    report["not_sent"].append({**item, "error": str(exc)})
                    continue
                self.rejected.keep(entry.sink, raw, str(exc))
                report["refused"].append({**item, "reason": scrub(str(exc))[:500]})
            except Exception as exc:
                report["not_sent"].append({**item, "error": scrub(f"{type(exc).__name__}: {exc}")[:500]})
            else:
                entry.path.unlink(missing_ok=True)
                report["delivered"].append(item)
        log.info(
            "rejected records retried: %d delivered, %d refused again, %d not sent",
            *(len(report[k]) for k in ("delivered", "refused", "not_sent")),
        )
        return report


__all__ = ["Batch", "Recorder", "Rejected", "Sink", "SinkWorker"]
