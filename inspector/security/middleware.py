"""The ASGI middleware that runs every check on every request, in order: the host name, the
UI token, then (for state-changing requests) the origin and the CSRF token.

A refusal is plain text for pages and JSON for the API, and carries the same headers as any
other response.
"""

from __future__ import annotations

import hmac
from urllib.parse import quote

import orjson
from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from prompttap.inspector.security import csrf
from prompttap.inspector.security.headers import cookie, security_headers
from prompttap.inspector.security.hosts import HostPolicy, host_name, misdirected
from prompttap.inspector.security.login import SESSION_COOKIE, bearer, is_open, same_secret, session_value


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, token: str | None = None, hosts: HostPolicy | None = None) -> None:
        self.app = app
        self.token = token or None
        self.hosts = hosts or HostPolicy.build()
        self.secret = csrf.signing_key(self.token)
        self.session = session_value(self.token) if self.token else None  # the cookie a login sets

    def new_csrf(self) -> str:
        return csrf.new_token(self.secret)

    def csrf_valid(self, value: str | None) -> bool:
        return csrf.token_valid(self.secret, value)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        path: str = scope["path"]
        method: str = scope["method"]
        host = host_name(headers.get("host", ""))
        if not self.hosts.allows(host):
            await _refuse(security_headers(scope, send), path, headers, 421, misdirected(host))
            return
        cookies = cookie_parser(headers.get("cookie", ""))
        csrf_token = cookies.get(csrf.CSRF_COOKIE)
        new_csrf = None
        if not self.csrf_valid(csrf_token):
            csrf_token = new_csrf = self.new_csrf()
        good_bearer = bearer(headers, self.token)
        session = cookies.get(SESSION_COOKIE)
        authed = (
            not self.token or good_bearer is True or (bool(session) and same_secret(session or "", self.session or ""))
        )
        state = scope.setdefault("state", {})
        state.update(csrf_token=csrf_token, auth_required=bool(self.token), authenticated=authed)
        set_cookie = cookie(csrf.CSRF_COOKIE, new_csrf, scope.get("scheme") == "https") if new_csrf else None
        send = security_headers(scope, send, set_cookie)

        if not authed and not is_open(path):
            await self._unauthenticated(scope, send, headers, bad_bearer=good_bearer is False)
            return
        if method not in csrf.SAFE_METHODS:
            if not csrf.same_origin(headers, self.hosts):
                await _refuse(send, path, headers, 403, "cross-origin request refused")
                return
            if good_bearer is not True and csrf.from_browser(headers, cookies):
                supplied = headers.get(csrf.CSRF_HEADER)
                if supplied is None and csrf.is_form(headers):
                    form = await csrf.form_token(receive)
                    if form is None:
                        await _refuse(send, path, headers, 413, "form too large")
                        return
                    supplied, receive = form
                if not supplied or not csrf_token or new_csrf or not hmac.compare_digest(supplied, csrf_token):
                    await _refuse(send, path, headers, 403, csrf.CSRF_REFUSAL)
                    return
        await self.app(scope, receive, send)

    async def _unauthenticated(self, scope: Scope, send: Send, headers: Headers, bad_bearer: bool) -> None:
        path = scope["path"]
        if scope["method"] in ("GET", "HEAD") and _wants_html(path, headers) and not bad_bearer:
            query = scope.get("query_string", b"").decode("latin-1")
            target = path + (f"?{query}" if query else "")
            await _send_plain(send, 303, b"", [(b"location", f"/login?next={quote(target, safe='')}".encode())])
            return
        await _refuse(
            send,
            path,
            headers,
            401,
            "the inspector needs its UI token: Authorization: Bearer <token>, or log in at /login",
            extra=[(b"www-authenticate", b'Bearer realm="prompttap"')],
        )


def _wants_html(path: str, headers: Headers) -> bool:
    if path.startswith("/api/") or path == "/openapi.json":
        return False
    accept = headers.get("accept", "")
    return "text/html" in accept or "*/*" in accept or not accept


async def _refuse(
    send: Send, path: str, headers: Headers, status: int, detail: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    if _wants_html(path, headers) and "application/json" not in headers.get("accept", ""):
        await _send_plain(send, status, f"{status}: {detail}\n".encode(), extra, b"text/plain; charset=utf-8")
    else:
        await _send_plain(send, status, orjson.dumps({"detail": detail}), extra, b"application/json")


async def _send_plain(
    send: Send,
    status: int,
    body: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
    content_type: bytes = b"text/plain; charset=utf-8",
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
