"""``prompttap serve``: the proxy and the inspector in one process, one event loop.

Start-up order follows the data: store (open + migrate), spool, recorder and its sinks,
then the listening sockets, so nothing is accepted that could not be recorded. Shutdown
is the reverse: stop accepting, let in-flight exchanges finish, drain what the sinks
take within the grace period; the rest stays in the spool for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn

from prompttap.collector.config import Settings
from prompttap.collector.encoder import Encoder
from prompttap.collector.intercept.ca import CAError, LocalCA
from prompttap.collector.intercept.forward import ForwardProtocol, InterceptStats
from prompttap.collector.listener import ProxyProtocol
from prompttap.collector.memory import compact_malloc, release_startup_pages
from prompttap.collector.priority import GIL_SWITCH_INTERVAL, Priority
from prompttap.collector.proxy import Proxy
from prompttap.collector.recent import WINDOW_S
from prompttap.collector.recorder import Recorder
from prompttap.collector.sinks.base import Sink
from prompttap.collector.sinks.clickhouse import ClickHouseSink
from prompttap.collector.spool import Spool
from prompttap.schemas.store import open_migrated

log = logging.getLogger("prompttap")

DRAIN_ON_STOP = 5.0
"""Seconds the sinks get to drain on SIGTERM, after in-flight exchanges (``shutdown_timeout``):
together well inside a container's grace period (compose: 30 s); the rest waits in the spool."""


