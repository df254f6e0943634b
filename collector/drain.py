"""One sink's thread: drains the spool into it, batch by batch, acking only what the sink took.

A sink that is down just falls behind (retried with backoff; nothing is dropped on a timer or a
retry count). A batch the sink refuses for its contents is sent again in halves until the records
at fault are found and set aside in ``rejected/``; each part is acked as soon as it is delivered or
set aside, so a retry never sends a part twice. A sink that refuses prompttap itself (401/403) is
shown as misconfigured until it works again. A sink that can delete what it received (Langfuse) is
asked to, on this thread, for every capture deleted for privacy (``collector.tombstones``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from prompttap.collector.encoder import Encoder, EncoderError
from prompttap.collector.priority import Priority
from prompttap.collector.recent import Recent
from prompttap.collector.rejected import RejectedRecords
from prompttap.collector.sinks.base import Misconfigured, Rejected, Sink
from prompttap.collector.spool import Batch, ReadPlan, Spool, read_planned
from prompttap.collector.tombstones import Tombstones
from prompttap.schemas.credentials import scrub

log = logging.getLogger("prompttap.recorder")

BATCH_DELAY = 0.5
"""Seconds a sink waits for a batch to fill: each insert has a fixed cost in ClickHouse."""
MAX_BATCH = 1000
RECALL_RETRY_S = 10.0
"""Seconds before a sink that could not delete a deleted capture's copy is asked again."""

