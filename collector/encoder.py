"""The encoder: turns spooled capture records into sink payloads, in a child process.

Enrichment (parsing every API, pricing, thread inference) and serialization are pure
CPU work. Done on a thread of the proxy's process they hold the GIL and stretch the
proxy's latency tail (measured: p99 from under 1 ms to tens of ms). So they run in one
spawned child process, sequentially (thread inference needs captures in order), and the
sink threads only do I/O — OpenTelemetry's processor → exporter split, with the
processor moved out of process.

The data itself bypasses the proxy's process where it can: the encoder reads each batch
from the spool's files (``ReadPlan``) and, for a sink running the embedded engine, writes
the payload to a file that the engine inserts from. Copying a batch (a thousand records,
megabytes of payload) through the pipe and pickle holds the GIL in long C calls the event
loop cannot cut short. Measured at c=1: proxy p99 1.9-2.8 ms that way, 1.1-1.7 ms now,
0.7 ms with no sink running at all.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prompttap.collector.spool import Batch, ReadPlan

log = logging.getLogger("prompttap.encoder")


class EncoderError(RuntimeError):
    """The encoder made no payload. With ``retry`` the cause was not the records (the process died, or
    reading the spool or writing the payload file failed): the batch stays in the spool for a retry.
    Otherwise the records themselves failed, and the recorder isolates the ones at fault."""

    def __init__(self, message: str, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry


class Encoder:
    """Client side: ``encode(kind, options, records)`` returns (payload, rows, rejected)."""

    def __init__(self, max_body_bytes: int | None = None) -> None:
        self.max_body_bytes = max_body_bytes  # serve's --max-body-bytes (None: its default); no body decodes past it
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._warm_rows: list[dict[str, Any]] = []
        self._forgotten: frozenset[str] = frozenset()
        self.restarts = 0

    def start(self, warm_rows: list[dict[str, Any]] | None = None) -> None:
        self._warm_rows = warm_rows or []
        with self._lock:
            self._spawn()

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def _spawn(self) -> None:
        # A fresh interpreter (never a fork of the process holding the embedded engine),
        # talking over a socketpair; plain subprocess, so no multiprocessing helper process.
        import socket

        parent, child = socket.socketpair()
        limit = [] if self.max_body_bytes is None else [str(self.max_body_bytes)]
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "prompttap.collector.encoder", str(child.fileno()), *limit],
            pass_fds=[child.fileno()],
            env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_root(), os.environ.get("PYTHONPATH")]))},
        )
        child.close()
        self._conn = Connection(parent.detach())
        if self._warm_rows:
            self._call(("warm", self._warm_rows))
        if self._forgotten:
            self._call(("forget", self._forgotten))

    def forget(self, capture_ids: frozenset[str]) -> None:
        """From now on, skip the records of these captures (deleted for privacy: ``collector.tombstones``):
        no payload made after this returns holds them, and the enrichment cache lets them go."""
        with self._lock:
            self._forgotten = capture_ids
            if self._conn is not None:
                try:
                    self._call(("forget", capture_ids))
                except EncoderError as exc:
                    if not exc.retry:
                        raise
                    log.warning("encoder restarted while told of deleted captures (the new one knows): %s", exc)

    def _call(self, message: tuple[Any, ...]) -> Any:
        assert self._conn is not None
        try:
            self._conn.send(message)
            status, value = self._conn.recv()
        except (EOFError, OSError, BrokenPipeError) as exc:
            self.restarts += 1
            log.error("encoder process died (%s); restarting it", exc)
            self._kill()
            self._spawn()
            raise EncoderError(f"encoder process died: {exc!r}", retry=True) from None
        if status != "ok":
            raise EncoderError(value, retry=status == "retry")
        return value

    def encode(self, kind: str, options: dict[str, Any], records: Sequence[bytes]) -> tuple[bytes, int]:
        """Payload for ``kind`` from raw spool records, and how many rows it holds."""
        with self._lock:
            return self._call(("encode", kind, options, list(records)))

    def encode_planned(
        self, kind: str, options: dict[str, Any], plan: ReadPlan, to_file: Path | None = None
    ) -> tuple[bytes | Path, int, Batch]:
        """Payload for ``kind`` from the records the encoder reads from the spool by ``plan`` (or the file
        ``to_file`` it wrote the payload to), the rows it holds, and the batch read (without its records:
        they never enter this process)."""
        with self._lock:
            return self._call(("encode_planned", kind, options, plan, to_file))

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(5)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.send(("stop",))
                    if self._proc is not None:
                        self._proc.wait(5)
                except (OSError, subprocess.TimeoutExpired):
                    pass
                self._kill()
                self._conn.close()
                self._conn = None


def serve(conn: Connection, max_body_bytes: int | None = None) -> None:
    """The child process: answer encode requests until told to stop."""
    import orjson

    from prompttap.collector.enrich import Enricher
    from prompttap.collector.sinks.encoders import ENCODERS
    from prompttap.collector.spool import read_planned

    enricher = Enricher() if max_body_bytes is None else Enricher(max_body_bytes)
    forgotten: frozenset[str] = frozenset()  # ids of captures deleted for privacy: never encoded again
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        try:
            if message[0] == "stop":
                conn.send(("ok", None))
                return
            if message[0] == "warm":
                enricher.warm(message[1])
                conn.send(("ok", None))
                continue
            if message[0] == "forget":
                forgotten = message[1]
                enricher.forget(forgotten)
                conn.send(("ok", None))
                continue
            t0 = time.perf_counter()
            if message[0] == "encode_planned":
                _, kind, options, plan, to_file = message
                batch = read_planned(plan)
                # only the batch's bounds go back: its records and their positions stay here
                records, batch.records, batch.ends = batch.records, [], []
            else:
                _, kind, options, records = message
                batch = to_file = None
            parsed = (orjson.loads(raw) for raw in records)
            rows = [enricher(rec) for rec in parsed if rec.get("id") not in forgotten]
            payload = ENCODERS[kind](rows, **options)
            log.debug("encoded %d %s rows in %.1f ms", len(rows), kind, (time.perf_counter() - t0) * 1000)
            if to_file is not None:
                to_file.write_bytes(payload)
                payload = to_file
            conn.send(("ok", (payload, len(rows)) if batch is None else (payload, len(rows), batch)))
        except OSError as exc:  # the spool's files or the payload file: not the records' fault
            conn.send(("retry", f"{type(exc).__name__}: {exc}"))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


def _root() -> str:
    """The folder holding the ``collector`` package, so the child imports the same code."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


if __name__ == "__main__":
    import signal

    # Ctrl-C reaches the whole process group; the parent decides when the encoder stops
    # (it sends "stop", or the socket closes when the parent is gone).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from prompttap.collector.memory import compact_malloc
    from prompttap.collector.priority import background

    compact_malloc()  # the encoder's batches are the biggest blocks it allocates
    background()  # under full load the proxy wins the CPU; the spool absorbs the encoder's lag
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(Connection(int(sys.argv[1])), int(sys.argv[2]) if len(sys.argv) > 2 else None)
