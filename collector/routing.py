"""Which upstream a request goes to, and the exact bytes of the target it is sent to.

Routing reads the raw request path, as the client sent it: nothing is percent-decoded,
re-encoded or normalised on the way, so ``%3F`` stays a character of the path and never
becomes a query. A path whose dot segments (``..``, ``%2e%2e``, ``.%2E``...) would climb above
its route's prefix is refused, so ``/app/../other/...`` cannot reach another route's upstream.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from prompttap.collector.config import Upstream


class RouteError(ValueError):
    """The request cannot be routed; the message is the client's 400."""


class Router:
    def __init__(self, default: Upstream, routes: dict[str, Upstream]) -> None:
        self.default = default
        self.routes = {name.encode("ascii"): upstream for name, upstream in routes.items()}

    def route(self, raw_path: bytes, query: bytes) -> tuple[Upstream, bytes]:
        """The upstream and the request target (path and query, raw) to send it."""
        upstream, rest = self.default, raw_path
        if self.routes:
            first, _, tail = raw_path[1:].partition(b"/")
            named = self.routes.get(first)
            if named is not None:
                upstream, rest = named, b"/" + tail
        return upstream, target(upstream, rest, query)


def target(upstream: Upstream, rest: bytes, query: bytes) -> bytes:
    """The request target for ``rest`` (a raw path below the route) at ``upstream``; RouteError
    when its dot segments would leave the upstream's own path."""
    path = upstream.target_path(rest.decode("latin-1")).encode("latin-1")
    # Measured below the upstream's own path: segments the join merged into it count as prefix.
    if climbs_out(path[len(upstream.prefix) :]):
        raise RouteError("the request path climbs above its route with dot segments ('..'); refused")
    return path + (b"?" + query if query else b"")


def climbs_out(path: bytes) -> bool:
    """Would resolving the dot segments of ``path`` (as any server might, after percent-decoding
    it and treating backslashes and ``;params`` loosely) go above its first segment's parent?"""
    if b"." not in path and b"%" not in path:
        return False
    depth = 0
    for segment in unquote_to_bytes(path).replace(b"\\", b"/").split(b"/"):
        name = segment.split(b";", 1)[0]
        if name == b"..":
            depth -= 1
            if depth < 0:
                return True
        elif name not in (b"", b"."):
            depth += 1
    return False
