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

One module per job:

- ``hosts``: the host names the inspector answers to;
- ``headers``: the response headers (CSP and the rest) and the cookies it sets;
- ``login``: the UI token, the session cookie and the ``/login``/``/logout`` routes (``router``);
- ``csrf``: the Origin check and the CSRF token;
- ``middleware``: ``SecurityMiddleware``, which runs those checks on every request.
"""

from __future__ import annotations

from fastapi import FastAPI

from prompttap.inspector.security.hosts import HostPolicy, host_name
from prompttap.inspector.security.login import router, safe_next, same_secret, session_value
from prompttap.inspector.security.middleware import SecurityMiddleware

__all__ = [
    "HostPolicy",
    "SecurityMiddleware",
    "host_name",
    "protect",
    "router",
    "safe_next",
    "same_secret",
    "session_value",
]


def protect(app: FastAPI) -> FastAPI:
    """Wrap ``app`` in the security middleware, with the token and host names from its options."""
    options = app.state.options or {}
    hosts = HostPolicy.build(options.get("ui_host"), options.get("ui_allowed_hosts") or ())
    app.add_middleware(SecurityMiddleware, token=options.get("ui_token"), hosts=hosts)
    return app
