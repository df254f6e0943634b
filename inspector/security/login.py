"""The UI token: who is let in, and the ``/login`` and ``/logout`` routes.

With a token (``--ui-token`` / ``PROMPTTAP_UI_TOKEN``), everything but ``OPEN_PATHS`` and the
static files needs the session cookie set by ``/login`` or an ``Authorization: Bearer <token>``
header. Both are compared in constant time; the cookie holds a value derived from the token,
never the token itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import Headers

from prompttap.inspector.security.headers import STATIC_PREFIX, cookie
from prompttap.inspector.web import render

SESSION_COOKIE = "prompttap_session"
SESSION_MAX_AGE = 30 * 86400
OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/login")
OPEN_PREFIXES = (STATIC_PREFIX,)


def is_open(path: str) -> bool:
    """Whether ``path`` is served without the token."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def session_value(token: str) -> str:
    """The session cookie for ``token``: derived, so the cookie never holds the token itself."""
    return hmac.new(token.encode(), b"prompttap-ui-session-v1", hashlib.sha256).hexdigest()


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison (digests first, so lengths leak nothing either)."""
    return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest())


def bearer(headers: Headers, token: str | None) -> bool | None:
    """True/False for a good/bad bearer token, None when there is none."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return bool(token) and same_secret(value.strip(), token or "")


def safe_next(target: str | None) -> str:
    """A local path to go back to after login; anything else (//host, schemes) becomes '/'."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


router = APIRouter(include_in_schema=False)


def _token(request: Request) -> str | None:
    return (request.app.state.options or {}).get("ui_token") or None


@router.get("/login")
def login_page(request: Request, next: str = "/") -> Any:
    if not _token(request):
        return RedirectResponse(safe_next(next), status_code=303)
    return render(request, "login.html", {"next": safe_next(next), "error": None})


@router.post("/login")
async def login(request: Request, token: str = Form(""), next: str = Form("/")) -> Any:
    expected = _token(request)
    if not expected:
        return RedirectResponse(safe_next(next), status_code=303)
    if not same_secret(token, expected):
        await asyncio.sleep(0.5)  # slows down guessing
        return render(request, "login.html", {"next": safe_next(next), "error": "Wrong token."}, status_code=401)
    response = RedirectResponse(safe_next(next), status_code=303)
    secure = request.url.scheme == "https"
    response.headers.append("set-cookie", cookie(SESSION_COOKIE, session_value(expected), secure, SESSION_MAX_AGE))
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    response = RedirectResponse("/login" if _token(request) else "/", status_code=303)
    response.headers.append("set-cookie", cookie(SESSION_COOKIE, "", request.url.scheme == "https", 0))
    return response
