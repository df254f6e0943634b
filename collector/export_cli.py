"""``prompttap export``: captured conversations as fine-tuning data (issue #6).

The engine is ``inspector.export``; this module finds where to run it and shows progress.

Where the captures are read (the embedded store belongs to one process):

1. ``--server URL`` or ``PROMPTTAP_SERVER``: through that inspector's ``/api/export``.
2. A ClickHouse server store (``--store http(s)://...``): opened directly, it takes any
   number of clients.
3. Embedded store: if ``<home>/spool/LOCK`` is locked (a ``prompttap serve`` on this home
   holds it for its whole life; probed with a shared non-blocking flock that is released
   at once), or opening the store says another process has it, the export goes through
   the inspector at the ``--ui`` address (flag, ``PROMPTTAP_UI``, config file, default
   127.0.0.1:8788), after checking with ``/api/export/info`` that it serves this very
   store. If no such inspector answers, a one-line error says what to do. Otherwise the
   store is opened read-only by this process for the duration of the export.

Nothing here writes to the store, so a server started while an export holds it fails
to start with its usual "store in use" error and corrupts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from collector.config import Settings

FORMATS = ("openai-chat", "anthropic", "sharegpt", "parquet", "langfuse")


class CliError(RuntimeError):
    """The export cannot run; the message is the one line the user sees."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``export`` subcommand's flags (called by ``collector.cli.build_parser``)."""
    p.add_argument("--format", required=True, choices=FORMATS, help="output format")
    p.add_argument("--out", metavar="PATH", help="file to write ('-': stdout, JSONL formats); optional for langfuse")
    p.add_argument("--dataset", metavar="NAME", help="langfuse: dataset to add the items to")
    f = p.add_argument_group("filters (default: successful, complete answers of chat APIs)")
    f.add_argument("--since", metavar="WHEN", help="ISO 8601 time or an age (30m, 24h, 7d)")
    f.add_argument("--until", metavar="WHEN", help="ISO 8601 time or an age")
    f.add_argument("--route", metavar="NAME")
    f.add_argument("--model", metavar="MODEL", help="model requested")
    f.add_argument("--api", metavar="API", help="e.g. openai.chat, anthropic.messages")
    f.add_argument("--status", type=int, metavar="CODE", help="HTTP status the client got")
    f.add_argument("--outcome", metavar="OUTCOME", help="ok (default), a comma list, or 'any'")
    f.add_argument("--template", metavar="ID", help="prompt template id")
    f.add_argument("--thread", metavar="ID", help="thread id")
    f.add_argument("--session", metavar="ID", help="X-Prompttap-Session")
    f.add_argument("--user", metavar="ID", help="X-Prompttap-User")
    f.add_argument("--tag", metavar="TAG", help="X-Prompttap-Tags contains TAG")
    f.add_argument("--min-output-tokens", type=int, metavar="N")
    f.add_argument("--id", dest="ids", action="append", metavar="CAPTURE_ID", help="capture id (repeatable)")
    f.add_argument("--ids-file", metavar="FILE", help="capture ids, one per line ('-': stdin)")
    f.add_argument(
        "--include-incomplete",
        action="store_true",
        help="also answers that are cut, cancelled, truncated or not 2xx",
    )
    q = p.add_argument_group("dataset quality")
    q.add_argument("--per-capture", action="store_true", help="every capture, not one (the longest) per thread")
    q.add_argument("--no-dedupe", action="store_true", help="keep identical prompt+answer pairs")
    q.add_argument("--redact", action="store_true", help="scrub e-mails, phone numbers, IPs and API keys")
    q.add_argument("--split", type=float, metavar="FRACTION", help="write train/validation files, by thread")
    s = p.add_argument_group("where the captures are")
    s.add_argument("--server", metavar="URL", help="a running prompttap's inspector URL (env PROMPTTAP_SERVER)")
    s.add_argument("--home", metavar="DIR", help="data folder (default ./.prompttap)")
    s.add_argument("--store", metavar="DSN", help="chdb:///path or http(s)://user:pass@host:8123/db")
    s.add_argument("--config", metavar="FILE", help="prompttap.toml")
    s.add_argument("--ui", metavar="HOST:PORT", help="inspector address of a running prompttap serve")
    p.add_argument("--no-progress", action="store_true", help="no progress output")
    p.add_argument("--json", action="store_true", help="print the final report as JSON")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Entry point from ``collector.cli.main``."""
    try:
        params = request_params(args)
        _check_outputs(args)
        if args.format == "langfuse":
            LangfusePush.check_env()
        from inspector.export import ExportError, parse_request

        try:
            sel, opts = parse_request(params)
        except ExportError as exc:
            raise CliError(str(exc)) from None
        report_stream = sys.stderr if args.out == "-" else sys.stdout
        progress = Progress(enabled=not args.no_progress, unit="captures" if args.per_capture else "conversations")
        for noisy in ("httpx", "httpcore", "langfuse"):  # one line per request otherwise
            logging.getLogger(noisy).setLevel(logging.WARNING)
        source = locate(settings, args.server or os.environ.get("PROMPTTAP_SERVER"))
        out = Path(args.out) if args.out and args.out != "-" else None
        pusher = LangfusePush(args.dataset) if args.format == "langfuse" else None
        try:
            report = source.export(params, sel, opts, out, progress, pusher)
        finally:
            source.close()
            if pusher is not None:
                pusher.close()
        progress.finish()
        report["redact"] = opts.redact
        report["source"] = source.describe()
        if pusher is not None:
            report["langfuse"] = {"dataset": pusher.dataset, "items": pusher.pushed}
        print_report(report, report_stream, as_json=args.json)
        return 0 if not report.get("error") else 1
    except CliError as exc:
        print(f"prompttap: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("prompttap: export interrupted; no file was written", file=sys.stderr)
        return 130


def request_params(args: argparse.Namespace) -> dict[str, Any]:
    """The export request in ``inspector.export.parse_request``'s (and the API's) terms."""
    ids = list(args.ids or [])
    if args.ids_file:
        try:
            text = sys.stdin.read() if args.ids_file == "-" else Path(args.ids_file).read_text()
        except OSError as exc:
            raise CliError(f"cannot read --ids-file {args.ids_file}: {exc.strerror}") from None
        ids += [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    params: dict[str, Any] = {
        "format": args.format,
        "since": args.since,
        "until": args.until,
        "route": args.route,
        "model": args.model,
        "api": args.api,
        "status": args.status,
        "outcome": args.outcome,
        "template": args.template,
        "thread": args.thread,
        "session": args.session,
        "user": args.user,
        "tag": args.tag,
        "min_output_tokens": args.min_output_tokens,
        "ids": ids,
        "include_incomplete": args.include_incomplete,
        "per_capture": args.per_capture,
        "dedupe": not args.no_dedupe,
        "redact": args.redact,
        "split": args.split,
        "dataset": args.dataset,
    }
    return {k: v for k, v in params.items() if v not in (None, [], "")}


def _check_outputs(args: argparse.Namespace) -> None:
    if args.format == "langfuse":
        if not args.dataset:
            raise CliError("--format langfuse needs --dataset NAME")
    elif not args.out:
        raise CliError(f"--format {args.format} needs --out PATH")
    if args.out == "-" and (args.format == "parquet" or args.split):
        raise CliError("--out - (stdout) works for one JSONL file: not with parquet or --split")
    if args.format == "langfuse" and args.split:
        raise CliError("--split makes files; a Langfuse dataset takes the whole selection (drop --split)")


# ------------------------------------------------------------------------------------ locating


def locate(settings: Settings, server: str | None) -> Source:
    """Where to read the captures (see the module docstring)."""
    token = str(getattr(settings, "ui_token", "") or os.environ.get("PROMPTTAP_UI_TOKEN") or "")
    if server:
        return ServerSource(server.rstrip("/"), expect_store=None, token=token)
    from schemas.store import StoreError, open_store

    dsn = settings.store_dsn
    if not dsn.startswith("chdb://"):
        try:
            return StoreSource(open_store(dsn))
        except StoreError as exc:
            raise CliError(str(exc)) from None
    path = Path(dsn[len("chdb://") :])
    if spool_locked(settings.spool_dir):
        return _running_server(settings, dsn, f"a running `prompttap serve` owns {settings.home}", token)
    if not path.is_dir():
        raise CliError(f"no store at {path}: nothing captured there yet (check --home or --store)")
    try:
        return StoreSource(open_store(dsn))
    except StoreError as exc:
        if "another process" not in str(exc):
            raise CliError(str(exc)) from None
        return _running_server(settings, dsn, f"the store {path} is open in another process", token)


def spool_locked(spool_dir: Path) -> bool:
    """True while a ``prompttap serve`` holds this spool (its LOCK file is flock'd)."""
    lock = spool_dir / "LOCK"
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _running_server(settings: Settings, dsn: str, why: str, token: str) -> ServerSource:
    remedy = "or stop it and export again"
    if settings.ui is None:
        raise CliError(
            f"{why}; pass --server http://HOST:PORT with the --ui address of that server (it must run with "
            f"its inspector on), {remedy}"
        )
    host, port = settings.ui
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    source = ServerSource(url, expect_store=dsn, token=token)
    try:
        source.check()
    except CliError as exc:
        raise CliError(f"{why}, and {exc}; pass --server http://HOST:PORT (its --ui address), {remedy}") from None
    return source


# ------------------------------------------------------------------------------------ sources


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
        from inspector.export import store_uri

        return f"store {store_uri(self.client)}"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()

    def export(self, params, sel, opts, out, progress, pusher):  # type: ignore[no-untyped-def]
        import dataclasses

        from inspector.export import PARTS, Export, part_path

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
            from inspector.export import first_line

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

        from inspector.export import PARTS, part_path

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


# ------------------------------------------------------------------------------------ langfuse


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


# ------------------------------------------------------------------------------------ output


class Progress:
    """A progress line on a terminal (redrawn in place), plain count lines otherwise."""

    def __init__(self, enabled: bool = True, unit: str = "rows", stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.unit = unit
        self.tty = self.stream.isatty()
        self.t0 = time.monotonic()
        self.last = 0.0
        self.drawn = False
        self.state: tuple[int, int, int, int] = (0, 0, 0, 0)

    def update(self, done: int, total: int, report: Any, size: int = 0) -> None:
        skipped = sum(report.skipped.values()) if report is not None and hasattr(report, "skipped") else 0
        self.state = (done, total, skipped, size)
        now = time.monotonic()
        if not self.enabled or now - self.last < (0.1 if self.tty else 5.0):
            return
        self.last = now
        self._draw()

    def _draw(self) -> None:
        done, total, skipped, size = self.state
        elapsed = max(time.monotonic() - self.t0, 1e-6)
        if size:
            text = f"{size / 2**20:,.1f} MiB written ({total:,} {self.unit}), {size / 2**20 / elapsed:,.1f} MiB/s"
        else:
            pct = f" ({100 * done / total:.0f}%)" if total else ""
            text = f"{done:,}/{total:,} {self.unit}{pct}, {done / elapsed:,.0f}/s"
            if skipped:
                text += f", {skipped:,} skipped"
        text += f", {elapsed:,.1f}s"
        if self.tty:
            width = 24
            frac = min(done / total, 1.0) if total and not size else 0.0
            bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
            self.stream.write(f"\r\x1b[Kexport [{bar}] {text}")
            self.drawn = True
        else:
            self.stream.write(f"export: {text}\n")
        self.stream.flush()

    def finish(self) -> None:
        if not self.enabled:
            return
        self._draw()
        if self.tty and self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def print_report(report: dict[str, Any], stream: IO[str], as_json: bool = False) -> None:
    if as_json:
        import json

        stream.write(json.dumps(report, sort_keys=True) + "\n")
        stream.flush()
        return
    seconds = float(report.get("seconds") or 0)
    exported = int(report.get("exported") or 0)
    rate = f" ({exported / seconds:,.0f}/s)" if seconds > 0 else ""
    files = report.get("files") or []
    where = f" to {', '.join(files)}" if files else ""
    lines = [f"exported {exported:,} conversations as {report.get('format')}{where} in {seconds:.1f}s{rate}"]
    if report.get("source"):
        lines.append(f"  read from the {report['source']}")
    lines.append(
        f"  selected {report.get('conversations', 0):,} conversations from {report.get('captures', 0):,} captures; "
        f"{report.get('duplicates', 0):,} duplicates removed"
    )
    skipped = int(report.get("skipped") or 0)
    if skipped:
        reasons = "; ".join(f"{n:,} x {why}" for why, n in (report.get("skipped_reasons") or {}).items())
        lines.append(f"  skipped {skipped:,} invalid: {reasons}")
    else:
        lines.append("  skipped 0 invalid")
    if report.get("redact"):
        kinds = report.get("redactions") or {}
        lines.append("  redacted: " + ", ".join(f"{kinds.get(k, 0):,} {k}" for k in ("email", "phone", "ip", "secret")))
    if report.get("split"):
        lines.append("  split: " + ", ".join(f"{part} {n:,}" for part, n in report["split"].items()))
    if report.get("langfuse"):
        lf = report["langfuse"]
        lines.append(f"  langfuse: {lf['items']:,} items in dataset {lf['dataset']!r}")
    if report.get("dropped_parts"):
        parts = ", ".join(f"{n:,} {kind}" for kind, n in report["dropped_parts"].items())
        lines.append(f"  content parts the format cannot hold, dropped: {parts}")
    stream.write("\n".join(lines) + "\n")
    stream.flush()
