"""Settings: defaults, then environment, then the config file, then flags.

The precedence follows the CLI contract: flags override the file, environment variables
fill in what neither sets. Settings are read once, at start-up, and frozen.
"""

from __future__ import annotations

import base64
import os
import ssl
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from prompttap.collector.intercept.hosts import BUILTIN_HOSTS, parse_intercept_hosts
from prompttap.schemas.credentials import strip_userinfo

DEFAULT_LISTEN = "127.0.0.1:8787"
DEFAULT_UI = "127.0.0.1:8788"
DEFAULT_UPSTREAM = "https://api.openai.com"
DEFAULT_INTERCEPT_LISTEN = "127.0.0.1:8789"

ENV = {
    "upstream": "PROMPTTAP_UPSTREAM",
    "store": "PROMPTTAP_STORE",
    "home": "PROMPTTAP_HOME",
    "listen": "PROMPTTAP_LISTEN",
    "ui": "PROMPTTAP_UI",
    "max_body_bytes": "PROMPTTAP_MAX_BODY_BYTES",
    "retention_days": "PROMPTTAP_RETENTION_DAYS",
    "spool_max_bytes": "PROMPTTAP_SPOOL_MAX_BYTES",
    "ui_token": "PROMPTTAP_UI_TOKEN",
    "ui_allowed_hosts": "PROMPTTAP_UI_ALLOWED_HOSTS",  # comma-separated
    "intercept_listen": "PROMPTTAP_INTERCEPT_LISTEN",
    "intercept_token": "PROMPTTAP_INTERCEPT_TOKEN",
    "upstream_ca": "PROMPTTAP_UPSTREAM_CA",
    "max_header_bytes": "PROMPTTAP_MAX_HEADER_BYTES",
    "max_headers": "PROMPTTAP_MAX_HEADERS",
}
"""Environment variable for each setting that has one."""


