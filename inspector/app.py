"""The inspector: a FastAPI app over the capture store.

Pages and their JSON twins live in small router modules; this module only assembles
them, so each feature stays in its own file (mitmproxy's addons, Datasette's views).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles

from prompttap.inspector import api, pages
from prompttap.inspector.diff import routes as diff_routes
from prompttap.inspector.export import routes as export_routes
from prompttap.inspector.security import protect
from prompttap.inspector.web import STATIC_DIR


def create_app(client: Any, health: Callable[[], dict[str, Any]] | None = None, **options: Any) -> FastAPI:
    app = FastAPI(title="prompttap inspector", version="0.1.0")
    app.state.store = client
    app.state.health = health or (lambda: {"status": "ok"})
    app.state.options = options

    @app.get("/healthz", tags=["health"])
    def healthz(verbose: bool = False) -> JSONResponse:
        """Liveness: 200 while prompttap serves traffic (restart it only when this fails). With
        ``verbose=1``, readiness, as ``/readyz``."""
        return readyz() if verbose else _health("live")

    @app.get("/readyz", tags=["health"])
    def readyz() -> JSONResponse:
        """Readiness: store, spool and sinks, and drops, give-ups and refusals in the last minutes
        (``window_s``); 503 with ``problems`` while recording needs attention."""
        return _health("ready")

    def _health(kind: str) -> JSONResponse:
        status = app.state.health()
        return JSONResponse(status, status_code=200 if status.get(kind, status.get("status") == "ok") else 503)

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        """Per-sink queue depth, spool size, exported/failed counts (Prometheus text format)."""
        render = options.get("metrics")
        return PlainTextResponse(render() if render else "", media_type="text/plain; version=0.0.4")

    # The feature routers; order matters only for overlapping paths.
    for router in (api.router, pages.router, diff_routes.router, export_routes.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    return protect(app)  # CSP, token login and CSRF on every response: secure by default