class StartupError(RuntimeError):
    """Start-up cannot continue; the message is the one line the user sees."""


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to ``serve`` (two servers, one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int, what: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise StartupError(f"cannot listen on {host}:{port} for the {what}: {reason}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class App:
    """Everything one ``prompttap serve`` process owns."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started = time.time()
        settings.home.mkdir(parents=True, exist_ok=True)
        try:
            self.store = open_migrated(settings.store_dsn, settings.retention_days)
        except Exception as exc:
            raise StartupError(str(exc)) from None
        sinks = self._sinks()
        self.spool = Spool(
            settings.spool_dir,
            consumers=[s.name for s in sinks],
            fsync_interval=settings.fsync_interval,
            max_bytes=settings.spool_max_bytes or None,
        )
        self.encoder = Encoder(settings.max_body_bytes)
        # Everything but the event loop (this thread) is background work; see collector.priority.
        self.priority = Priority(threading.get_native_id(), lambda: [p for p in [self.encoder.pid] if p])
        self.recorder = Recorder(
            self.spool, sinks, self.encoder, settings.home / "rejected", self.priority, settings.home / "payloads"
        )
        self.proxy = Proxy(settings, self.recorder.record)
        self.proxy.health = self.health
        self.proxy.metrics = self.metrics
        self.intercept = InterceptStats() if settings.intercept else None
        self.ca = self._ca() if settings.intercept else None

    def _ca(self) -> LocalCA:
        """The forward proxy's CA, made (or re-issued for a changed host list) now, before any client."""
        try:
            ca = LocalCA.load_or_create(self.settings.ca_dir, self.settings.intercept_hosts)
        except CAError as exc:
            raise StartupError(str(exc)) from None
        if ca.created:
            log.warning("created prompttap's CA %s: trust it (`prompttap ca`) or run apps under `prompttap run`",
                        ca.cert_path)  # fmt: skip
        elif ca.reissued:
            log.warning("re-issued prompttap's CA %s (%s): trust it again (`prompttap ca`)", ca.cert_path, ca.reason)
        return ca

    def _sinks(self) -> list[Sink]:
        """ClickHouse (captures and otel_traces) always; Langfuse and OTLP when configured."""
        from prompttap.collector.sinks.otel_clickhouse import OtelTracesSink
        from prompttap.collector.sinks.otlp import sinks_from_env

        try:
            remote = sinks_from_env(os.environ)
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        return [ClickHouseSink(self.store), OtelTracesSink(self.store), *remote]

    def _recent_threads(self) -> list[dict[str, Any]]:
        """Recent conversations, oldest first, so thread inference continues across restarts."""
        try:
            result = self.store.query(
                "SELECT id, route, session_id, prompt_template_id, messages, output_text, output_tool_calls, "
                "thread_id FROM captures WHERE thread_id != '' ORDER BY started_at DESC LIMIT 10000"
            )
            return [dict(zip(result.column_names, r, strict=True)) for r in reversed(result.result_rows)]
        except Exception as exc:  # a cold thread index only means new threads
            log.warning("could not warm thread inference from the store: %s", exc)
            return []

    def health(self) -> dict[str, Any]:
        """Liveness and readiness in one answer. ``live``: the process serves traffic (it does, if it
        answers). ``ready``: recording is healthy now: no capture dropped, no sink failing or refusing
        prompttap's credentials, none giving up or refusing captures in the last ``window_s``; otherwise
        ``problems`` says what. Counters are totals since start; ``*_recent`` counts are the window's."""
        stats = self.recorder.stats()
        window = round(WINDOW_S / 60)
        problems = []
        if stats["dropped_recent"]:
            problems.append(
                f"captures dropped in the last {window} min: {stats['dropped_recent']} ({stats['last_drop']})"
            )
        for name, sink in stats["sinks"].items():
            if sink["status"] != "ok":  # failing, or misconfigured: refuses our credentials
                problems.append(f"sink {name} {sink['status']}: {sink['last_error']}")
            if sink["given_up_recent"]:
                problems.append(
                    f"sink {name} gave up {sink['given_up_recent']} captures in the last {window} min "
                    "to keep room for the store"
                )
            if sink["rejected_recent"]:
                problems.append(
                    f"sink {name} refused {sink['rejected_recent']} captures in the last {window} min "
                    "(set aside: `prompttap rejected list`)"
                )
        return {
            "status": "ok" if not problems else "degraded",
            "live": True,
            "ready": not problems,
            "problems": problems,
            "window_s": WINDOW_S,
            "uptime_s": round(time.time() - self.started, 1),
            "inflight": self.proxy.inflight,
            **({"intercept": self.intercept.as_dict()} if self.intercept is not None else {}),
            **stats,
        }

    def metrics(self) -> str:
        from prompttap.collector.metrics import render

        return render(self.health())


def serve(settings: Settings, ui_app: Callable[[App], Any] | None = None) -> int:
    """Run until SIGTERM/SIGINT; returns the exit status. ``ui_app`` builds the ASGI app served
    on ``--ui`` from the running collector (the composition root passes the inspector)."""
    compact_malloc()
    app = App(settings)
    ui = ui_app(app) if settings.ui and ui_app is not None else None
    sockets = {"proxy": bind(*settings.listen, "proxy")}
    if ui is not None:
        sockets["inspector"] = bind(*settings.ui, "inspector")  # type: ignore[misc]
    if settings.intercept:
        sockets["forward proxy"] = bind(*settings.intercept_listen, "forward proxy")
    app.encoder.start(app._recent_threads())
    app.recorder.start()
    app.priority.apply()  # the engine's, the sinks' and the encoder's threads yield to the loop
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)  # ... and so does a Python thread holding the GIL
    release_startup_pages()
    gc.freeze()  # start-up objects live forever: keep them out of every GC pass on the hot path
    try:
        uvloop = __import__("uvloop")
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        runner(_run(app, ui, sockets))
    finally:
        log.info("stopping: draining the spool into the sinks (up to %g s)", DRAIN_ON_STOP)
        left = app.recorder.close(timeout=DRAIN_ON_STOP)
        log.info("prompttap stopped%s", f"; waiting in the spool for the next start: {left}" if left else "")
    return 0


async def _run(app: App, ui: Any, sockets: dict[str, socket.socket]) -> None:
    settings = app.settings
    proxy_cfg = uvicorn.Config(
        app.proxy,
        http=ProxyProtocol.with_limits(settings.max_header_bytes, settings.max_headers, settings.header_timeout),
        ws="none",  # no upgrades: an LLM API call is a request and a response
        loop="none",
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=settings.shutdown_timeout,
        server_header=False,
        date_header=False,
        proxy_headers=False,  # the proxy never reads scope["client"]: skip uvicorn's X-Forwarded-For rewrite
    )
    servers = [(_Server(proxy_cfg), sockets["proxy"])]
    if ui is not None:
        ui_cfg = uvicorn.Config(
            ui,
            loop="none",
            lifespan="off",
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=settings.shutdown_timeout,  # a live tail must not hold the exit
        )
        servers.append((_Server(ui_cfg), sockets["inspector"]))
    if app.ca is not None and app.intercept is not None:
        forward_cfg = uvicorn.Config(
            app.proxy,  # the same app: an intercepted request is recorded exactly as a routed one
            http=ForwardProtocol.configured(settings, app.ca, app.intercept),
            ws="none",
            loop="none",
            lifespan="off",  # the proxy's lifespan runs once, on its own server
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=settings.shutdown_timeout,
            server_header=False,
            date_header=False,
            proxy_headers=False,
        )
        servers.append((_Server(forward_cfg), sockets["forward proxy"]))

    def stop() -> None:
        for s, _ in servers:
            if s.should_exit:
                s.force_exit = True
            s.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    host, port = settings.listen
    log.info(
        "prompttap proxy on http://%s:%d -> %s%s; inspector %s; store %s",
        host,
        port,
        settings.upstream.url,
        "".join(f", /{n}/ -> {u.url}" for n, u in settings.routes.items()),
        f"on http://{settings.ui[0]}:{settings.ui[1]}" if settings.ui else "off",
        _redacted(settings.store_dsn),
    )
    if app.ca is not None:
        host, port = settings.intercept_listen
        log.info("forward proxy (HTTPS interception) on http://%s:%d for %d hosts; CA %s", host, port,
                 len(settings.intercept_hosts), app.ca.cert_path)  # fmt: skip
    await asyncio.gather(*(s.serve(sockets=[sock]) for s, sock in servers))


def _redacted(dsn: str) -> str:
    from prompttap.schemas.store import redact_dsn

    return redact_dsn(dsn)
