"""What the proxy does when a client leaves in the middle of a response."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prompttap.collector.config import Settings
from prompttap.collector.exchange import Exchange
from prompttap.collector.upstream import Connection

Receive = Callable[[], Awaitable[dict[str, Any]]]


class ClientGone:
    """What to do when the client leaves mid-response.

    A stream whose generation had finished (a finish/stop event was seen) is drained a
    little longer, bounded in time and bytes, so the capture keeps its usage and counts as
    ``ok``. An unfinished stream is cancelled upstream, since it would keep spending tokens.
    A non-stream response is already generated: it is read to its end.
    """

    __slots__ = ("conn", "deadline", "ex", "happened", "limit", "settings", "streaming")

    def __init__(self, conn: Connection, ex: Exchange, streaming: bool, settings: Settings) -> None:
        self.conn, self.ex, self.streaming, self.settings = conn, ex, streaming, settings
        self.happened = False
        self.deadline = 0.0
        self.limit = 0

    async def watch(self, receive: Receive, pump: asyncio.Future[None] | None) -> None:
        if pump is not None:
            await asyncio.wait({pump})  # the request body's pump reads receive() until it is done
        while (await receive())["type"] != "http.disconnect":
            pass
        self.mark()
        if self.ex.outcome == "client_cancelled":
            self.conn.abort()  # wakes the relay loop at once, and ends the upstream request

    def mark(self) -> None:
        if self.happened:
            return
        self.happened = True
        if self.streaming and not self.ex.response.finished_seen():
            self.ex.fail("client_cancelled", "client disconnected before the response finished")
        else:
            self.deadline = time.monotonic() + self.settings.drain_after_finish_seconds
            self.limit = self.ex.response.size + self.settings.drain_after_finish_bytes

    def keep_draining(self) -> bool:
        self.mark()
        if self.ex.outcome == "client_cancelled":
            return False
        return not self.streaming or (time.monotonic() < self.deadline and self.ex.response.size < self.limit)

    def settle(self) -> None:
        if self.happened and self.ex.outcome == "client_cancelled":
            self.conn.abort()