class ConfigError(ValueError):
    """A setting is invalid; the message is shown to the user as is."""


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where a route forwards to. ``url`` and ``base`` never hold credentials: a ``user:password@``
    in the configured URL becomes ``authorization`` (sent when the client sends none)."""

    name: str
    url: str  # as configured, without userinfo: safe to log and store
    base: str  # scheme://host[:port]
    prefix: str  # the URL's own path, '' for none
    scheme: str = "http"
    host: str = ""  # for connecting (no brackets around IPv6)
    port: int = 80
    host_header: str = ""  # the Host header sent upstream: host[:port] as configured
    authorization: str = field(default="", repr=False)

    @classmethod
    def parse(cls, name: str, url: str) -> Upstream:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"upstream for route {name!r} must be an http(s) URL, got {strip_userinfo(url)!r}")
        if parts.query or parts.fragment:
            raise ConfigError(f"upstream URL {strip_userinfo(url)!r} must not carry a query or fragment")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ConfigError(f"upstream URL {strip_userinfo(url)!r} has an invalid port") from None
        netloc = parts.netloc.rpartition("@")[2]
        authorization = ""
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            authorization = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        return cls(
            name,
            strip_userinfo(url),
            f"{parts.scheme}://{netloc}",
            parts.path.rstrip("/"),
            parts.scheme,
            parts.hostname,
            port,
            netloc,
            authorization,
        )

    def target_path(self, path: str) -> str:
        """Join the upstream's own path with the request path.

        Segments that end the upstream path and also start the request path are not
        repeated, so ``https://host/v1`` + ``/v1/chat/completions`` is
        ``https://host/v1/chat/completions`` while ``https://host/openai`` +
        ``/v1/chat/completions`` is ``https://host/openai/v1/chat/completions``.
        """
        if not self.prefix:
            return path
        base = self.prefix.strip("/").split("/")
        req = path.lstrip("/").split("/")
        for k in range(min(len(base), len(req)), 0, -1):
            if base[-k:] == req[:k]:
                return "/" + "/".join(base + req[k:])
        return self.prefix + path


@dataclass(frozen=True, slots=True)
class Settings:
    listen: tuple[str, int] = ("127.0.0.1", 8787)
    ui: tuple[str, int] | None = ("127.0.0.1", 8788)
    upstream: Upstream = field(default_factory=lambda: Upstream.parse("default", DEFAULT_UPSTREAM))
    routes: dict[str, Upstream] = field(default_factory=dict)
    home: Path = Path(".prompttap")
    store: str = ""  # DSN; '' means the embedded store under ``home``
    max_body_bytes: int = 32 * 2**20
    retention_days: int = 0  # 0 keeps captures forever
    spool_max_bytes: int = 0  # 0: bounded by the disk only
    upstream_connect_timeout: float = 10.0
    upstream_read_timeout: float = 600.0  # between bytes; long generations are normal
    drain_after_finish_seconds: float = 5.0
    drain_after_finish_bytes: int = 2**20
    fsync_interval: float = 0.05
    max_header_bytes: int = 64 * 1024  # request line and headers, like nginx's and Node's limits
    max_headers: int = 100  # like Apache's LimitRequestFields
    header_timeout: float = 10.0  # a client must finish its request head within this (slowloris)
    shutdown_timeout: float = 10.0  # on SIGTERM, in-flight exchanges get this long to finish
    log_level: str = "info"
    ui_token: str = field(default="", repr=False)  # a secret: kept out of reprs and logs
    upstream_keys: dict[str, str] = field(default_factory=dict)  # route -> name of the env var holding its key
    ui_allowed_hosts: tuple[str, ...] = ()  # more names the inspector answers to (reverse proxies)
    intercept: bool = False  # run the forward proxy (HTTPS interception)
    intercept_listen: tuple[str, int] = ("127.0.0.1", 8789)
    # intercepted host -> its Upstream when --intercept-host HOST=URL sends it elsewhere; None: the host itself
    intercept_hosts: dict[str, Upstream | None] = field(default_factory=lambda: dict.fromkeys(BUILTIN_HOSTS))
    intercept_only: bool = False  # refuse CONNECT to other hosts (403) instead of tunnelling them
    intercept_token: str = field(default="", repr=False)  # a secret: forward-proxy clients send it
    upstream_ca: Path | None = None  # more CAs to trust for upstreams (private CAs)

    @property
    def store_dsn(self) -> str:
        return self.store or f"chdb://{(self.home / 'store').resolve()}"

    @property
    def spool_dir(self) -> Path:
        return self.home / "spool"

    @property
    def ca_dir(self) -> Path:
        return self.home / "ca"


def parse_hostport(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{what} must be HOST:PORT, got {value!r}")
    return (host.strip("[]") or "127.0.0.1", int(port))


def parse_route(value: str) -> tuple[str, str]:
    name, sep, url = value.partition("=")
    if not sep or not name or not url:
        raise ConfigError(f"--route must be NAME=URL, got {value!r}")
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"route name {name!r} may use letters, digits, '-' and '_' only")
    if name in ("_prompttap", "default"):
        raise ConfigError(f"route name {name!r} is reserved")
    return name, url


def load(flags: dict[str, Any], environ: dict[str, str] | None = None) -> Settings:
    """Build Settings from CLI flags (None = not given), the config file and the environment."""
    environ = dict(os.environ) if environ is None else environ
    merged: dict[str, Any] = {}
    for key, var in ENV.items():
        if environ.get(var):
            merged[key] = environ[var]
    if flags.get("config"):
        merged.update(_read_file(Path(flags["config"])))
    merged.update({k: v for k, v in flags.items() if v is not None and k != "config"})

    kw: dict[str, Any] = {}
    if "listen" in merged:
        kw["listen"] = parse_hostport(str(merged["listen"]), "--listen")
    if merged.get("no_ui"):
        kw["ui"] = None
    elif "ui" in merged:
        kw["ui"] = parse_hostport(str(merged["ui"]), "--ui")
    if "upstream" in merged:
        kw["upstream"] = Upstream.parse("default", str(merged["upstream"]))
    routes: dict[str, Upstream] = {}
    raw_routes = merged.get("routes", [])
    if isinstance(raw_routes, dict):  # config file: [routes] name = "url"
        raw_routes = [f"{k}={v}" for k, v in raw_routes.items()]
    for item in raw_routes:
        name, url = parse_route(str(item))
        routes[name] = Upstream.parse(name, url)
    kw["routes"] = routes
    if "home" in merged:
        kw["home"] = Path(str(merged["home"]))
    if "store" in merged:
        kw["store"] = _check_dsn(str(merged["store"]))
    for key in ("max_body_bytes", "retention_days", "spool_max_bytes", "max_header_bytes", "max_headers"):
        if key in merged:
            try:
                kw[key] = int(merged[key])
            except (TypeError, ValueError):
                raise ConfigError(f"{key} must be an integer, got {merged[key]!r}") from None
            if kw[key] < 0:
                raise ConfigError(f"{key} must not be negative")
    if "upstream_timeout" in merged:
        try:
            kw["upstream_read_timeout"] = float(merged["upstream_timeout"])
        except (TypeError, ValueError):
            raise ConfigError(
                f"upstream_timeout must be a number of seconds, got {merged['upstream_timeout']!r}"
            ) from None
        if kw["upstream_read_timeout"] <= 0:
            raise ConfigError("upstream_timeout must be positive")
    if "header_timeout" in merged:
        try:
            kw["header_timeout"] = float(merged["header_timeout"])
        except (TypeError, ValueError):
            raise ConfigError(f"header_timeout must be a number of seconds, got {merged['header_timeout']!r}") from None
        if kw["header_timeout"] <= 0:
            raise ConfigError("header_timeout must be positive")
    for key in ("max_header_bytes", "max_headers"):
        if kw.get(key) == 0:
            raise ConfigError(f"{key} must be positive")
    if "log_level" in merged:
        kw["log_level"] = str(merged["log_level"])
    if merged.get("ui_token"):
        kw["ui_token"] = str(merged["ui_token"])
    kw["upstream_keys"] = _upstream_keys(merged.get("upstream_keys", []), routes)
    kw["ui_allowed_hosts"] = _host_names(merged.get("ui_allowed_hosts", []))
    kw.update(_intercept(merged))
    ui = kw.get("ui", parse_hostport(DEFAULT_UI, "--ui"))
    if ui is not None and not kw.get("ui_token") and not _is_loopback(ui[0]):
        raise ConfigError(
            f"--ui {ui[0]}:{ui[1]} is reachable from other machines: set --ui-token or PROMPTTAP_UI_TOKEN "
            "to protect the inspector, or bind it to 127.0.0.1"
        )
    return Settings(**kw)


def _upstream_keys(raw: Any, routes: dict[str, Upstream]) -> dict[str, str]:
    """``ROUTE=ENV_VAR`` items (or a config-file table) -> {route: env var name}."""
    if isinstance(raw, dict):  # config file: [upstream_keys] route = "ENV_VAR"
        raw = [f"{k}={v}" for k, v in raw.items()]
    out: dict[str, str] = {}
    for item in raw:
        route, sep, var = str(item).partition("=")
        route, var = route.strip(), var.strip()
        if not sep or not route or not var:
            raise ConfigError(f"--upstream-key must be ROUTE=ENV_VAR, got {item!r}")
        if route != "default" and route not in routes:
            raise ConfigError(f"--upstream-key names route {route!r}, which is not defined (use default or a --route)")
        out[route] = var
    return out


def _host_names(raw: Any) -> tuple[str, ...]:
    """``--ui-allowed-host`` names (flags, a config-file list, or the env var's comma list)."""
    items = raw.split(",") if isinstance(raw, str) else raw
    names = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        if "/" in item or (":" in item.strip("[]") and item.count(":") == 1):
            raise ConfigError(f"--ui-allowed-host takes a host name without scheme or port, got {item!r}")
        names.append(item.lower())
    return tuple(names)


def _intercept(merged: dict[str, Any]) -> dict[str, Any]:
    """The forward proxy's settings (HTTPS interception; ``collector/intercept/``)."""
    listen = parse_hostport(str(merged.get("intercept_listen", DEFAULT_INTERCEPT_LISTEN)), "--intercept-listen")
    token = str(merged.get("intercept_token") or "")
    if not token and not _is_loopback(listen[0]):
        raise ConfigError(
            f"--intercept-listen {listen[0]}:{listen[1]} is reachable from other machines: set --intercept-token "
            "or PROMPTTAP_INTERCEPT_TOKEN so the forward proxy is not an open relay, or bind it to 127.0.0.1"
        )
    try:
        hosts = parse_intercept_hosts(merged.get("intercept_hosts", []))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    kw: dict[str, Any] = {
        "intercept": bool(merged.get("intercept")),
        "intercept_only": bool(merged.get("intercept_only")),
        "intercept_listen": listen,
        "intercept_token": token,
        "intercept_hosts": {h: Upstream.parse(h, url) if url else None for h, url in hosts.items()},
    }
    if merged.get("upstream_ca"):
        kw["upstream_ca"] = Path(str(merged["upstream_ca"]))
        try:
            ssl.create_default_context(cafile=kw["upstream_ca"])
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"--upstream-ca {kw['upstream_ca']} is not a readable PEM CA file ({exc})") from None
    return kw


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def _check_dsn(dsn: str) -> str:
    scheme = dsn.split("://", 1)[0] if "://" in dsn else ""
    if scheme not in ("chdb", "http", "https"):
        raise ConfigError(f"--store must be chdb:///path or http(s)://user:pass@host:8123/db, got {dsn!r}")
    return dsn


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    section = data.get("prompttap", data)
    return {k.replace("-", "_"): v for k, v in section.items()}
