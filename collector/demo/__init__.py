"""``prompttap demo``: a first run with nothing to configure and no internet.

Starts the simulated upstream (in this process), ``prompttap serve`` (a subprocess, as a user
would run it, with routes to the simulator and replay keys), sends the scripted traffic through
it, prints the inspector pages to open, then keeps serving until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prompttap.collector.demo.script import Script

DEFAULT_HOME = ".prompttap-demo"
KEY_VAR = "PROMPTTAP_DEMO_UPSTREAM_KEY"  # the replay key the simulator accepts (it accepts any)
ROUTES = ("anythingllm", "agent", "claude")
# The user's real sinks and settings stay out of the demo: its data is made up.
SCRUBBED_ENV = ("PROMPTTAP_", "LANGFUSE_", "OTEL_EXPORTER_OTLP_")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", metavar="HOST:PORT", help="proxy address (default: a free port on 127.0.0.1)")
    parser.add_argument("--ui", metavar="HOST:PORT", help="inspector address (default: a free port on 127.0.0.1)")
    parser.add_argument("--home", metavar="DIR", help=f"data folder for the demo (default ./{DEFAULT_HOME})")
    parser.add_argument(
        "--exit-after-script", action="store_true", help="stop after the traffic and the URLs (for tests and CI)"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _client_url(hostport: str, flag: str) -> str:
    from prompttap.collector.config import parse_hostport

    host, port = parse_hostport(hostport, flag)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _Terminated(KeyboardInterrupt):
    """SIGTERM ends the demo like Ctrl-C, so prompttap serve is stopped rather than orphaned."""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def run_demo(args: argparse.Namespace) -> int:
    from prompttap.collector.config import ConfigError
    from prompttap.collector.demo.script import Script
    from prompttap.collector.demo.simulator import Simulator

    home = Path(args.home or DEFAULT_HOME).resolve()
    listen, ui = args.listen or f"127.0.0.1:{_free_port()}", args.ui or f"127.0.0.1:{_free_port()}"
    try:
        proxy_url, ui_url = _client_url(listen, "--listen"), _client_url(ui, "--ui")
    except ConfigError as exc:
        print(f"prompttap: {exc}", file=sys.stderr)
        return 2
    home.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    sim = Simulator().start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED_ENV)}
    env[KEY_VAR] = "sk-demo-0000000000000000"
    cmd = [sys.executable, "-m", "prompttap", "serve", "--home", str(home), "--listen", listen, "--ui", ui]
    cmd += ["--upstream", sim.base_url, "--route", f"claude={sim.base_url}"]
    cmd += [f"--route={r}={sim.base_url}/v1" for r in ROUTES if r != "claude"]
    cmd += [f"--upstream-key={r}={KEY_VAR}" for r in ROUTES]
    log_path = home / "prompttap.log"
    print(f"prompttap demo: simulated upstream on {sim.base_url}, data in {home} (log: {log_path.name})")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    patience = 0.0  # how long prompttap serve may take to exit on its own before it is sent SIGTERM
    try:
        if not _wait_healthy(proc, proxy_url, ui_url):
            tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
            print("prompttap demo: prompttap serve did not start:\n  " + "\n  ".join(tail), file=sys.stderr)
            return 1
        script = Script(proxy=proxy_url, ui=ui_url, key=env[KEY_VAR])
        failed = _run_steps(script)
        problems = _summary(script, proxy_url)
        print(f"done in {time.monotonic() - started:.1f}s")
        if args.exit_after_script:
            return 1 if failed or problems else 0
        print("prompttap is still recording: open the pages above, or point an app at it. Ctrl-C stops.")
        code = proc.wait()
        print(f"prompttap serve exited ({code})")
        return code
    except KeyboardInterrupt as exc:
        print("\nstopping...", flush=True)
        # A terminal's Ctrl-C reached prompttap serve too (one process group): let it finish on its own.
        patience = 0.0 if isinstance(exc, _Terminated) else 10.0
        return 0
    finally:
        _stop(proc, patience)
        sim.stop()


def _wait_healthy(proc: subprocess.Popen[bytes], proxy_url: str, ui_url: str, timeout: float = 60.0) -> bool:
    import httpx

    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False, timeout=2) as http:
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                if all(
                    http.get(u).status_code in (200, 503)
                    for u in (f"{proxy_url}/_prompttap/healthz", f"{ui_url}/healthz")
                ):
                    return True
            time.sleep(0.1)
    return False


def _run_steps(script: Script) -> int:
    steps = script.steps()
    failed = 0
    for n, (title, step) in enumerate(steps, 1):
        print(f"[{n}/{len(steps)}] {title}...", end=" ", flush=True)
        t0 = time.monotonic()
        try:
            detail = step()
        except Exception as exc:  # report and go on: the other pages are still worth seeing
            failed += 1
            print(f"FAILED ({type(exc).__name__}: {exc})", flush=True)
        else:
            print(f"ok ({time.monotonic() - t0:.1f}s) {detail}", flush=True)
    return failed


def _summary(script: Script, proxy_url: str) -> list[str]:
    """Print the pages to open; returns the problems found on the way."""
    try:
        links = script.links()
    except Exception as exc:
        print(f"could not list the captures: {exc}")
        return [str(exc)]
    width = max(len(label) for label, _ in links)
    print("\nOpen the inspector:")
    for label, url in links:
        note = f"  ({script.blame(url)})" if label.startswith("diff:") else ""
        print(f"  {label:<{width}}  {url}{note}")
    problems = script.broken_pages(url for _, url in links)
    for p in problems:
        print(f"warning: {p}")
    print(f"\nThe proxy: {proxy_url}/anythingllm/v1, {proxy_url}/agent/v1, {proxy_url}/claude (simulated upstream)")
    return problems


def _stop(proc: subprocess.Popen[bytes], patience: float) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(patience)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # prompttap drains what it has, then exits 0
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
