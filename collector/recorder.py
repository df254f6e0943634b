"""The recorder: the proxy hands it finished captures; it spools them and drains the
spool into every sink, off the request path.

Shaped like OpenTelemetry's BatchSpanProcessor with the in-memory queue replaced by the
durable spool: ``record`` is one append (no waiting on any sink, never raises), and one
thread per sink reads batches after that sink's cursor, has the encoder process turn
them into the sink's payload, sends it, and acknowledges only after the sink succeeded.
A sink that is down just falls behind; nothing is dropped on a timer or a retry count.
A record the sink refuses as malformed is isolated by splitting the batch and set aside
in ``rejected/`` (counted), never silently lost.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from prompttap.collector.encoder import Encoder, EncoderError
from prompttap.collector.priority import Priority
from prompttap.collector.sinks.base import Rejected, Sink
from prompttap.collector.spool import Batch, ReadPlan, Spool, SpoolFull, read_planned
from prompttap.schemas.capture import Capture

log = logging.getLogger("prompttap.recorder")

BATCH_DELAY = 0.5
"""Seconds a sink waits for a batch to fill: each insert has a fixed cost in ClickHouse."""
MAX_BATCH = 1000


class SinkWorker:
    """Drains the spool into one sink on its own thread."""

    def __init__(
        self,
        sink: Sink,
        spool: Spool,
        encoder: Encoder,
        rejected_dir: Path,
        priority: Priority | None = None,
        payload_dir: Path | None = None,
    ) -> None:
        self.sink = sink
        self.priority = priority
        self.spool = spool
        self.encoder = encoder
        self.rejected_dir = rejected_dir
        # where the encoder leaves this sink's payload, if the sink's engine can read it from there
        self.payload_file = payload_dir / f"{sink.name}.payload" if payload_dir and sink.in_engine else None
        self.exported = 0
        self.failed = 0
        self.rejected = 0
        self.last_error = ""
        self.failing_since = 0.0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"prompttap-sink-{sink.name}", daemon=True)

    def _run(self) -> None:
        backoff = 0.1
        while not self.stopping.is_set():
            if not self.spool.wait(0.5, self.sink.name):
                continue
            # Let a small batch fill for a moment: fewer, larger inserts.
            if self.spool.pending(self.sink.name)[0] < MAX_BATCH:
                self.stopping.wait(BATCH_DELAY)
            delivered = self.drain_once()
            if self.priority is not None:  # a sink that is down has a backlog but needs no CPU
                backlog = 0 if self.failing_since else self.spool.pending(self.sink.name)[0]
                self.priority.update(self.sink.name, backlog)
            if delivered:
                backoff = 0.1
            elif self.failing_since:
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def drain_once(self) -> bool:
        """Export one batch; True if it was delivered (or set aside)."""
        plan = self.spool.plan(self.sink.name, max_records=MAX_BATCH)
        if plan.empty:
            return False
        try:
            batch = self._export(plan)
        except Exception as exc:
            self.failed += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:500]
            self.failing_since = self.failing_since or time.monotonic()
            log.warning("sink %s: export failed, will retry: %s", self.sink.name, self.last_error)
            return False
        self.spool.ack(self.sink.name, batch)  # also when it held only damage: the cursor moves past it
        self.failing_since = 0.0
        return bool(batch.seqs)

    def _export(self, plan: ReadPlan) -> Batch:
        """The encoder process reads the batch from the spool's files and encodes it, so its records never
        pass through this process (GIL time here stretches the proxy's latency); the sink sends the payload.
        Only a batch the sink or the encoder refuses is read here, to find the bad records."""
        try:
            sink = self.sink
            payload, rows, batch = self.encoder.encode_planned(sink.kind, sink.options, plan, self.payload_file)
            self.spool.note_corrupt(batch)
            self._send(payload, rows)
            return batch
        except (Rejected, EncoderError) as exc:
            if isinstance(exc, EncoderError) and exc.retry:
                raise  # not the records' fault: retry the same batch
            refusal = exc
        batch = read_planned(plan)  # the same records: segments only grow, and only our ack deletes them
        self.spool.note_corrupt(batch)
        self._bisect(batch, 0, len(batch.records), refusal)
        return batch

    def _bisect(self, batch: Batch, lo: int, hi: int, refusal: Exception) -> None:
        """Deliver records ``lo:hi`` of a refused batch by halves (a 400 for one bad record, a 413 for too
        many), setting aside a record refused on its own. Each part is acked as soon as it is delivered or
        set aside, so when a later part fails and the batch is retried, no part is sent or counted twice."""
        if hi - lo == 1:
            self._reject(batch.records[lo], str(refusal))
            self.spool.ack(self.sink.name, batch.upto(hi))
            return
        mid = (lo + hi) // 2
        for a, b in ((lo, mid), (mid, hi)):
            if a == b:
                continue
            try:
                payload, rows = self.encoder.encode(self.sink.kind, self.sink.options, batch.records[a:b])
                self._send(payload, rows)
            except (Rejected, EncoderError) as exc:
                if isinstance(exc, EncoderError) and exc.retry:
                    raise
                self._bisect(batch, a, b, exc)
                continue
            self.spool.ack(self.sink.name, batch.upto(b))

    def _send(self, payload: bytes | Path, rows: int) -> None:
        priority = self.priority
        busy = priority.engine_work() if priority is not None and self.sink.in_engine else contextlib.nullcontext()
        with busy:  # the engine's work on this thread is background work too
            if isinstance(payload, Path):
                try:
                    self.sink.send_file(payload, rows)
                finally:
                    payload.unlink(missing_ok=True)  # a retry encodes again; leave no copy of prompts behind
            else:
                self.sink.send(payload, rows)
        self.exported += rows

    def _reject(self, raw: bytes, reason: str) -> None:
        self.rejected += 1
        self.rejected_dir.mkdir(parents=True, exist_ok=True)
        try:
            capture_id = orjson.loads(raw).get("id", "unknown")
        except orjson.JSONDecodeError:
            capture_id = f"unparsable-{time.time_ns()}"
        path = self.rejected_dir / f"{self.sink.name}-{capture_id}.json"
        entry = {"sink": self.sink.name, "reason": reason, "record": raw.decode("utf-8", "replace")}
        path.write_bytes(orjson.dumps(entry))
        log.error("sink %s refused capture %s (kept in %s): %s", self.sink.name, capture_id, path, reason)

    def stats(self) -> dict[str, Any]:
        records, size = self.spool.pending(self.sink.name)
        return {
            "pending": records,
            "pending_bytes": size,
            "exported": self.exported,
            "failed_exports": self.failed,
            "rejected": self.rejected,
            "last_error": self.last_error,
            "healthy": not self.failing_since,
        }


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
        self.workers = [SinkWorker(s, spool, encoder, rejected_dir, priority, payload_dir) for s in sinks]
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
            "last_drop": self.last_drop,
            "spool": self.spool.stats(),
            "catching_up": bool(self.priority and self.priority.catching_up),
            "sinks": {w.sink.name: w.stats() for w in self.workers},
        }


__all__ = ["Batch", "Recorder", "Rejected", "Sink", "SinkWorker"]
