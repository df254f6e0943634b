"""Credentials: which names carry one, how a value is masked, and the one text scrubber.

prompttap never stores, logs, exports or shows a credential, wherever it rides. A header or
query parameter carries one when its *name* says so, not when it is on a short list:
gateways invent their own (``x-litellm-api-key``, ``helicone-auth``, ``cf-aig-authorization``,
``ocp-apim-subscription-key`` ...). A masked value keeps its scheme and last four characters
(``Bearer ...abcd``) so a user can still tell two keys apart.

``scrub`` is the single scrubber for free text that leaves the process (capture fields, error
bodies, span status, logs, health and metrics): it masks the password of ``user:pass@`` in
URLs, secret query or matrix parameters (``?key=``, ``;sig=``), bearer tokens, and any literal
secret it is given. Secrets inside JSON bodies are not looked for: a body is kept as sent.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import quote, unquote

SECRET_WORDS = ("key", "token", "secret", "auth", "password", "passwd", "signature", "session", "cookie", "credential")
"""A header or parameter whose lower-cased name contains one of these carries a secret..."""

SECRET_NAMES = frozenset({"sig", "pwd", "pass", "code", "x-amz-security-token", "x-goog-api-key", "x-api-key"})
"""... and so does one of these names (too short or too generic to match as a substring)."""

NOT_SECRET = re.compile(r"tokens\b")
"""Words that contain a secret word without carrying a secret: token *counts*, as in rate-limit
headers (``x-ratelimit-remaining-tokens``)."""
OWN_PREFIX = "x-prompttap-"
"""prompttap's own labels (``X-Prompttap-Session``): consumed by the proxy, never credentials."""

# Kept for callers that filter parameters by name; `is_secret_name` is the rule.
SECRET_QUERY_KEYS = frozenset({"key", "api_key", "api-key", "apikey", "access_token", "token", "sig", "signature"})


def is_secret_name(name: str) -> bool:
    """Does a header, query or matrix parameter with this name carry a credential?"""
    low = name.strip().lower()
    if low.startswith(OWN_PREFIX):
        return False
    if low in SECRET_NAMES:
        return True
    if not any(word in low for word in SECRET_WORDS):
        return False
    # Secret only if a secret word remains once the exempt forms are taken out.
    return any(word in NOT_SECRET.sub("", low) for word in SECRET_WORDS)


def mask(value: str) -> str:
    """``Bearer sk-abc...wxyz`` -> ``Bearer ...wxyz``; short secrets lose everything."""
    scheme, sep, secret = value.partition(" ")
    if not sep or len(scheme) > 20:
        scheme, secret = "", value
    tail = secret[-4:] if len(secret) >= 12 else ""
    return f"{scheme} ...{tail}".lstrip() if scheme else f"...{tail}"


def redact_headers(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Headers as a dict (repeated names joined with ', '), credentials masked."""
    out: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if is_secret_name(name):
            value = mask(value)
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


_QUERY_PARAM = re.compile(r"([?&;])([^=&;#\s]*)=([^&;#\s]*)")
# In a path: ``;name=value`` (matrix parameters), and a query-like ``%3Fname=value`` that a client
# percent-encoded into the path (forwarded as sent, so it stays in the path).
_ENCODED_SEP = r"%3[fFbB]|%26"
_MATRIX_PARAM = re.compile(
    rf"(;|{_ENCODED_SEP})((?:(?!{_ENCODED_SEP})[^=/;?#&\s])*)(=|%3[dD])((?:(?!{_ENCODED_SEP})[^/;?#&\s])*)"
)


def redact_query(query: str) -> str:
    """A query string with credential parameters masked; everything else byte for byte."""
    return _QUERY_PARAM.sub(_mask_param, "?" + query)[1:] if "=" in query else query


def redact_path(path: str) -> str:
    """A request path and query with matrix (``;key=``) and query credentials masked."""
    if "=" not in path and "%3d" not in path.lower():
        return path
    base, sep, query = path.partition("?")
    base = _MATRIX_PARAM.sub(_mask_param, base)
    return base + (sep + redact_query(query) if sep else "")


def _mask_param(m: re.Match[str]) -> str:
    sep, name, *eq, value = m.groups()
    if not is_secret_name(unquote(name)):
        return m.group(0)
    return f"{sep}{name}{eq[0] if eq else '='}{quote(mask(unquote(value)), safe='. ')}"


_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/@\s:]*):([^/@\s]*)@")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+([A-Za-z0-9._~+/=-]{8,})")
_URL = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s'\"<>]+")


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Free text with every credential it carries masked: URL passwords, secret query and
    matrix parameters inside URLs, bearer/basic tokens, and the literal ``secrets`` given."""
    if not text:
        return text
    for secret in secrets:
        if secret and len(secret) >= 4 and secret in text:
            text = text.replace(secret, mask(secret))
    text = _USERINFO.sub(lambda m: f"{m.group(1)}{m.group(2)}:***@", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {mask(m.group(2))}", text)
    if "=" in text or "%3d" in text.lower():
        text = _URL.sub(lambda m: redact_path(m.group(0)), text)
    return text


def strip_userinfo(url: str) -> str:
    """``https://user:pass@host/x`` -> ``https://host/x`` (for display and storage)."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", r"\1", url, flags=re.I)


class ScrubFilter(logging.Filter):
    """A logging filter that scrubs every record's message (arguments merged in first)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = scrub(message, self.secrets)
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info), self.secrets)
            record.exc_info = None
        if clean != message or record.args:
            record.msg, record.args = clean, None
        return True
