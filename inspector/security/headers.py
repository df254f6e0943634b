"""The headers every inspector response carries, and the cookies it sets.

A strict Content-Security-Policy, nosniff, a same-origin referrer policy, no framing, no caching
of captured data. FastAPI's ``/docs`` and ``/redoc`` get a CSP of their own (see ``docs_csp``).
"""

from __future__ import annotations

import base64
import hashlib
import re

from starlette.datastructures import MutableHeaders
from starlette.types import Message, Scope, Send

CSP = (
    "default-src 'self'; img-src 'self' data: https:; script-src 'self'; style-src 'self'; "
    "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
# FastAPI's /docs and /redoc load their UI from a CDN with one inline bootstrap script; they show
# the API schema, not captures, so only they get the CDN and the hash of that script.
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})
_DOCS_CDN = "https://cdn.jsdelivr.net"
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.S)
# Static files hold no captured data: the only responses caches may keep.
STATIC_PREFIX = "/static/"


def security_headers(scope: Scope, send: Send, set_cookie: str | None = None) -> Send:
    """``send`` with the security headers (and ``set_cookie``, if any) on the response start."""
    path: str = scope["path"]

    def decorate(message: Message, csp: str) -> None:
        headers = MutableHeaders(scope=message)
        headers["content-security-policy"] = csp
        headers["x-content-type-options"] = "nosniff"
        # same-origin, not no-referrer: under no-referrer Chromium sends same-origin form POSTs
        # with "Origin: null", which the CSRF origin check must refuse. Other sites get nothing.
        headers["referrer-policy"] = "same-origin"
        headers["x-frame-options"] = "DENY"
        headers["cross-origin-opener-policy"] = "same-origin"
        headers["cross-origin-resource-policy"] = "same-origin"
        if not path.startswith(STATIC_PREFIX) and "cache-control" not in headers:
            headers["cache-control"] = "no-store"  # captured data stays out of caches
        if set_cookie:
            headers.append("set-cookie", set_cookie)

    if path not in DOCS_PATHS:

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                decorate(message, CSP)
            await send(message)

        return wrapped

    held: list[Message] = []

    async def docs_send(message: Message) -> None:
        # Hold the (small) docs page until its end, to put its inline script's hash in the CSP.
        held.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            body = b"".join(m.get("body", b"") for m in held if m["type"] == "http.response.body")
            start = held[0]
            decorate(start, docs_csp(body))
            MutableHeaders(scope=start)["content-length"] = str(len(body))
            await send(start)
            await send({"type": "http.response.body", "body": body})

    return docs_send


def docs_csp(body: bytes) -> str:
    """The CSP of a docs page: its CDN, and the hashes of the inline scripts in ``body``."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(m.group(1)).digest()).decode() + "'"
        for m in _INLINE_SCRIPT.finditer(body)
    )
    return (
        f"default-src 'self'; img-src 'self' data: https:; script-src 'self' {_DOCS_CDN} {hashes}; "
        f"style-src 'self' {_DOCS_CDN} 'unsafe-inline'; worker-src blob:; object-src 'none'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )


def cookie(name: str, value: str, secure: bool, max_age: int | None = None) -> str:
    """A ``Set-Cookie`` value: for this path tree only, out of scripts' reach, never sent cross-site."""
    parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)
