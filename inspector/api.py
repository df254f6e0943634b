"""The JSON API over captures (``/api/captures``)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request

from inspector import queries
from inspector.web import store

router = APIRouter(prefix="/api", tags=["captures"])


@router.get("/captures")
def list_captures(
    request: Request,
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
    items = queries.list_captures(store(request), flt, limit, offset)
    return {"items": items, "limit": limit, "offset": offset}


@router.get("/captures/{capture_id}")
def get_capture(request: Request, capture_id: str) -> dict[str, Any]:
    """One whole capture record."""
    row = queries.get_capture(store(request), parse_id(capture_id))
    if row is None:
        raise HTTPException(404, f"no capture {capture_id}")
    return row


def parse_id(capture_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(capture_id)
    except ValueError:
        raise HTTPException(400, f"not a capture id: {capture_id!r}") from None
