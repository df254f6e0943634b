"""The host names the inspector answers to (its defence against DNS rebinding).

A page whose name was rebound to 127.0.0.1 is same-origin with nothing here, so any ``Host``
outside the policy is refused before a route runs.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

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


def host_port(value: str) -> int | None:
    """The port in a ``Host`` header, None when it names none."""
    _, sep, port = value.rpartition(":")
    return int(port) if sep and port.isdigit() and not value.endswith("]") else None


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


def misdirected(name: str | None) -> str:
    """The refusal for a name outside the policy, with how to allow one."""
    what = f"the name {name!r}" if name else "a request without a valid Host header"
    hint = f"--ui-allowed-host {name}" if name else "--ui-allowed-host NAME"
    return (
        f"this inspector does not answer to {what} (DNS rebinding protection): open it as "
        f"http://127.0.0.1 or http://localhost, or start prompttap with {hint} for a name of your own"
    )
