"""``prompttap export``: its flags, its run, its progress line and its report.

The engine is this package; ``sources`` finds where to run it (this process, or the
inspector of a running ``prompttap serve``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

from prompttap.inspector.export.errors import CliError
from prompttap.inspector.export.langfuse import LangfusePush
from prompttap.inspector.export.sources import Where, locate

FORMATS = ("openai-chat", "anthropic", "sharegpt", "parquet", "langfuse")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``export`` subcommand's flags (called by ``prompttap.cli.build_parser``)."""
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
    s.add_argument(
        "--server",
        metavar="URL",
        help="a running prompttap's inspector URL (env PROMPTTAP_SERVER; default: the one a `prompttap serve` "
        "on --home recorded there)",
    )
    s.add_argument("--home", metavar="DIR", help="data folder (default ./.prompttap)")
    s.add_argument("--store", metavar="DSN", help="chdb:///path or http(s)://user:pass@host:8123/db")
    s.add_argument("--config", metavar="FILE", help="prompttap.toml")
    s.add_argument(
        "--ui", metavar="HOST:PORT", help="inspector address of a running prompttap serve that recorded none"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress output")
    p.add_argument("--json", action="store_true", help="print the final report as JSON")


def run(args: argparse.Namespace, where: Where) -> int:
    """Entry point of ``prompttap export``."""
    try:
        params = request_params(args)
        _check_outputs(args)
        if args.format == "langfuse":
            LangfusePush.check_env()
        from prompttap.inspector.export import ExportError, parse_request

        try:
            sel, opts = parse_request(params)
        except ExportError as exc:
            raise CliError(str(exc)) from None
        report_stream = sys.stderr if args.out == "-" else sys.stdout
        progress = Progress(enabled=not args.no_progress, unit="captures" if args.per_capture else "conversations")
        for noisy in ("httpx", "httpcore", "langfuse"):  # one line per request otherwise
            logging.getLogger(noisy).setLevel(logging.WARNING)
        source = locate(where, args.server or os.environ.get("PROMPTTAP_SERVER"))
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
