"""HTTP: ``POST /api/export`` streams the same file ``prompttap export`` writes.

An export is started by a POST only, so the security layer's Origin and CSRF checks apply
to it (a GET that started one could be triggered by any page's link or image); ``GET
/api/export`` answers 405. Over HTTP a split is one request per part (``split=0.9,
part=train``); the CLI makes both. The final report (exported, skipped with reasons,
duplicates, redactions) of an HTTP export is kept for ``GET /api/export/reports/{id}`` (id
in ``X-Prompttap-Export-Id``). The capture list's Export form (``POST /api/export/form``,
with its CSRF token) takes the list's filters from the ``export_filters`` template global.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import queue
import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from prompttap.inspector.export.engine import (
    Export,
    Report,
    export_client,
    file_suffix,
    first_line,
    is_embedded,
    store_uri,
)
from prompttap.inspector.export.request import FORMATS, ExportError, parse_request
from prompttap.inspector.web import store, templates

router = APIRouter(prefix="/api", tags=["export"])
_REPORTS_KEPT = 100


def _reports(request: Request) -> OrderedDict[str, Report]:
    state = request.app.state
    if not hasattr(state, "export_reports"):
        state.export_reports = OrderedDict()
    return state.export_reports


@router.get("/export/info")
def export_info(request: Request) -> dict[str, Any]:
    """The store this inspector reads (so ``prompttap export`` can check it talks to the
    server that owns its store) and the export formats."""
    return {"store": store_uri(store(request)), "formats": list(FORMATS)}


@router.post("/export")
def export_post(
    request: Request,
    body: Annotated[
        dict[str, Any],
        Body(examples=[{"format": "openai-chat", "since": "7d", "route": "app", "redact": True}]),
    ],
) -> StreamingResponse:
    """Stream the selected conversations as a fine-tuning file (JSONL or Parquet).

    The body is the export request as a JSON object: ``format`` (one of the export formats),
    the filters of ``prompttap export`` (``since``, ``until``, ``route``, ``model``, ``api``,
    ``status``, ``outcome``, ``template``, ``thread``, ``session``, ``user``, ``tag``,
    ``min_output_tokens``, ``ids``, ``include_incomplete``), ``per_capture``, ``dedupe``,
    ``redact``, ``split`` with ``part``, and ``dataset`` (langfuse).

    Headers: ``X-Prompttap-Export-Id`` (for ``/api/export/reports/{id}``),
    ``X-Prompttap-Export-Total`` (rows to format), ``-Captures``, ``-Conversations``,
    ``-Duplicates``. ``langfuse`` streams the dataset items as JSONL (the CLI pushes them).
    """
    return _start(request, body)


@router.get("/export/reports/{export_id}")
def export_report(request: Request, export_id: str) -> JSONResponse:
    """The report of an export started on this inspector (``done`` once its file ended)."""
    report = _reports(request).get(export_id)
    if report is None:
        raise HTTPException(404, f"no export {export_id}")
    return JSONResponse(report.as_dict())


def _start(request: Request, params: Mapping[str, Any]) -> StreamingResponse:
    try:
        sel, opts = parse_request(params)
    except ExportError as exc:
        raise HTTPException(400, str(exc)) from None
    base = store(request)
    export_id = uuid.uuid4().hex
    # The counts run before the response starts: their numbers go in the headers, and a
    # bad selection is a clean 4xx/5xx instead of a truncated download.
    with export_client(base) as (client, settings):
        job = Export(client, sel, opts, settings)
        try:
            counts = job.prepare()
        except Exception as exc:
            raise HTTPException(500, f"export failed: {exc}") from None
    reports = _reports(request)
    reports[export_id] = job.report
    while len(reports) > _REPORTS_KEPT:
        reports.popitem(last=False)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    name = f"prompttap-{opts.format}-{stamp}{'.' + opts.part if opts.part else ''}{file_suffix(opts.format)}"
    headers = {
        "Content-Disposition": f'attachment; filename="{name}"',
        "X-Prompttap-Export-Id": export_id,
        "X-Prompttap-Export-Total": str(job.total),
        "X-Prompttap-Export-Captures": str(counts.captures),
        "X-Prompttap-Export-Conversations": str(counts.conversations),
        "X-Prompttap-Export-Duplicates": str(counts.duplicates),
    }
    media = "application/vnd.apache.parquet" if opts.format == "parquet" else "application/x-ndjson"
    return StreamingResponse(_pipe(lambda: _produce(base, job)), media_type=media, headers=headers)


def _produce(base: Any, job: Export) -> Iterator[bytes]:
    """The file's bytes, produced in a worker thread (the ClickHouse client is synchronous)."""
    with export_client(base) as (client, settings):
        job.client, job.settings = client, settings
        try:
            if job.opts.format != "parquet":
                yield from job.lines()
            elif is_embedded(client):
                yield from _parquet_via_file(job)
            else:
                job.parquet_counts()
                yield from job.parquet_stream()
        except Exception as exc:
            job.report.error = first_line(exc)
            raise


def _parquet_via_file(job: Export) -> Iterator[bytes]:
    # chDB materializes Parquet in memory when asked for bytes; INTO OUTFILE writes it
    # with ClickHouse's own writer in row groups, and the file is streamed from disk.
    job.parquet_counts()
    tmp = Path(tempfile.mkdtemp(prefix="prompttap-export-"))
    try:
        path = tmp / "export.parquet"
        job.parquet_to_file(path)
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_DONE = object()


async def _pipe(produce: Callable[[], Iterator[bytes]], depth: int = 8) -> AsyncIterator[bytes]:
    """Run a blocking byte producer in its own thread behind a bounded queue (memory
    stays flat; a slow reader slows the export down); stop it if the client goes away."""
    q: queue.Queue[Any] = queue.Queue(depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.25)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            gen = produce()
            try:
                for chunk in gen:
                    if not put(chunk):
                        return
            finally:
                gen.close()
            put(_DONE)
        except BaseException as exc:
            put(exc)

    worker = threading.Thread(target=run, name="prompttap-export", daemon=True)
    worker.start()
    try:
        while True:
            item = await asyncio.to_thread(_get, q, stop)
            if item is _DONE or item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def _get(q: queue.Queue[Any], stop: threading.Event) -> Any:
    while not stop.is_set():
        try:
            return q.get(timeout=0.25)
        except queue.Empty:
            continue
    return None


# ------------------------------------------------------------------------------------ pages

# The capture list's filters export understands (its full-text ``q`` is not one of them).
_LIST_PARAMS = ("route", "model", "status", "outcome", "api", "thread", "session", "template", "user", "tag")
_LIST_PARAMS += ("since", "until")


def export_filters(request: Request) -> dict[str, str]:
    """The capture list's filters that export understands, for the Export form."""
    query = {name: request.query_params[name] for name in _LIST_PARAMS if request.query_params.get(name)}
    if query.get("outcome") and query["outcome"] != "ok":
        query["include_incomplete"] = "true"  # asking for failures means wanting them
    return query


@router.post("/export/form", include_in_schema=False)
async def export_form(request: Request) -> StreamingResponse:
    """The inspector's Export button: a CSRF-checked form POST that streams the same file."""
    form = await request.form()
    params = {k: v for k, v in form.items() if k != "csrf_token" and isinstance(v, str)}
    return await run_in_threadpool(_start, request, params)


templates.env.globals["export_filters"] = export_filters
templates.env.globals["export_formats"] = FORMATS
