"""The inspector's security layer: its own host names, response headers, the UI token, CSRF.

One ASGI middleware wraps the whole app (``protect(app)``), so every response carries the
headers, whichever router or mount produced it:

- the inspector answers only to the names it is reached by (``HostPolicy``: the ``--ui`` host,
  ``localhost``, ``127.0.0.1``, ``[::1]`` and ``--ui-allowed-host`` names; any IP address when
  ``--ui`` is a wildcard). Any other ``Host`` gets 421 before a route runs: a page whose name
  was rebound to 127.0.0.1 (DNS rebinding) is same-origin with nothing here;
- a strict Content-Security-Policy, nosniff, a same-origin referrer policy, no framing, no caching of captured data;
- with a UI token (``--ui-token`` / ``PROMPTTAP_UI_TOKEN``), everything except ``/healthz``, ``/readyz``,
  ``/metrics``, ``/static`` and ``/login`` needs the session cookie set by ``/login`` or an
  ``Authorization: Bearer <token>`` header (compared in constant time);
- state-changing requests (anything but GET/HEAD/OPTIONS) are refused when they come from
  another origin (an Origin whose host is not one of those names, or Sec-Fetch-Site), and,
  when they come from a browser, must carry the CSRF token (``X-CSRF-Token`` header or
  ``csrf_token`` form field) that matches the signed ``prompttap_csrf`` cookie. Pages get the
  token as ``request.state.csrf_token``. Bearer requests carry no ambient credential, so they
  need no CSRF token.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import RedirectResponse, Response
from prompttap.inspector.web import render
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SESSION_COOKIE = "prompttap_session"
CSRF_COOKIE = "prompttap_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
CSRF_REFUSAL = "CSRF token missing or wrong: reload the page (scripts: send X-CSRF-Token or a Bearer token)"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/login")
OPEN_PREFIXES = ("/static/",)
SESSION_MAX_AGE = 30 * 86400
MAX_FORM_BYTES = 4 * 2**20

CSP = (
    "default-src 'self'; img-src 'self' data: https:; script-src 'self'; style-src 'self'; "
    "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
# FastAPI's /docs and /redoc load their UI from a CDN with one inline bootstrap script; they show
# the API schema, not captures, so only they get the CDN and the hash of that script.
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})
_DOCS_CDN = "https://cdn.jsdelivr.net"
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.S)


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")
_DNS_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")


def host_name(value: str) -> str | None:
    """The name in a ``Host`` header (or a bare name or address): lower case, without port,
    brackets or trailing dot, IP addresses in their canonical form; None when it is neither a
    host name nor an IP address."""
    value = value.strip().lower()
    if value.startswith("["):  # [IPv6] or [IPv6]:port
        inner, sep, rest = value[1:].partition("]")
        return _ip(inner) if sep and (not rest or re.fullmatch(r":\d{1,5}", rest)) else None
    if (ip := _ip(value)) is not None:  # a bare IPv6 address has colons but no port
        return ip
    name, sep, port = value.rpartition(":")
    if not sep:
        name = value
    elif not port.isdigit():
        return None
    name = name.rstrip(".")
    if (ip := _ip(name)) is not None:
        return ip
    return name if len(name) <= 253 and _DNS_NAME.fullmatch(name) else None


def _ip(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """The host names the inspector answers to.

    A DNS name only reaches this process through DNS, which an attacker's page can rebind to
    127.0.0.1; an IP literal cannot be rebound. So names are allowed one by one, and any IP
    literal only when ``--ui`` listens on every address (then each of them reaches it)."""

    names: frozenset[str]
    any_ip: bool = False

    @classmethod
    def build(cls, ui_host: str | None = None, extra: Iterable[str] = ()) -> HostPolicy:
        names = {*LOOPBACK_NAMES, *(n for n in map(host_name, extra) if n)}
        wildcard = ui_host is not None and ui_host.strip("[]") in WILDCARD_ADDRESSES
        if ui_host and not wildcard and (name := host_name(ui_host)):
            names.add(name)
        return cls(frozenset(names), wildcard)

    def allows(self, name: str | None) -> bool:
        if not name:
            return False
        return name in self.names or (self.any_ip and _ip(name) is not None)


def session_value(token: str) -> str:
    """The session cookie for ``token``: derived, so the cookie never holds the token itself."""
    return hmac.new(token.encode(), b"prompttap-ui-session-v1", hashlib.sha256).hexdigest()


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison (digests first, so lengths leak nothing either)."""
    return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest())


