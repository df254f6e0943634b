"""The capture diff: ``/diff?a=ID&b=ID`` (page), ``/api/diff`` (its JSON twin) and the
compare-candidates list the capture page's "compare with…" picker reads."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse

from prompttap.inspector import queries
from prompttap.inspector.api import parse_id
from prompttap.inspector.diff import candidates
from prompttap.inspector.diff.model import CaptureDiff
from prompttap.inspector.diff.verdict import diff_captures
from prompttap.inspector.web import render, store

router = APIRouter()

_ID_HELP = "capture id (UUID)"


def _load(request: Request, a: str, b: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both captures, or HTTPException 400 (malformed id) / 404 (no such capture)."""
    ids = parse_id(a.strip()), parse_id(b.strip())
    rows = []
    for capture_id in ids:
        row = queries.get_capture(store(request), capture_id)
        if row is None:
            raise HTTPException(404, f"no capture {capture_id}")
        rows.append(row)
    return rows[0], rows[1]


@router.get("/diff", response_class=HTMLResponse, include_in_schema=False)
def diff_page(request: Request, a: str | None = None, b: str | None = None) -> Any:
    """The diff page; without both ids, a small form asking for them."""
    a, b = (a or "").strip(), (b or "").strip()
    context: dict[str, Any] = {"a": a, "b": b, "diff": None, "error": None}
    if not a or not b:
        return render(request, "diff.html", context)
    try:
        row_a, row_b = _load(request, a, b)
    except HTTPException as exc:
        context["error"] = exc.detail
        return render(request, "diff.html", context, status_code=exc.status_code)
    context["diff"] = diff_captures(row_a, row_b)
    return render(request, "diff.html", context)


@router.get(
    "/api/diff",
    tags=["diff"],
    response_model=CaptureDiff,
    responses={400: {"description": "malformed capture id"}, 404: {"description": "no such capture"}},
)
def diff_json(
    request: Request,
    a: Annotated[str, Query(description=f"{_ID_HELP}: the earlier/reference side")],
    b: Annotated[str, Query(description=f"{_ID_HELP}: the side compared with A")],
) -> dict[str, Any]:
    """Two captures compared segment by segment (model and parameters, system prompt, retrieved
    context, history, latest user message, tool steps, tools, output), with a plain verdict, a
    headline and a ``blame`` hint: ``prompt`` (the app sent a different request), ``upstream``
    (the same request, answered by a different model: a gateway routed or fell back), ``model``
    (the same request got a different answer) or ``none`` (identical).

    Each segment's ``status`` is what its sentence in the verdict says (e.g. the system prompt's
    ``instructions_identical``: only the retrieved context inside it differs). Flags named
    ``*_identical`` say what they compare: the system prompt's ``text_identical`` is the whole
    text, retrieved context included; ``instructions_identical`` leaves the context out. Each
    field is described in the schema."""
    row_a, row_b = _load(request, a, b)
    return dataclasses.asdict(diff_captures(row_a, row_b))


@router.get("/api/captures/{capture_id}/compare-candidates", tags=["diff"])
def compare_candidates(
    request: Request,
    capture_id: str,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    """Captures worth comparing with this one: same thread first, then same prompt template,
    then same route; newest first within each. Each item has ``id``, ``started_at``,
    ``model``, ``relation`` (thread/template/route), ``last_user`` (first words of the last
    user message) and ``diff_url`` (older capture as A)."""
    capture = parse_id(capture_id)
    items = candidates.compare_candidates(store(request), capture, limit)
    if items is None:
        raise HTTPException(404, f"no capture {capture_id}")
    return {"capture": str(capture), "items": items}
