"""``prompttap serve``: the collector's server with the inspector mounted on ``--ui``.

The one place where the two parts meet: the collector runs the proxy, the spool and the
sinks; the inspector reads the same store and is told what it needs of the running
collector (its health, its metrics, the records its sinks refused and how to retry them, what
else to do when a capture is deleted, the proxy's address for replays). Other commands find
the inspector through the home folder (``schemas.home``): recorded here while it serves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prompttap.collector.config import Settings
from prompttap.collector.server import App, StartupError
from prompttap.collector.server import serve as serve_collector
from prompttap.inspector.app import create_app
from prompttap.schemas.home import forget_inspector, local_url, record_inspector


def serve(settings: Settings, environ: Mapping[str, str]) -> int:
    """Run until SIGTERM/SIGINT; returns the exit status."""
    options = inspector_options(settings, environ)  # checked before anything starts

    def inspector(app: App) -> Any:
        recorder = app.recorder
        ui = create_app(
            app.store,
            app.health,
            metrics=app.metrics,
            rejected=lambda limit: recorder.rejected.listing(limit, reasons=True),
            retry_rejected=recorder.retry_rejected,
            on_delete=recorder.forget,  # a privacy delete reaches the spool, rejected/ and Langfuse too
            **options,
        )
        if settings.ui:  # always, when asked for; the spool lock is ours by now
            record_inspector(settings.home, local_url(*settings.ui))
        return ui

    try:
        return serve_collector(settings, inspector)
    finally:
        forget_inspector(settings.home)


def inspector_options(settings: Settings, environ: Mapping[str, str]) -> dict[str, Any]:
    """What the inspector needs from the settings: the proxy's own address and routes (replays
    go through it), the UI token and the host names it answers to, each route's upstream key
    read from its env var now (never logged), Langfuse."""
    keys = {}
    for route, var in settings.upstream_keys.items():
        if not environ.get(var):
            raise StartupError(f"--upstream-key {route}={var}: the environment variable {var} is not set")
        keys[route] = environ[var]
    return {
        "proxy_url": local_url(*settings.listen),
        "routes": tuple(settings.routes),
        "ui_token": settings.ui_token or None,
        "ui_host": settings.ui[0] if settings.ui else None,
        "ui_allowed_hosts": settings.ui_allowed_hosts,
        "upstream_keys": keys,
        "langfuse_url": (environ.get("LANGFUSE_BASE_URL") or environ.get("LANGFUSE_HOST") or "").strip() or None,
    }
