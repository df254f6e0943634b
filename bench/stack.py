"""Stack control: the processes a run starts (prompttap, the mock upstream), waiting for them, stopping them.

Every process starts in its own session with ``child_env()`` and is stopped by its own PID (its
children by theirs); ``cleanup()`` stops whatever is still running when the run ends or is signalled.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
from console import log
from paths import BENCH_PY, HARNESS, HOST, PROMPTTAP, REPO

if TYPE_CHECKING:
    from upstream_tls import UpstreamTLS

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never an env proxy

# The mock's configuration for the harness's ns_* scenarios: a 256-byte answer, no delay.
NS_MOCK = {"chunks": 50, "first_delay_ms": 0.0, "chunk_delay_ms": 0.0, "content_bytes": 256}


def child_env() -> dict[str, str]:
    """Our environment minus proxies and PROMPTTAP_* settings that would redirect the store or upstream."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTTAP_")}
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(k, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


class Proc:
    """A process we start in its own session; stopped by its PID (and its children by theirs)."""

    live: list[Proc] = []

    def __init__(self, name: str, argv: list[str], log_path: Path, cwd: Path | None = None) -> None:
        self.name, self.argv, self.log_path, self.cwd = name, argv, log_path, cwd
        self.p: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None
        self.stop_seconds: float | None = None

    def start(self) -> Proc:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as f:
            f.write(f"# {dt.datetime.now().isoformat()} {shlex.join(self.argv)}\n".encode())
            self.p = subprocess.Popen(
                self.argv,
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.cwd,
                env=child_env(),
                start_new_session=True,
            )
        Proc.live.append(self)
        return self

    @property
    def pid(self) -> int:
        assert self.p is not None
        return self.p.pid

    def alive(self) -> bool:
        return self.p is not None and self.p.poll() is None

    def tree(self) -> list[psutil.Process]:
        if not self.alive():
            return []
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def rss_mib(self) -> float | None:
        total, n = 0, 0
        for p in self.tree():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
                n += 1
        return total / 2**20 if n else None

    def rss_split_mib(self) -> dict[str, float] | None:
        """RssAnon / RssFile of the tree (Linux): a leak grows anon; file is mapped code (chDB's library)."""
        out = {"anon": 0.0, "file": 0.0}
        for p in self.tree():
            try:
                for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                    if line.startswith(("RssAnon:", "RssFile:", "RssShmem:")):
                        key = "anon" if line.startswith("RssAnon") else "file"
                        out[key] += int(line.split()[1]) / 1024
            except OSError:
                return None
        return out

    def cpu_s(self) -> float:
        t = 0.0
        for p in self.tree():
            with contextlib.suppress(psutil.Error):
                c = p.cpu_times()
                t += c.user + c.system
        return t

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` (prompttap drains on SIGTERM), then SIGKILL."""
        if self.p is None:
            return None
        if self.p.poll() is None:
            kids = []
            with contextlib.suppress(psutil.Error):
                kids = psutil.Process(self.pid).children(recursive=True)
            t = time.monotonic()
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name} (pid {self.pid}) did not exit {timeout:.0f}s after SIGTERM: SIGKILL")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self.p.wait(10)
            self.stop_seconds = time.monotonic() - t
            for k in kids:
                with contextlib.suppress(psutil.Error):
                    if k.is_running():
                        k.kill()
        self.exit_code = self.p.returncode
        if self in Proc.live:
            Proc.live.remove(self)
        return self.exit_code


def cleanup() -> None:
    for p in reversed(list(Proc.live)):
        with contextlib.suppress(Exception):
            p.stop(timeout=15)


def on_signal(signum: int, _frame: Any) -> None:
    print(f"\nsignal {signum}: stopping the processes this run started", flush=True)
    cleanup()
    sys.exit(128 + signum)


def free_ports(n: int, start: int = 18700) -> list[int]:
    out = []
    for port in range(start, start + 1000):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((HOST, port))
            except OSError:
                continue
        out.append(port)
        if len(out) == n:
            return out
    raise RuntimeError(f"no {n} free loopback ports from {start}")


def http_json(
    url: str, method: str = "GET", body: bytes | None = None, timeout: float = 5.0, tls: ssl.SSLContext | None = None
) -> tuple[int, Any]:
    """A JSON request to one of our loopback servers; ``tls``: the context an https URL is verified with."""
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    opener = _OPENER
    if tls is not None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=tls))
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:  # healthz answers 503 with its JSON when degraded
        try:
            return e.code, json.loads(e.read() or b"null")
        except ValueError:
            return e.code, None


def wait_until(pred: Any, timeout: float, what: str, proc: Proc | None = None) -> None:
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        if proc is not None and not proc.alive():
            tail = [ln for ln in proc.log_path.read_text(errors="replace").splitlines() if ln.strip()][-1:]
            raise RuntimeError(
                f"{proc.name} exited (rc={proc.p.returncode if proc.p else None}): {tail[0][:300] if tail else ''} "
                f"(see {proc.log_path})"
            )
        try:
            if pred():
                return
        except Exception as exc:
            last = exc
        time.sleep(0.25)
    raise RuntimeError(f"{what}: not ready after {timeout:.0f}s ({last!r})")


def log_findings(path: Path, expected: Sequence[str] = ()) -> dict[str, Any]:
    """Warnings, errors and tracebacks in a prompttap log, but for lines containing an ``expected`` text."""
    if not path.exists():
        return {"path": str(path), "missing": True}
    counts = {"WARNING": 0, "ERROR": 0, "CRITICAL": 0, "Traceback": 0}
    first: list[str] = []
    for line in path.read_text(errors="replace").splitlines():
        if any(e in line for e in expected):
            continue
        hit = next((k for k in counts if f" {k} " in line or line.startswith(k)), None)
        if hit:
            counts[hit] += 1
            if len(first) < 8:
                first.append(line[:300])
    return {"path": str(path), "counts": counts, "first": first}


class Stack:
    """A mock upstream + one prompttap on a fresh home, both ours.

    ``serve_args`` go after prompttap's own ``serve`` options (another flavour of the proxy, e.g. one
    that also listens as a forward proxy). With ``tls`` the mock serves HTTPS with that certificate
    (``tls_mock.py``) and prompttap trusts its CA (``--upstream-ca``). ``ports``: the mock's and
    prompttap's (default: the first two free ones), for a caller that needs more free ports at once.
    """

    def __init__(
        self,
        name: str,
        logs: Path,
        home: Path,
        serve_args: Sequence[str] = (),
        tls: UpstreamTLS | None = None,
        ports: Sequence[int] | None = None,
    ) -> None:
        self.name, self.logs, self.home = name, logs, home
        up_port, self.port = ports or free_ports(2)
        self.tls = tls.client_context() if tls else None  # how we verify the mock's certificate
        self.upstream = f"{'https' if tls else 'http'}://{HOST}:{up_port}"
        self.url = f"http://{HOST}:{self.port}/v1/chat/completions"
        mock_argv = [str(HARNESS / "mock_upstream.py"), "--port", str(up_port)]
        if tls:
            mock_argv = [str(REPO / "bench" / "tls_mock.py"), "--port", str(up_port), "--cert", str(tls.cert)]
            serve_args = ["--upstream-ca", str(tls.ca), *serve_args]
        self.mock = Proc(f"{name}-mock", [str(BENCH_PY), *mock_argv], logs / f"{name}-mock.log", cwd=HARNESS)
        self.pt = Proc(
            f"{name}-prompttap",
            [
                str(PROMPTTAP),
                "serve",
                "--listen",
                f"{HOST}:{self.port}",
                "--no-ui",
                "--upstream",
                self.upstream,
                "--home",
                str(home),
                *serve_args,
            ],
            logs / f"{name}-prompttap.log",
            cwd=home,
        )

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.mock.start()
        wait_until(lambda: self.mock_json("/__mock/health")[0] == 200, 30, "mock upstream", self.mock)
        self.configure_mock(NS_MOCK)
        self.pt.start()
        t = time.monotonic()
        wait_until(lambda: self.health(2)[0] == 200, 120, "prompttap healthz", self.pt)
        log(f"prompttap pid {self.pt.pid} on :{self.port} ready in {time.monotonic() - t:.1f}s; home {self.home}")
        self.mock_json("/__mock/stats/reset", "POST", b"")

    def mock_json(self, path: str, method: str = "GET", body: bytes | None = None) -> tuple[int, Any]:
        return http_json(self.upstream + path, method, body, tls=self.tls)

    def configure_mock(self, cfg: dict[str, Any]) -> None:
        status, _ = self.mock_json("/__mock/config", "POST", json.dumps(cfg).encode())
        if status != 200:
            raise RuntimeError(f"the mock refused its config {cfg} ({status})")

    def health(self, timeout: float = 5.0) -> tuple[int, Any]:
        return http_json(f"http://{HOST}:{self.port}/_prompttap/healthz", timeout=timeout)

    def upstream_chat_count(self) -> int:
        stats = self.mock_json("/__mock/stats")[1] or {}
        return int(stats.get("/v1/chat/completions", 0))

    def wait_drained(self, timeout: float) -> tuple[float | None, dict[str, Any] | None]:
        """Poll healthz until sinks.clickhouse.pending == 0 and nothing is in flight."""
        t = time.monotonic()
        last_print = 0.0
        h: dict[str, Any] | None = None
        while time.monotonic() - t < timeout:
            try:
                _, h = self.health()
            except Exception as exc:
                log(f"healthz failed: {exc!r}")
                h = None
            if h:
                ch = h.get("sinks", {}).get("clickhouse", {})
                if ch.get("pending") == 0 and not h.get("inflight"):
                    return time.monotonic() - t, h
                if time.monotonic() - last_print > 5:
                    last_print = time.monotonic()
                    log(
                        f"draining: pending={ch.get('pending')} exported={ch.get('exported')} "
                        f"recorded={h.get('recorded')} inflight={h.get('inflight')} last_error={ch.get('last_error')!r}"
                    )
            if not self.pt.alive():
                raise RuntimeError(f"prompttap exited while draining; see {self.pt.log_path}")
            time.sleep(0.5)
        return None, h

    def stop_all(self) -> None:
        for p in (self.pt, self.mock):
            p.stop()
