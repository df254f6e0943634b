"""Which hosts the forward proxy decrypts and records: a built-in list plus ``--intercept-host``.

Everything else a client reaches through the forward proxy is tunnelled untouched. The list is also
what the local CA may sign for (its X.509 name constraints), so it holds DNS names only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

BUILTIN_HOSTS: dict[str, str] = {
    "api.openai.com": "OpenAI",
    "api.anthropic.com": "Anthropic",
    "generativelanguage.googleapis.com": "Google Gemini",
    "openrouter.ai": "OpenRouter",
    "api.groq.com": "Groq",
    "api.mistral.ai": "Mistral",
    "api.deepseek.com": "DeepSeek",
    "api.x.ai": "xAI",
    "api.together.xyz": "Together",
    "api.fireworks.ai": "Fireworks",
    "api.cerebras.ai": "Cerebras",
}
"""The API host each provider's official SDKs use by default -> the provider's name."""

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def normalize_host(value: str) -> str:
    """``value`` as a lower-case DNS name without a trailing dot; ValueError if it is not one.

    IP literals and wildcards are refused: the CA's name constraints would have to permit them,
    and no LLM API needs them.
    """
    host = value.strip().lower().rstrip(".")
    try:
        host = host.encode("idna").decode("ascii")  # a non-ASCII name becomes its xn-- form
    except UnicodeError:
        raise ValueError(f"--intercept-host takes a DNS host name, got {value!r}") from None
    labels = host.split(".")
    if len(host) > 253 or len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"--intercept-host takes a DNS host name (no scheme, port, IP or wildcard), got {value!r}")
    if labels[-1].isdigit():
        raise ValueError(f"--intercept-host takes a DNS host name, not an IP address, got {value!r}")
    return host


def parse_intercept_hosts(raw: Iterable[str] | Mapping[str, str] | str) -> dict[str, str | None]:
    """The built-in hosts plus ``HOST`` / ``HOST=URL`` items -> {host: URL to send it to, or None
    for the host itself}. ``raw`` is the flags' list, a config-file list or table, or a comma list."""
    if isinstance(raw, Mapping):  # config file: [intercept_hosts] "api.openai.com" = "http://..."
        raw = [f"{k}={v}" if v else str(k) for k, v in raw.items()]
    elif isinstance(raw, str):
        raw = raw.split(",")
    hosts: dict[str, str | None] = dict.fromkeys(BUILTIN_HOSTS)
    for item in (str(i).strip() for i in raw):
        if not item:
            continue
        name, sep, url = item.partition("=")
        if sep and not url.strip():
            raise ValueError(f"--intercept-host must be HOST or HOST=URL, got {item!r}")
        host = normalize_host(name)
        hosts[host] = url.strip() if sep else hosts.get(host)
    return hosts
