"""The inspector's HTML pages. Each one renders data from the same functions as its JSON twin
in ``inspector.api``; templates escape everything (captured text is untrusted).

Routes: ``/`` (captures), ``/captures/{id}``, ``/templates``, ``/templates/{id}``,
``/threads/{id}``, ``/stats``, ``/rejected``, the replay, delete and retry form posts, and ``/login``/``/logout``
(``inspector.security``).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from prompttap.inspector import api, charts, queries, replay, security, views
from prompttap.inspector.web import render, store, templates

router = APIRouter(include_in_schema=False)
router.include_router(security.router)

PAGE_SIZE = 50


# --- template filters ----------------------------------------------------------------------------


def _ms(value: Any) -> str:
    if value is None:
        return "-"
    value = float(value)
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def _usd(value: Any) -> str:
    if value is None:
        return "-"
    value = float(value)
    return f"${value:.4f}" if value < 1 else f"${value:,.2f}"


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return "-"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"


def _when(value: Any) -> str:
    """ISO instant -> 'YYYY-MM-DD HH:MM:SS' (UTC)."""
    return str(value or "")[:19].replace("T", " ")


def _pct(value: Any) -> str:
    return "-" if value is None else f"{float(value) * 100:.1f}%"


templates.env.filters.update(ms=_ms, usd=_usd, num=_num, when=_when, pct=_pct)


def _query(params: dict[str, Any], **extra: Any) -> str:
    merged = {k: v for k, v in {**params, **extra}.items() if v not in (None, "")}
    return urlencode(merged)


# --- captures ------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def captures_page(
    request: Request,
    flt: api.Filter,
    before: str | None = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = PAGE_SIZE,
) -> Response:
    page = api.capture_page(request, flt, limit, 0, before, after)
    params = _raw_filter_params(request)
    first_page = not before and not after
    context = {
        "nav": "captures",
        "page": page,
        "filters": params,
        "options": queries.filter_options(store(request)),
        "next_url": f"/?{_query(params, before=page['next'])}" if page["next"] else None,
        "prev_url": f"/?{_query(params, after=page['prev'])}" if page["prev"] else None,
        "newest_url": f"/?{_query(params)}" if not first_page else None,
        "tail_url": f"/captures/rows?{_query(params)}" if first_page else None,
        "search_active": bool(flt.q),
    }
    return render(request, "captures.html", context)


@router.get("/captures/rows", response_class=HTMLResponse)
def capture_rows(request: Request, flt: api.Filter, tail: str | None = None) -> Response:
    """New rows for the live tail (an HTML fragment; ``X-Tail`` is the next cursor)."""
    page = api.capture_page(request, flt, 200, 0, None, None, tail)
    response = render(request, "_capture_rows.html", {"items": page["items"]})
    if page["tail"]:
        response.headers["x-tail"] = page["tail"]
    return response


def _raw_filter_params(request: Request) -> dict[str, str]:
    keys = ("route", "model", "status", "outcome", "api", "thread", "session", "template", "user", "tag", "q")
    out = {k: request.query_params.get(k, "") for k in (*keys, "since", "until", "limit")}
    return {k: v for k, v in out.items() if v}


@router.get("/captures/{capture_id}", response_class=HTMLResponse)
def capture_page(request: Request, capture_id: str, replay_pending: str | None = None) -> Response:
    row = queries.get_capture(store(request), api.parse_id(capture_id))
    if row is None:
        return render(request, "not_found.html", {"what": f"capture {capture_id}"}, status_code=404)
    options = request.app.state.options or {}
    links = views.capture_links(request, row)
    context = {
        "nav": "captures",
        "c": row,
        "chat": views.chat_view(row),
        "links": links,
        "params": views.pretty_json(row.get("params") or {}),
        "raw_request": views.pretty_body(row.get("request_body"), row.get("request_body_encoding")),
        "raw_response": views.pretty_body(row.get("response_body"), row.get("response_body_encoding")),
        "timeline": charts.stream_timeline(row.get("stream_timing") or [], row.get("duration_ms"), row.get("ttft_ms")),
        "replay_problem": replay.availability(options, row),
        "replay_pending": replay_pending,
        "message": request.query_params.get("message"),
    }
    return render(request, "capture.html", context)


@router.post("/captures/{capture_id}/replay")
async def replay_form(
    request: Request,
    capture_id: str,
    model: Annotated[str, Form()] = "",
    temperature: Annotated[str, Form()] = "",
    system_prompt: Annotated[str | None, Form()] = None,
    change_system: Annotated[str, Form()] = "",
) -> Response:
    """The replay button without JavaScript: replay, then open the diff (or the pending notice)."""
    original = await run_in_threadpool(queries.get_capture, store(request), api.parse_id(capture_id))
    if original is None:
        raise HTTPException(404, f"no capture {capture_id}")
    changes: dict[str, Any] = {"model": model, "temperature": temperature}
    if change_system and system_prompt is not None:
        changes["system_prompt"] = system_prompt.replace("\r\n", "\n")
    try:
        result = await replay.replay(request, original, changes, 20.0)
    except replay.ReplayError as exc:
        return RedirectResponse(f"/captures/{capture_id}?{urlencode({'message': str(exc)})}", status_code=303)
    if result.get("id"):
        return RedirectResponse(result["diff_url"], status_code=303)
    return RedirectResponse(f"/captures/{capture_id}?replay_pending={result['request_sha256']}", status_code=303)


@router.post("/captures/{capture_id}/delete")
def delete_form(request: Request, capture_id: str) -> Response:
    api.forget_capture(request, api.parse_id(capture_id))
    return RedirectResponse(f"/?{urlencode({'deleted': capture_id})}", status_code=303)


# --- records a sink refused ----------------------------------------------------------------------


@router.get("/rejected", response_class=HTMLResponse)
def rejected_page(request: Request) -> Response:
    """What the sinks refused, set aside in ``rejected/`` (the JSON twin: ``/api/rejected``)."""
    listing = api.collector_call(request, "rejected")(200)
    context = {"nav": "rejected", "listing": listing, "message": request.query_params.get("message")}
    return render(request, "rejected.html", context)


@router.post("/rejected/retry")
def rejected_retry_form(request: Request) -> Response:
    report = api.collector_call(request, "retry_rejected")()
    counts = ", ".join(f"{len(report[k])} {k.replace('_', ' ')}" for k in ("delivered", "refused", "not_sent"))
    return RedirectResponse(f"/rejected?{urlencode({'message': f'Retried: {counts}.'})}", status_code=303)


# --- templates and threads -----------------------------------------------------------------------


@router.get("/templates", response_class=HTMLResponse)
def templates_page(request: Request, flt: api.Filter) -> Response:
    items = views.template_list(store(request), flt, 200)
    context = {"nav": "templates", "items": items, "filters": _raw_filter_params(request)}
    return render(request, "templates.html", context)


@router.get("/templates/{template_id}", response_class=HTMLResponse)
def template_page(request: Request, template_id: str) -> Response:
    detail = views.template_detail(store(request), template_id, 200)
    if detail is None:
        return render(request, "not_found.html", {"what": f"template {template_id}"}, status_code=404)
    return render(request, "template.html", {"nav": "templates", "t": detail})


@router.get("/threads/{thread_id}", response_class=HTMLResponse)
def thread_page(request: Request, thread_id: str) -> Response:
    detail = views.thread_detail(store(request), thread_id, 500)
    if detail is None:
        return render(request, "not_found.html", {"what": f"thread {thread_id}"}, status_code=404)
    return render(request, "thread.html", {"nav": "captures", "thread": detail})


# --- stats ---------------------------------------------------------------------------------------


@router.get("/stats", response_class=HTMLResponse)
def stats_page(request: Request, flt: api.Filter) -> Response:
    s = queries.stats(store(request), flt)
    points = s["over_time"]
    error_points = [{**p, "error_rate": (p["errors"] / p["requests"] * 100) if p["requests"] else 0.0} for p in points]
    context = {
        "nav": "stats",
        "s": s,
        "filters": _raw_filter_params(request),
        "options": queries.filter_options(store(request)),
        "chart_set": {
            "requests": charts.time_bars(points, ("requests", "errors"), ("bar", "bar-err")),
            "latency": charts.time_lines(
                points,
                [
                    ("latency p50", "latency_ms.p50", "l1"),
                    ("latency p95", "latency_ms.p95", "l2"),
                    ("TTFT p50", "ttft_ms.p50", "l3"),
                    ("TTFT p95", "ttft_ms.p95", "l4"),
                ],
                " ms",
            ),
            "errors": charts.time_lines(error_points, [("error rate", "error_rate", "l2")], "%"),
            "tokens_by_model": charts.hbars(
                [{**r, "tokens": r["input_tokens"] + r["output_tokens"]} for r in s["by_model"]], "tokens"
            ),
            "cost_by_model": charts.hbars(s["by_model"], "cost_usd", digits=4),
            "tokens_by_route": charts.hbars(
                [{**r, "tokens": r["input_tokens"] + r["output_tokens"]} for r in s["by_route"]], "tokens"
            ),
            "cost_by_route": charts.hbars(s["by_route"], "cost_usd", digits=4),
        },
        "generated_at": datetime.now().isoformat(timespec="seconds"),
    }
    return render(request, "stats.html", context)
