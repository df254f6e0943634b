"""Credential redaction, applied before anything leaves the request path.

A redacted value keeps its scheme and last four characters (``Bearer ...abcd``) so a
user can still tell two keys apart without the capture ever holding one.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "cookie",
        "set-cookie",
        "x-goog-api-key",
    }
)
SECRET_QUERY_KEYS = frozenset({"key", "api_key", "api-key", "apikey", "access_token", "token"})


def mask(value: str) -> str:
    """``Bearer sk-abc...wxyz`` -> ``Bearer ...wxyz``; short secrets lose everything."""
    scheme, sep, secret = value.partition(" ")
    if not sep or len(scheme) > 20:
        scheme, secret = "", value
    tail = secret[-4:] if len(secret) >= 12 else ""
    return f"{scheme} ...{tail}".lstrip() if scheme else f"...{tail}"


def redact_headers(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Headers as a dict (repeated names joined with ', '), secrets masked."""
    out: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if name in SECRET_HEADERS:
            value = mask(value)
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def redact_query(query: str) -> str:
    """A query string with credential parameters masked."""
    if not query:
        return ""
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(k.lower() in SECRET_QUERY_KEYS for k, _ in pairs):
        return query
    return urlencode([(k, mask(v) if k.lower() in SECRET_QUERY_KEYS else v) for k, v in pairs], safe="./")