def safe_next(target: str | None) -> str:
    """A local path to go back to after login; anything else (//host, schemes) becomes '/'."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, token: str | None = None, hosts: HostPolicy | None = None) -> None:
        self.app = app
        self.token = token or None
        self.hosts = hosts or HostPolicy.build()
        # The CSRF signing key: stable across restarts when there is a token, else per process.
        self.secret = (
            hmac.new(self.token.encode(), b"prompttap-csrf-v1", hashlib.sha256).digest()
            if self.token
            else os.urandom(32)
        )

    # -- tokens ---------------------------------------------------------------------------------
    def new_csrf(self) -> str:
        nonce = secrets.token_urlsafe(18)
        return f"{nonce}.{self._sign(nonce)}"

    def csrf_valid(self, value: str | None) -> bool:
        if not value or "." not in value:
            return False
        nonce, _, sig = value.partition(".")
        return hmac.compare_digest(sig, self._sign(nonce))

    def _sign(self, nonce: str) -> str:
        return hmac.new(self.secret, nonce.encode(), hashlib.sha256).hexdigest()[:32]

    def _bearer(self, headers: Headers) -> bool | None:
        """True/False for a good/bad bearer token, None when there is none."""
        auth = headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None
        return bool(self.token) and same_secret(value.strip(), self.token or "")

    # -- the request ----------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        path: str = scope["path"]
        method: str = scope["method"]
        host = host_name(headers.get("host", ""))
        if not self.hosts.allows(host):
            await _refuse(self._headers_send(scope, send, None), path, headers, 421, _misdirected(host))
            return
        cookies = cookie_parser(headers.get("cookie", ""))
        csrf = cookies.get(CSRF_COOKIE)
        new_csrf = None
        if not self.csrf_valid(csrf):
            csrf = new_csrf = self.new_csrf()
        bearer = self._bearer(headers)
        session = cookies.get(SESSION_COOKIE)
        authed = not self.token or bearer is True or (bool(session) and same_secret(session or "", self._session()))
        state = scope.setdefault("state", {})
        state.update(csrf_token=csrf, auth_required=bool(self.token), authenticated=authed)
        send = self._headers_send(scope, send, new_csrf)

        if not authed and not _is_open(path):
            await self._unauthenticated(scope, send, headers, bad_bearer=bearer is False)
            return
        if method not in SAFE_METHODS:
            if not _same_origin(headers, self.hosts):
                await _refuse(send, path, headers, 403, "cross-origin request refused")
                return
            if bearer is not True and _from_browser(headers, cookies):
                supplied = headers.get(CSRF_HEADER)
                if supplied is None and _is_form(headers):
                    body, receive = await _buffer_body(receive)
                    if body is None:
                        await _refuse(send, path, headers, 413, "form too large")
                        return
                    supplied = (parse_qs(body.decode("latin-1")).get(CSRF_FIELD) or [None])[0]
                if not supplied or not csrf or new_csrf or not hmac.compare_digest(supplied, csrf):
                    await _refuse(send, path, headers, 403, CSRF_REFUSAL)
                    return
        await self.app(scope, receive, send)

    def _session(self) -> str:
        return session_value(self.token or "")

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

    # -- the response ---------------------------------------------------------------------------
    def _headers_send(self, scope: Scope, send: Send, new_csrf: str | None) -> Send:
        path: str = scope["path"]
        secure = scope.get("scheme") == "https"
        docs = path in DOCS_PATHS

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
            if not path.startswith(OPEN_PREFIXES) and "cache-control" not in headers:
                headers["cache-control"] = "no-store"  # captured data stays out of caches
            if new_csrf:
                headers.append("set-cookie", _cookie(CSRF_COOKIE, new_csrf, secure))

        if not docs:

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
                decorate(start, _docs_csp(body))
                MutableHeaders(scope=start)["content-length"] = str(len(body))
                await send(start)
                await send({"type": "http.response.body", "body": body})

        return docs_send


def protect(app: FastAPI) -> FastAPI:
    """Wrap ``app`` in the security middleware, with the token and host names from its options."""
    options = app.state.options or {}
    hosts = HostPolicy.build(options.get("ui_host"), options.get("ui_allowed_hosts") or ())
    app.add_middleware(SecurityMiddleware, token=options.get("ui_token"), hosts=hosts)
    return app


def _misdirected(name: str | None) -> str:
    what = f"the name {name!r}" if name else "a request without a valid Host header"
    hint = f"--ui-allowed-host {name}" if name else "--ui-allowed-host NAME"
    return (
        f"this inspector does not answer to {what} (DNS rebinding protection): open it as "
        f"http://127.0.0.1 or http://localhost, or start prompttap with {hint} for a name of your own"
    )


def _docs_csp(body: bytes) -> str:
    hashes = " ".join(
        "'sha256-" + _b64(hashlib.sha256(m.group(1)).digest()) + "'" for m in _INLINE_SCRIPT.finditer(body)
    )
    return (
        f"default-src 'self'; img-src 'self' data: https:; script-src 'self' {_DOCS_CDN} {hashes}; "
        f"style-src 'self' {_DOCS_CDN} 'unsafe-inline'; worker-src blob:; object-src 'none'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )


def _b64(raw: bytes) -> str:
    import base64

    return base64.b64encode(raw).decode()


def _cookie(name: str, value: str, secure: bool, max_age: int | None = None) -> str:
    parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def _same_origin(headers: Headers, hosts: HostPolicy) -> bool:
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
    return (port or default) == (_host_port(headers.get("host", "")) or default)


def _host_port(value: str) -> int | None:
    _, sep, port = value.rpartition(":")
    return int(port) if sep and port.isdigit() and not value.endswith("]") else None


def _from_browser(headers: Headers, cookies: dict[str, str]) -> bool:
    """Browsers send Origin/Sec-Fetch-* on POSTs: those requests need a CSRF token, and so does
    anything carrying the login session (an ambient credential). A script that merely kept our
    CSRF cookie in its cookie jar carries no credential and is not asked for one."""
    return "origin" in headers or "sec-fetch-site" in headers or "referer" in headers or SESSION_COOKIE in cookies


def _is_form(headers: Headers) -> bool:
    return headers.get("content-type", "").split(";")[0].strip().lower() == "application/x-www-form-urlencoded"


def _wants_html(path: str, headers: Headers) -> bool:
    if path.startswith("/api/") or path == "/openapi.json":
        return False
    accept = headers.get("accept", "")
    return "text/html" in accept or "*/*" in accept or not accept


async def _buffer_body(receive: Receive) -> tuple[bytes | None, Receive]:
    """Read a form body (to find its CSRF field) and hand the same bytes on downstream."""
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
            return None, receive
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

    return body, replay


async def _refuse(
    send: Send, path: str, headers: Headers, status: int, detail: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    if _wants_html(path, headers) and "application/json" not in headers.get("accept", ""):
        await _send_plain(send, status, f"{status}: {detail}\n".encode(), extra, b"text/plain; charset=utf-8")
    else:
        import orjson

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


# --- login / logout ------------------------------------------------------------------------------

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
    response.headers.append("set-cookie", _cookie(SESSION_COOKIE, session_value(expected), secure, SESSION_MAX_AGE))
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    response = RedirectResponse("/login" if _token(request) else "/", status_code=303)
    response.headers.append("set-cookie", _cookie(SESSION_COOKIE, "", request.url.scheme == "https", 0))
    return response
