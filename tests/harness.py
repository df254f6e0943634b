"""Running the real ``prompttap serve`` as a subprocess, for tests and the benchmark."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prompttap:
    """One ``prompttap serve`` process on loopback ports, with its own data folder."""

    def __init__(self, home: Path, upstream: str, *extra: str, ui: bool = True, env: dict[str, str] | None = None):
        self.home = home
        self.upstream = upstream
        self.extra = list(extra)
        self.ui = ui
        self.env = env or {}
        self.port = free_port()
        self.ui_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = home / "prompttap.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "prompttap", "serve", "--home", str(self.home)]
        cmd += ["--listen", f"127.0.0.1:{self.port}", "--upstream", self.upstream]
        cmd += ["--ui", f"127.0.0.1:{self.ui_port}"] if self.ui else ["--no-ui"]
        return cmd + self.extra

    def start(self, timeout: float = 60.0) -> Prompttap:
        self.home.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT), **self.env}
        for var in ("PROMPTTAP_UPSTREAM", "PROMPTTAP_STORE", "PROMPTTAP_HOME"):
            if var not in self.env:
                env.pop(var, None)
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(self.command(), cwd=ROOT, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prompttap exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/_prompttap/healthz", timeout=1).status_code in (200, 503):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"prompttap did not start in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def health(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/_prompttap/healthz", timeout=5).json()

    def captures(self, **params: Any) -> list[dict[str, Any]]:
        params.setdefault("limit", 1000)
        r = httpx.get(f"{self.ui_url}/api/captures", params=params, timeout=30)
        r.raise_for_status()
        return r.json()["items"]

    def capture(self, capture_id: str) -> dict[str, Any]:
        r = httpx.get(f"{self.ui_url}/api/captures/{capture_id}", timeout=30)
        r.raise_for_status()
        return r.json()

    def drained(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until every sink has taken everything spooled; returns the health."""
        deadline = time.monotonic() + timeout
        while True:
            h = self.health()
            if all(s["pending"] == 0 for s in h["sinks"].values()) and h["inflight"] == 0:
                return h
            if time.monotonic() > deadline:
                raise TimeoutError(f"spool not drained in {timeout}s: {h}")
            time.sleep(0.05)

    def wait_captures(self, n: int, timeout: float = 30.0, **params: Any) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            items = self.captures(**params)
            if len(items) >= n:
                return items
            if time.monotonic() > deadline:
                raise TimeoutError(f"expected {n} captures, have {len(items)}")
            time.sleep(0.05)

    def __enter__(self) -> Prompttap:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def query_store(home: Path, sql: str) -> list[list[Any]]:
    """Rows of ``sql`` on a stopped prompttap's embedded store (read in a child process:
    one process per embedded store, and the test process may open others)."""
    code = (
        "import json, sys\n"
        "from schemas.store import open_store\n"
        "c = open_store(sys.argv[1])\n"
        "print(json.dumps([list(r) for r in c.query(sys.argv[2]).result_rows], default=str))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, f"chdb://{(home / 'store').resolve()}", sql],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    import json

    return json.loads(out.stdout)
