"""Where ``prompttap export`` reads the captures (the embedded store belongs to one process).

1. ``--server URL`` or ``PROMPTTAP_SERVER``: through that inspector's ``/api/export``.
2. A ClickHouse server store (``--store http(s)://...``): opened directly, it takes any
   number of clients.
3. Embedded store: if a ``prompttap serve`` runs on this home (``schemas.home``: it holds
   the spool lock), or opening the store says another process has it, the export goes
   through that server's inspector: at the address the server recorded in its home, else
   at the ``--ui`` address (flag, ``PROMPTTAP_UI``, config file, default 127.0.0.1:8788),
   after checking with ``/api/export/info`` that it serves this very store. If no such
   inspector answers, a one-line error says what to do. Otherwise the store is opened
   read-only by this process for the duration of the export.

Nothing here writes to the store, so a server started while an export holds it fails
to start with its usual "store in use" error and corrupts nothing.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from prompttap.inspector.export.errors import CliError
from prompttap.schemas.home import inspector_url, local_url, serving

if TYPE_CHECKING:
    from prompttap.inspector.export.cli import Progress
    from prompttap.inspector.export.langfuse import LangfusePush


@dataclass(frozen=True, slots=True)
class Where:
    """What export needs to know of a prompttap set-up: its data folder, store and inspector."""

    home: Path
    store_dsn: str
    ui: tuple[str, int] | None
    ui_token: str = ""


def locate(settings: Where, server: str | None) -> Source:
    """Where to read the captures (see the module docstring)."""
    token = settings.ui_token or os.environ.get("PROMPTTAP_UI_TOKEN") or ""
    if server:
        return ServerSource(server.rstrip("/"), expect_store=None, token=token)
    from prompttap.schemas.store import StoreError, open_store

    dsn = settings.store_dsn
    if not dsn.startswith("chdb://"):
        try:
            return StoreSource(open_store(dsn))
        except StoreError as exc:
            raise CliError(str(exc)) from None
    path = Path(dsn[len("chdb://") :])
    if serving(settings.home):
        return _running_server(settings, dsn, f"a running `prompttap serve` owns {settings.home}", token)
    if not path.is_dir():
        raise CliError(f"no store at {path}: nothing captured there yet (check --home or --store)")
    try:
        return StoreSource(open_store(dsn))
    except StoreError as exc:
        if "another process" not in str(exc):
            raise CliError(str(exc)) from None
        return _running_server(settings, dsn, f"the store {path} is open in another process", token)


def _running_server(settings: Where, dsn: str, why: str, token: str) -> ServerSource:
    remedy = "or stop it and export again"
    url = inspector_url(settings.home)  # where that server said its inspector listens
    if url is None:
        if settings.ui is None:
            raise CliError(
                f"{why}; pass --server http://HOST:PORT with the --ui address of that server (it must run with "
                f"its inspector on), {remedy}"
            )
        url = local_url(*settings.ui)
    source = ServerSource(url, expect_store=dsn, token=token)
    try:
        source.check()
    except CliError as exc:
        raise CliError(f"{why}, and {exc}; pass --server http://HOST:PORT (its --ui address), {remedy}") from None
    return source


class Source:
    def export(
        self,
        params: dict[str, Any],
        sel: Any,
        opts: Any,
        out: Path | None,
        progress: Progress,
        pusher: LangfusePush | None,
    ) -> dict[str, Any]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def describe(self) -> str:
        raise NotImplementedError


class StoreSource(Source):
    """This process owns the store: run the engine here."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def describe(self) -> str:
        from prompttap.inspector.export import store_uri

        return f"store {store_uri(self.client)}"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()

    def export(self, params, sel, opts, out, progress, pusher):  # type: ignore[no-untyped-def]
        import dataclasses

        from prompttap.inspector.export import PARTS, Export, part_path

        try:
            if opts.format == "parquet":
                parts = [(p, part_path(out, p)) for p in PARTS] if opts.split else [(None, out)]
                merged: dict[str, Any] | None = None
                files = []
                for part, path in parts:
                    job = Export(self.client, sel, dataclasses.replace(opts, part=part))
                    job.prepare()
                    with _atomic(path) as tmp, _watch_file(tmp, progress, job.total):
                        job.parquet_counts()
                        job.parquet_to_file(tmp)
                    files.append(str(path))
                    merged = merge_reports(merged, job.report.as_dict())
                assert merged is not None
                merged["files"] = files
                return merged
            job = Export(self.client, sel, opts, progress=lambda done, r: progress.update(done, job.total, r))
            job.prepare()
            progress.update(0, job.total, job.report)
            files = []
            with contextlib.ExitStack() as stack:
                sinks: dict[str, IO[bytes]] = {}
                if out is None and pusher is None:
                    sinks[""] = sys.stdout.buffer
                elif out is not None and opts.split:
                    for part in PARTS:
                        path = part_path(out, part)
                        sinks[part] = stack.enter_context(_atomic_open(path))
                        files.append(str(path))
                elif out is not None:
                    sinks[""] = stack.enter_context(_atomic_open(out))
                    files.append(str(out))
                import orjson

                for part, record in job.records():
                    if pusher is not None:
                        pusher.push(record)
                    sink = sinks.get(part) or sinks.get("")
                    if sink is not None:
                        sink.write(orjson.dumps(record) + b"\n")
            report = job.report.as_dict()
            report["files"] = files
            return report
        except CliError:
            raise
        except Exception as exc:
            from prompttap.inspector.export import first_line

            raise CliError(f"export failed: {first_line(exc)}") from None


