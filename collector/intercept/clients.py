"""What a client of the forward proxy is given, and what the proxy checks.

``client_env`` is the environment ``prompttap env`` prints and ``prompttap run`` sets: the proxy
variables that route a client's HTTPS through the forward proxy, and the CA variables that make it
trust prompttap's certificates (each runtime reads a different one). ``authorized`` is the forward
proxy's side of ``--intercept-token``: clients send it as the password of ``Proxy-Authorization:
Basic``, which is what a ``http://user:TOKEN@host:port`` proxy URL makes every client send.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from urllib.parse import quote

from prompttap.collector.config import Settings
from prompttap.collector.intercept.ca import LocalCA

LOOPBACK = "localhost,127.0.0.1,::1"
PROXY_USER = "prompttap"  # any user name is accepted; the token is the password


def connect_address(listen: tuple[str, int]) -> tuple[str, int]:
    """Where a client on this machine reaches a proxy bound to ``listen`` (a wildcard bind answers
    on loopback)."""
    host, port = listen
    return ({"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host), port)


def proxy_url(listen: tuple[str, int], token: str) -> str:
    host, port = connect_address(listen)
    if ":" in host:
        host = f"[{host}]"
    userinfo = f"{PROXY_USER}:{quote(token, safe='')}@" if token else ""
    return f"http://{userinfo}{host}:{port}"


def client_env(settings: Settings, ca: LocalCA) -> dict[str, str]:
    """The variables that send a client through the forward proxy and make it trust prompttap's CA."""
    proxy = proxy_url(settings.intercept_listen, settings.intercept_token)
    bundle, cert = str(ca.bundle_path.resolve()), str(ca.cert_path.resolve())
    return {
        "HTTPS_PROXY": proxy,
        "https_proxy": proxy,  # some clients read only the lower-case names, some only the upper
        "HTTP_PROXY": proxy,
        "http_proxy": proxy,
        "NO_PROXY": LOOPBACK,
        "no_proxy": LOOPBACK,
        "SSL_CERT_FILE": bundle,  # OpenSSL's default (Python's ssl, httpx, aiohttp), Go and Ruby on Linux
        "REQUESTS_CA_BUNDLE": bundle,  # requests reads this, not SSL_CERT_FILE
        "CURL_CA_BUNDLE": bundle,  # curl built with a fixed CA path (Debian's) ignores SSL_CERT_FILE
        "NODE_EXTRA_CA_CERTS": cert,  # Node adds it to its built-in roots
        "NODE_USE_ENV_PROXY": "1",  # Node 24+: fetch and https honour the proxy variables
    }


def authorized(header: str | None, token: str) -> bool:
    """Whether a request's ``Proxy-Authorization`` value carries ``token`` (always true when no
    token is configured). The token is accepted as the password with any user name, or as the user
    name with an empty password; compared in constant time."""
    if not token:
        return True
    scheme, _, value = (header or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    user, _, password = decoded.partition(":")
    expected = token.encode()
    return hmac.compare_digest(password.encode(), expected) or (
        not password and hmac.compare_digest(user.encode(), expected)
    )
