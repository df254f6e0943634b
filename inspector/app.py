"""The inspector: a FastAPI app over the capture store.

For now the JSON API the CLI contract names (``/api/captures``, ``/api/captures/{id}``,
``/healthz``); the HTML pages build on the same queries.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import JSONResponse

from inspector import queries


def create_app(client: Any, health: Callable[[], dict[str, Any]] | None = None) -> FastAPI:
    app = FastAPI(title="prompttap inspector", version="0.1.0")

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        """Store and spool status; 503 when something needs attention."""
        status = health() if health else {"status": "ok"}
        return JSONResponse(status, status_code=200 if status.get("status") == "ok" else 503)

    @app.get("/api/captures")
    def list_captures(
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
        route: str | None = None,
        model: str | None = None,
        status: Annotated[int | None, Query(ge=0, le=999)] = None,
        outcome: str | None = None,
        api: str | None = None,
        thread: str | None = None,
        session: str | None = None,
    ) -> dict[str, Any]:
        """Captures, newest first."""
        flt = queries.CaptureFilter(route, model, status, outcome, api, thread, session)
        items = queries.list_captures(client, flt, limit, offset)
        return {"items": items, "limit": limit, "offset": offset}

    @app.get("/api/captures/{capture_id}")
    def get_capture(capture_id: str) -> dict[str, Any]:
        """One whole capture record."""
        try:
            cid = uuid.UUID(capture_id)
        except ValueError:
            raise HTTPException(400, f"not a capture id: {capture_id!r}") from None
        row = queries.get_capture(client, cid)
        if row is None:
            raise HTTPException(404, f"no capture {capture_id}")
        return row

    return app