class ServerSource(Source):
    """A running prompttap owns the store: stream the file from its inspector."""

    def __init__(self, url: str, expect_store: str | None, token: str = "") -> None:
        import httpx

        self.url = url
        self.expect_store = expect_store
        # An inspector protected with --ui-token takes the token as a bearer (no CSRF needed).
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # Loopback servers must not go through an HTTP proxy from the environment.
        self.http = httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(30.0, read=None), trust_env=False)

    def close(self) -> None:
        self.http.close()

    def describe(self) -> str:
        return f"server {self.url}"

    def check(self) -> None:
        import httpx

        try:
            r = self.http.get("/api/export/info", timeout=5)
        except httpx.HTTPError:
            raise CliError(f"no prompttap inspector answers at {self.url}") from None
        if r.status_code == 404:
            raise CliError(f"the inspector at {self.url} has no export API (a prompttap older than export?)")
        if r.status_code in (401, 403):
            raise CliError(f"the inspector at {self.url} wants its UI token: set PROMPTTAP_UI_TOKEN")
        if r.status_code != 200:
            raise CliError(f"the inspector at {self.url} answered {r.status_code}")
        store = str(r.json().get("store") or "")
        if self.expect_store and _store_key(store) != _store_key(self.expect_store):
            raise CliError(f"the inspector at {self.url} reads another store ({store})")

    def export(self, params, sel, opts, out, progress, pusher):  # type: ignore[no-untyped-def]
        import httpx

        from prompttap.inspector.export import PARTS, part_path

        try:
            if opts.split:
                merged: dict[str, Any] | None = None
                files = []
                for part in PARTS:
                    path = part_path(out, part) if out is not None else None
                    merged = merge_reports(merged, self._one({**params, "part": part}, path, opts, progress, pusher))
                    if path is not None:
                        files.append(str(path))
                assert merged is not None
                merged["files"] = files
                return merged
            report = self._one(params, out, opts, progress, pusher)
            report["files"] = [str(out)] if out is not None else []
            return report
        except httpx.HTTPError as exc:
            raise CliError(f"export through {self.url} failed: {exc}") from None

    def _one(self, params, out, opts, progress, pusher) -> dict[str, Any]:  # type: ignore[no-untyped-def]
        import orjson

        # No cookies: the inspector sets a CSRF cookie on every answer, and a POST carrying it
        # counts as a browser's (which must echo it); a CLI has no ambient credential at all.
        self.http.cookies.clear()
        with self.http.stream("POST", "/api/export", json=params) as r:
            if r.status_code != 200:
                r.read()
                try:
                    detail = r.json().get("detail")
                except ValueError:
                    detail = r.text[:300]
                raise CliError(f"the inspector at {self.url} refused the export ({r.status_code}): {detail}")
            total = int(r.headers.get("x-prompttap-export-total") or 0)
            export_id = r.headers.get("x-prompttap-export-id", "")
            with contextlib.ExitStack() as stack:
                sink: IO[bytes] | None = None
                if out is not None:
                    sink = stack.enter_context(_atomic_open(out))
                elif pusher is None:
                    sink = sys.stdout.buffer
                lines = 0
                size = 0
                pending = b""
                progress.update(0, total, None)
                for chunk in r.iter_bytes():
                    if sink is not None:
                        sink.write(chunk)
                    size += len(chunk)
                    if opts.format == "parquet":
                        progress.update(0, total, None, size=size)
                        continue
                    lines += chunk.count(b"\n")
                    if pusher is not None:
                        pending += chunk
                        *complete, pending = pending.split(b"\n")
                        for line in complete:
                            if line.strip():
                                pusher.push(orjson.loads(line))
                    progress.update(lines, total, None)
                report_r = self.http.get(f"/api/export/reports/{export_id}", timeout=30)
                report = report_r.json() if report_r.status_code == 200 else {"error": "the server lost the report"}
                if report.get("error"):
                    raise CliError(f"the export failed on the server: {report['error']}")
        return report


def _store_key(dsn: str) -> str:
    if dsn.startswith("chdb://"):
        return "chdb://" + os.path.realpath(dsn[len("chdb://") :])
    return dsn


def merge_reports(a: dict[str, Any] | None, b: dict[str, Any]) -> dict[str, Any]:
    """Reports of the two parts of a split: selection numbers once, output numbers added."""
    if a is None:
        return dict(b)
    out = dict(a)
    for key in ("exported", "skipped"):
        out[key] = int(a.get(key) or 0) + int(b.get(key) or 0)
    out["seconds"] = round(float(a.get("seconds") or 0) + float(b.get("seconds") or 0), 3)
    for key in ("skipped_reasons", "redactions", "dropped_parts", "split"):
        merged = Counter(a.get(key) or {})
        merged.update(b.get(key) or {})
        out[key] = dict(merged)
    out["error"] = a.get("error") or b.get("error") or ""
    out["done"] = bool(a.get("done")) and bool(b.get("done"))
    return out


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces it only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def _atomic_open(path: Path) -> Iterator[IO[bytes]]:
    with _atomic(path) as tmp, open(tmp, "wb", buffering=1 << 20) as f:
        yield f


@contextlib.contextmanager
def _watch_file(path: Path, progress: Progress, total: int) -> Iterator[None]:
    """Progress for a file ClickHouse writes itself: its size, polled."""
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(0.2):
            with contextlib.suppress(OSError):
                progress.update(0, total, None, size=path.stat().st_size)

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()
