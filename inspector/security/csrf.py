"""Cross-site request defences: the Origin check and the CSRF token.

State-changing requests (anything but ``SAFE_METHODS``) are refused when they come from another
origin (an Origin whose host the ``HostPolicy`` does not allow, or Sec-Fetch-Site), and, when
they come from a browser, must carry the CSRF token (``X-CSRF-Token`` header or ``csrf_token``
form field) that matches the signed ``prompttap_csrf`` cookie. Bearer requests carry no ambient
credential, so they need no CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from urllib.parse import parse_qs, urlsplit

from starlette.datastructures import Headers
from starlette.types import Message, Receive

from prompttap.inspector.security.hosts import HostPolicy, host_name, host_port
from prompttap.inspector.security.login import SESSION_COOKIE

CSRF_COOKIE = "prompttap_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
CSRF_REFUSAL = "CSRF token missing or wrong: reload the page (scripts: send X-CSRF-Token or a Bearer token)"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_FORM_BYTES = 4 * 2**20


def signing_key(token: str | None) -> bytes:
    """The CSRF signing key: stable across restarts when there is a UI token, else per process."""
    return hmac.new(token.encode(), b"prompttap-csrf-v1", hashlib.sha256).digest() if token else os.urandom(32)


def new_token(key: bytes) -> str:
    nonce = secrets.token_urlsafe(18)
    return f"{nonce}.{_sign(key, nonce)}"


def token_valid(key: bytes, value: str | None) -> bool:
    if not value or "." not in value:
        return False
    nonce, _, sig = value.partition(".")
    return hmac.compare_digest(sig, _sign(key, nonce))


def _sign(key: bytes, nonce: str) -> str:
    return hmac.new(key, nonce.encode(), hashlib.sha256).hexdigest()[:32]


def same_origin(headers: Headers, hosts: HostPolicy) -> bool:
    """The request was not sent by a page of another origin (or site)."""
    origin = headers.get("origin")
    if origin is None:
        return headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")
    if origin == "null":
        return False
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return False
    name = host_name(parts.hostname or "")
    if not hosts.allows(name):  # the list, never the Host header: that names whatever rebinds to us
        return False
    if name != host_name(headers.get("host", "")):
        return True  # a reverse proxy for an allowed name that sends its own Host upstream
    # The same name on another port is another origin (another local service). The scheme is
    # not compared: a TLS-terminating proxy in front changes the scheme we see.
    default = 443 if parts.scheme == "https" else 80
    return (port or default) == (host_port(headers.get("host", "")) or default)


def from_browser(headers: Headers, cookies: dict[str, str]) -> bool:
    """Browsers send Origin/Sec-Fetch-* on POSTs: those requests need a CSRF token, and so does
    anything carrying the login session (an ambient credential). A script that merely kept our
    CSRF cookie in its cookie jar carries no credential and is not asked for one."""
    return "origin" in headers or "sec-fetch-site" in headers or "referer" in headers or SESSION_COOKIE in cookies


def is_form(headers: Headers) -> bool:
    return headers.get("content-type", "").split(";")[0].strip().lower() == "application/x-www-form-urlencoded"


async def form_token(receive: Receive) -> tuple[str | None, Receive] | None:
    """The CSRF field of a form body, and a ``receive`` that hands the same bytes on downstream;
    None when the form is larger than ``MAX_FORM_BYTES``."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return (parse_qs(body.decode("latin-1")).get(CSRF_FIELD) or [None])[0], replay
