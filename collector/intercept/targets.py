"""Where an intercepted request goes: the host itself, or the URL ``--intercept-host HOST=URL`` set."""

from __future__ import annotations

from collections.abc import Mapping

from prompttap.collector.config import Upstream


def upstream_for(hosts: Mapping[str, Upstream | None], host: str, port: int, scheme: str = "https") -> Upstream | None:
    """The upstream for a request to ``scheme://host:port``; None when ``host`` is not intercepted
    (the forward proxy tunnels it). The upstream's name, the captures' route, is the host name."""
    host = host.lower().rstrip(".")
    if host not in hosts:
        return None
    configured = hosts[host]
    if configured is not None:
        return configured
    default_port = 443 if scheme == "https" else 80
    return Upstream.parse(host, f"{scheme}://{host}" + (f":{port}" if port != default_port else ""))
