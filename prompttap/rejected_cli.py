"""``prompttap rejected list|retry``: the records a sink refused, set aside in ``<home>/rejected/``.

``list`` reads the folder (files only: safe while ``serve`` runs). ``retry`` sends each record again to
the sink that refused it. The embedded store belongs to one process, so while a ``prompttap serve``
runs on the home the retry goes through that server's inspector (``POST /api/rejected/retry``, found
through ``schemas.home``); a server without its inspector (``--no-ui``) is told apart with a clear
message, never fought for the store. With no server running, this process opens the store and the
sinks itself, holding the spool's lock meanwhile, so a ``serve`` started then waits for nothing
half done: it refuses to start ("spool in use") until the retry is over.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from prompttap.collector.config import Settings
from prompttap.collector.rejected import RejectedRecords
from prompttap.schemas.home import inspector_url, serving

REPORT_KEYS = (("delivered", "delivered"), ("refused", "refused again"), ("not_sent", "not sent"))


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rejected", help="list the records a sink refused (kept in <home>/rejected/), or retry them")
    p.add_argument("action", choices=("list", "retry"), help="list them, or send each again to its sink")
    p.add_argument("--home", metavar="DIR", help="data folder, as given to serve (default ./.prompttap)")
    p.add_argument("--store", metavar="DSN", help="the store, as given to serve (retry with no server running)")
    p.add_argument("--config", metavar="FILE", help="prompttap.toml, as given to serve")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "list":
        return _list(settings, args.json)
    try:
        report = _retry_through_server(settings) if serving(settings.home) else _retry_here(settings)
    except RetryError as exc:
        print(f"prompttap: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, label in REPORT_KEYS:
            for item in report[key]:
                why = item.get("reason") or item.get("error") or ""
                print(f"{label:14} {item['sink']:12} {item['id']}  {why}".rstrip())
        print(", ".join(f"{len(report[k])} {label}" for k, label in REPORT_KEYS))
    return 0 if not (report["refused"] or report["not_sent"]) else 1


class RetryError(Exception):
    """The retry could not run at all; the message says what to do."""


def _list(settings: Settings, as_json: bool) -> int:
    folder = settings.home / "rejected"
    listing = RejectedRecords(folder).listing(reasons=True)
    if as_json:
        print(json.dumps(listing, indent=2))
        return 0
    for item in listing["items"]:
        print(f"{item['at'][:19]}  {item['sink']:12} {item['id']}  {item.get('reason', '')[:200]}")
    print(f"{listing['count']} record(s) set aside in {folder}")
    return 0


def _retry_through_server(settings: Settings) -> dict[str, Any]:
    """A ``serve`` owns the store: its inspector runs the retry (its sinks, its encoder, one at a time)."""
    import httpx

    url = inspector_url(settings.home)
    if url is None:
        raise RetryError(
            f"a prompttap serve runs on {settings.home} without its inspector (--no-ui), and it owns the store: "
            "stop it and run `prompttap rejected retry` again, or restart it with its inspector on"
        )
    token = settings.ui_token or os.environ.get("PROMPTTAP_UI_TOKEN") or ""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        # Loopback: never through an HTTP proxy from the environment. Each record is one insert: no read timeout.
        r = httpx.post(
            f"{url}/api/rejected/retry", headers=headers, trust_env=False, timeout=httpx.Timeout(30.0, read=None)
        )
    except httpx.HTTPError as exc:
        raise RetryError(f"the running prompttap serve's inspector at {url} did not answer: {exc}") from None
    if r.status_code in (401, 403):
        raise RetryError(f"the inspector at {url} refused the retry: set PROMPTTAP_UI_TOKEN to its --ui-token")
    if r.status_code != 200:
        raise RetryError(f"the inspector at {url} answered HTTP {r.status_code}: {r.text[:300]}")
    return r.json()


def _retry_here(settings: Settings) -> dict[str, Any]:
    """No server runs: open the store, the spool (its lock keeps a ``serve`` out meanwhile), the sinks
    and the encoder as ``serve`` would, without listening or draining, and retry."""
    from prompttap.collector.server import App, StartupError

    if not RejectedRecords(settings.home / "rejected").entries():  # nothing to open the store for
        return {key: [] for key, _ in REPORT_KEYS}
    try:
        app = App(settings)
    except (StartupError, RuntimeError) as exc:  # RuntimeError: the spool is in use (a serve just started)
        raise RetryError(f"cannot open {settings.home} to retry: {exc}") from None
    try:
        app.encoder.start(app._recent_threads())  # a retried capture joins its conversation's thread
        return app.recorder.retry_rejected()
    finally:
        app.recorder.close(timeout=0)
