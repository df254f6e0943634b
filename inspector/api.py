"""The JSON API: captures, templates, threads, stats, replay, delete (``/api/...``).

Every inspector page has its JSON twin here; the pages (``inspector.pages``) call the same
functions, so the two never disagree.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from prompttap.inspector import queries, replay, views
from prompttap.inspector.web import store

router = APIRouter(prefix="/api", tags=["captures"])

_RELATIVE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_instant(value: str | None, name: str) -> datetime | None:
    """ISO 8601 (naive = UTC), or a relative age such as ``15m``, ``24h``, ``7d`` (that long ago)."""
    if value is None or not value.strip():
        return None
    m = _RELATIVE.match(value)
    if m:
        return datetime.now(UTC) - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    try:
        return queries.parse_time(value)
    except ValueError:
        raise HTTPException(400, f"{name} must be ISO 8601 or an age like 15m, 24h, 7d; got {value!r}") from None


def capture_filter(
    route: str | None = None,
    model: str | None = None,
    status: Annotated[int | None, Query(ge=0, le=999)] = None,
    outcome: str | None = None,
    api: str | None = None,
    thread: str | None = None,
    session: str | None = None,
    template: Annotated[str | None, Query(description="prompt_template_id")] = None,
    user: str | None = None,
    tag: str | None = None,
    q: Annotated[str | None, Query(description="full-text search: every word in the prompt or output")] = None,
    since: Annotated[str | None, Query(description="ISO 8601 or an age: 15m, 24h, 7d")] = None,
    until: Annotated[str | None, Query(description="ISO 8601 or an age: 15m, 24h, 7d")] = None,
) -> queries.CaptureFilter:
    return queries.CaptureFilter(
        route=route or None,
        model=model or None,
        status=status,
        outcome=outcome or None,
        api=api or None,
        thread=thread or None,
        session=session or None,
        template=template or None,
        user=user or None,
        tag=tag or None,
        q=q or None,
        since=parse_instant(since, "since"),
        until=parse_instant(until, "until"),
    )


Filter = Annotated[queries.CaptureFilter, Depends(capture_filter)]


def parse_cursor(value: str | None, name: str) -> queries.Cursor | None:
    if not value:
        return None
    try:
        return queries.Cursor.parse(value)
    except ValueError:
        raise HTTPException(400, f"{name} must be a cursor <started_at>,<id> as returned in 'next'") from None


def capture_page(
    request: Request,
    flt: queries.CaptureFilter,
    limit: int,
    offset: int = 0,
    before: str | None = None,
    after: str | None = None,
    tail: str | None = None,
) -> dict[str, Any]:
    """One page of captures and the cursors around it."""
    b, a = parse_cursor(before, "before"), parse_cursor(after, "after")
    recorded_after = parse_instant(tail, "tail")
    items = queries.list_captures(store(request), flt, limit, offset, before=b, after=a, recorded_after=recorded_after)
    newest_recorded = max((i["recorded_at"] for i in items), default=None)
    older = queries.cursor_of(items[-1]) if items and (len(items) == limit or a is not None) else None
    newer = queries.cursor_of(items[0]) if items and (b is not None or a is not None) else None
    return {
        "items": items,
        "limit": limit,
        "offset": offset,
        "next": older,  # pass as before= for the next (older) page
        "prev": newer,  # pass as after= for the previous (newer) page
        "tail": newest_recorded or tail,  # pass as tail= to poll for captures stored since
    }


@router.get("/captures")
def list_captures(
    request: Request,
    flt: Filter,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    before: Annotated[str | None, Query(description="keyset cursor: captures older than this")] = None,
    after: Annotated[str | None, Query(description="keyset cursor: captures newer than this")] = None,
    tail: Annotated[str | None, Query(description="live tail: captures stored after this instant")] = None,
) -> dict[str, Any]:
    """Captures, newest first, filtered; keyset pagination with ``before``/``after`` cursors."""
    return capture_page(request, flt, limit, offset, before, after, tail)


@router.get("/filters")
def filter_values(request: Request) -> dict[str, list[str]]:
    """Routes, models, APIs and outcomes seen (the captures page's filter pickers)."""
    return queries.filter_options(store(request))


@router.get("/search/explain", tags=["captures"])
def explain(request: Request, flt: Filter, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict[str, Any]:
    """ClickHouse's ``EXPLAIN indexes = 1`` for the list query with these filters: shows which
    indexes prune granules (``idx_search`` for ``q``)."""
    plan = queries.explain_search(store(request), flt, limit)
    return {"plan": plan, "uses_search_index": "idx_search" in plan}


@router.get("/captures/{capture_id}")
def get_capture(request: Request, capture_id: str) -> dict[str, Any]:
    """One whole capture record, plus ``links`` to its thread, template, neighbours and replays."""
    row = queries.get_capture(store(request), parse_id(capture_id))
    if row is None:
        raise HTTPException(404, f"no capture {capture_id}")
    row["links"] = views.capture_links(request, row)
    return row


@router.get("/captures/{capture_id}/replays")
def list_replays(request: Request, capture_id: str) -> dict[str, Any]:
    """Captures that replay this one (``replay_of``), newest first."""
    return {"items": queries.replays_of(store(request), str(parse_id(capture_id)))}


@router.delete("/captures/{capture_id}")
def delete_capture(request: Request, capture_id: str) -> dict[str, Any]:
    """Delete a capture (privacy request) wherever prompttap put it: first the running collector
    tombstones it, so that no sink sends it again from the spool and no re-delivery inserts it again,
    removes it from ``rejected/`` and asks Langfuse to delete its trace (``recalled``); then its row in
    ``captures`` and its span in ``otel_traces`` go (lightweight DELETE). ``not_recallable`` names the
    sinks that keep whatever they were sent (a generic OTLP endpoint has no delete)."""
    return forget_capture(request, parse_id(capture_id))


def forget_capture(request: Request, capture_id: uuid.UUID) -> dict[str, Any]:
    """The delete behind both the API and the page's button; 404 when nothing knew the capture."""
    row = queries.get_capture(store(request), capture_id)
    on_delete = (request.app.state.options or {}).get("on_delete")  # the collector's, from prompttap.serve
    elsewhere = on_delete(str(capture_id), row["trace_id"] if row else None) if on_delete else {}
    in_store = queries.delete_capture(store(request), capture_id)
    if not in_store and not elsewhere.get("found"):
        raise HTTPException(404, f"no capture {capture_id}")
    return {"deleted": str(capture_id), **{k: v for k, v in elsewhere.items() if k != "found"}}


@router.post("/captures/{capture_id}/delete")
def delete_capture_post(request: Request, capture_id: str) -> dict[str, Any]:
    """Same as ``DELETE /api/captures/{id}``, for clients that only POST."""
    return delete_capture(request, capture_id)


@router.post("/captures/{capture_id}/replay")
async def replay_capture(
    request: Request,
    capture_id: str,
    changes: Annotated[dict[str, Any] | None, Body(examples=[{"model": "gpt-4o-mini", "temperature": 0.2}])] = None,
    wait: Annotated[float, Query(ge=0, le=120, description="seconds to wait for the new capture")] = 20.0,
) -> JSONResponse:
    """Send the captured request again, through the proxy, to its upstream.

    Body (all optional): ``model``, ``temperature``, ``system_prompt``. The upstream key comes
    from ``--upstream-key ROUTE=ENV_VAR``, never from the capture. Answers 200 with the new
    capture's ``id`` and ``diff_url`` once it is stored, or 202 with ``pending`` and ``poll_url``."""
    original = await run_in_threadpool(queries.get_capture, store(request), parse_id(capture_id))
    if original is None:
        raise HTTPException(404, f"no capture {capture_id}")
    try:
        result = await replay.replay(request, original, changes or {}, wait)
    except replay.ReplayError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    return JSONResponse(result, status_code=202 if result.get("pending") else 200)


@router.get("/rejected", tags=["health"])
def list_rejected(request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    """Records a sink refused, set aside in ``<home>/rejected/``: ``count``, and the newest ``items``
    (sink, capture ``id``, ``at``, the sink's ``reason``). A capture the store refused is not in the list
    of captures until it is retried."""
    return collector_call(request, "rejected")(limit)


@router.post("/rejected/retry", tags=["health"])
def retry_rejected(request: Request) -> dict[str, Any]:
    """Send every set-aside record again to the sink that refused it, once the cause is fixed: what was
    ``delivered`` leaves ``rejected/``; what is ``refused`` again stays with the new reason; what its sink
    could not take now (down, no longer configured) is ``not_sent``. ``prompttap rejected retry`` calls
    this while ``prompttap serve`` owns the store."""
    return collector_call(request, "retry_rejected")()


def collector_call(request: Request, name: str) -> Any:
    """A function the running collector lent the inspector (``prompttap.serve``), or 503 without one."""
    call = (request.app.state.options or {}).get(name)
    if call is None:
        raise HTTPException(503, "this inspector runs without prompttap's collector: nothing was set aside here")
    return call


@router.get("/templates", tags=["templates"])
def list_templates(request: Request, flt: Filter, limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> dict[str, Any]:
    """Prompt templates (captures grouped by ``prompt_template_id``), most recently seen first."""
    return {"items": views.template_list(store(request), flt, limit)}


@router.get("/templates/{template_id}", tags=["templates"])
def get_template(
    request: Request, template_id: str, limit: Annotated[int, Query(ge=1, le=1000)] = 200
) -> dict[str, Any]:
    """One template: its constant text with variable slots, and each member's slot values."""
    detail = views.template_detail(store(request), template_id, limit)
    if detail is None:
        raise HTTPException(404, f"no captures with template {template_id}")
    return detail


@router.get("/threads/{thread_id}", tags=["threads"])
def get_thread(request: Request, thread_id: str, limit: Annotated[int, Query(ge=1, le=2000)] = 500) -> dict[str, Any]:
    """One conversation's captures in order, with what changed in the prompt turn by turn."""
    detail = views.thread_detail(store(request), thread_id, limit)
    if detail is None:
        raise HTTPException(404, f"no captures in thread {thread_id}")
    return detail


@router.get("/stats", tags=["stats"])
def get_stats(request: Request, flt: Filter) -> dict[str, Any]:
    """Requests, error rate, latency and TTFT percentiles over time; tokens and cost by model and route."""
    return queries.stats(store(request), flt)


def parse_id(capture_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(capture_id)
    except ValueError:
        raise HTTPException(400, f"not a capture id: {capture_id!r}") from None
