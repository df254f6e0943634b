"""Serving a test double (an ASGI app) with uvicorn on a background thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable

import uvicorn


def start_in_thread(server: uvicorn.Server, serve: Callable[[], Awaitable[None]], name: str) -> threading.Thread:
    """Run ``serve()`` (usually ``server.serve(sockets=[sock])``) on a daemon thread and wait
    until uvicorn reports it started."""
    thread = threading.Thread(target=lambda: asyncio.run(serve()), name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{name} failed to start")
        time.sleep(0.005)
    return thread


def stop_thread(server: uvicorn.Server, thread: threading.Thread) -> None:
    """Ask uvicorn to exit, forcing it if open connections keep it past 10 s."""
    server.should_exit = True
    thread.join(10)
    if thread.is_alive():
        server.force_exit = True
        thread.join(5)