Status = Literal["ok", "failing", "misconfigured"]


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
        tombstones: Tombstones | None = None,
    ) -> None:
        self.sink = sink
        self.tombstones = tombstones  # captures deleted for privacy: this sink is asked to delete its copy
        self.recalls = bool(getattr(sink, "recalls", False)) and tombstones is not None
        self._recall_at = 0.0  # when pending recalls may be tried again
        self.priority = priority
        self.spool = spool
        self.encoder = encoder
        self.set_aside = RejectedRecords(rejected_dir)
        # where the encoder leaves this sink's payload, if the sink's engine can read it from there
        self.payload_file = payload_dir / f"{sink.name}.payload" if payload_dir and sink.in_engine else None
        self.after_drain: Callable[[], object] = lambda: None  # the recorder's headroom check
        self.exported = 0
        self.failed = 0
        self.rejected = 0
        self.given_up = 0  # records this sink never got: given up to keep room for the store (headroom)
        self.rejected_recent, self.given_up_recent = Recent(), Recent()  # the same, lately: /readyz's view
        self.last_error = ""
        self.failing_since = 0.0
        self.misconfigured = False
        self.busy = threading.Lock()  # held while sending: a retry (or a delete) waits for the batch in flight
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"prompttap-sink-{sink.name}", daemon=True)

    @property
    def status(self) -> Status:
        if self.misconfigured:
            return "misconfigured"
        return "failing" if self.failing_since else "ok"

    def report_behind(self) -> None:
        """Tell the CPU priority how many seconds this sink is behind (a sink that is down is behind, but
        needs no CPU to be)."""
        if self.priority is not None:
            self.priority.update(self.sink.name, 0.0 if self.failing_since else self.spool.behind(self.sink.name))

    def _run(self) -> None:
        backoff = 0.1
        while not self.stopping.is_set():
            if self.recalls and time.monotonic() >= self._recall_at:
                with self.busy:
                    self.recall_pending()
            if not self.spool.wait(0.5, self.sink.name):
                continue
            # Let a small batch fill for a moment: fewer, larger inserts.
            if self.spool.pending(self.sink.name)[0] < MAX_BATCH:
                self.stopping.wait(BATCH_DELAY)
            delivered = self.drain_once()
            self.after_drain()
            self.report_behind()
            if delivered:
                backoff = 0.1
            elif self.failing_since:
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def drain_once(self) -> bool:
        """Export one batch; True if it was delivered (or set aside)."""
        with self.busy:
            plan = self.spool.plan(self.sink.name, max_records=MAX_BATCH)
            if plan.empty:
                return False
            try:
                batch = self._export(plan)
            except Exception as exc:
                self._failed(exc)
                return False
        self.spool.ack(self.sink.name, batch)  # also when it held only damage: the cursor moves past it
        self._worked()
        return bool(batch.seqs)

    def deliver(self, record: bytes) -> None:
        """Send one record again (``prompttap rejected retry``), between this sink's own batches. Raises
        as ``send`` does: ``Rejected`` (or a non-retry ``EncoderError``) when it is refused again."""
        with self.busy:
            payload, rows = self.encoder.encode(self.sink.kind, self.sink.options, [record])
            self._send(payload, rows)
        self._worked()

    def _worked(self) -> None:
        if self.misconfigured:
            log.warning("sink %s: exports work again", self.sink.name)
        self.failing_since, self.misconfigured = 0.0, False

    def _failed(self, exc: Exception) -> None:
        self.failed += 1
        self.last_error = scrub(f"{type(exc).__name__}: {exc}")[:500]  # shown on /healthz and logged
        self.failing_since = self.failing_since or time.monotonic()
        if not isinstance(exc, Misconfigured):
            log.warning("sink %s: export failed, will retry: %s", self.sink.name, self.last_error)
        elif not self.misconfigured:  # loud, once: retries cannot help until someone fixes the settings
            self.misconfigured = True
            log.error(
                "sink %s is MISCONFIGURED and exports nothing until its settings are fixed: %s. Its captures "
                "wait in the spool; if the spool runs short of room they give way to the store's.",
                self.sink.name,
                self.last_error,
            )

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
        batch = read_planned(plan)  # the same records (segments only grow; one given up meanwhile reads empty)
        self.spool.note_corrupt(batch)
        self._bisect(batch, 0, len(batch.records), refusal)
        return batch

    def _bisect(self, batch: Batch, lo: int, hi: int, refusal: Exception) -> None:
        """Deliver records ``lo:hi`` of a refused batch by halves (a 400 for one bad record, a 413 for too
        many), setting aside a record refused on its own. Each part is acked as soon as it is delivered or
        set aside, so when a later part fails and the batch is retried, no part is sent or counted twice."""
        if hi - lo == 1:
            self.rejected += 1
            self.rejected_recent.add()
            self.set_aside.keep(self.sink.name, batch.records[lo], str(refusal))
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

    def recall_pending(self) -> dict[str, str]:
        """Ask the sink to delete its copy of every tombstoned capture it still holds (call with ``busy``
        held: after the batch in flight, so a span it carries cannot land after its delete). Returns
        ``{capture id: "deleted" | "pending: <why>"}``; what failed is asked again in ``RECALL_RETRY_S``."""
        if not self.recalls or self.tombstones is None:
            return {}
        done: dict[str, str] = {}
        for capture_id, trace_id in self.tombstones.pending(self.sink.name):
            try:
                self.sink.recall(trace_id)  # type: ignore[attr-defined]
            except Exception as exc:
                why = scrub(f"{type(exc).__name__}: {exc}")[:500]
                log.warning("sink %s: could not delete deleted capture %s yet, will retry: %s", self.sink.name,
                            capture_id, why)  # fmt: skip
                self._recall_at = time.monotonic() + RECALL_RETRY_S
                return {**done, capture_id: f"pending: {why}"}
            self.tombstones.recalled(capture_id, self.sink.name)
            log.info("sink %s: deleted capture %s (trace %s)", self.sink.name, capture_id, trace_id)
            done[capture_id] = "deleted"
        return done

    def gave_up(self, n: int) -> None:
        """Count ``n`` records this sink gave up to keep room for the store (``collector.headroom``)."""
        self.given_up += n
        self.given_up_recent.add(n)

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

    def stats(self) -> dict[str, Any]:
        records, size = self.spool.pending(self.sink.name)
        return {
            "status": self.status,
            "primary": self.sink.primary,
            "pending": records,
            "pending_bytes": size,
            "exported": self.exported,
            "failed_exports": self.failed,
            "rejected": self.rejected,
            "rejected_recent": self.rejected_recent.count(),
            "given_up": self.given_up,
            "given_up_recent": self.given_up_recent.count(),
            "recalls_pending": len(self.tombstones.pending(self.sink.name)) if self.recalls and self.tombstones else 0,
            "last_error": self.last_error,
            "healthy": not self.failing_since,
            "misconfigured": self.misconfigured,
        }
