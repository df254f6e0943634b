"""The inspector: a FastAPI app over the capture store.

Pages and their JSON twins live in small router modules; this module only assembles
them, so each feature stays in its own file (mitmproxy's addons, Datasette's views).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from prompttap.inspector import api
from prompttap.inspector.security import protect
from prompttap.inspector.web import STATIC_DIR

# Feature routers, included when present. Order matters only for overlapping paths.
ROUTER_MODULES = ("prompttap.inspector.pages", "prompttap.inspector.diff.routes", "prompttap.inspector.export")


def create_app(client: Any, health: Callable[[], dict[str, Any]] | None = None, **options: Any) -> FastAPI:
    app = FastAPI(title="prompttap inspector", version="0.1.0")
    app.state.store = client
    app.state.health = health or (lambda: {"status": "ok"})
    app.state.options = options

    @app.get("/healthz", tags=["health"])
    def healthz() -> JSONResponse:
        """Store, spool and sink status; 503 when something needs attention."""
        status = app.state.health()
        return JSONResponse(status, status_code=200 if status.get("status") == "ok" else 503)

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        """Per-sink queue depth, spool size, exported/failed counts (Prometheus text format)."""
        render = options.get("metrics")
        return PlainTextResponse(render() if render else "", media_type="text/plain; version=0.0.4")

    app.include_router(api.router)
    for name in ROUTER_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    return protect(app)  # CSP, token login and CSRF on every response: secure by default
