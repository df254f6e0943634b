#!/usr/bin/env python3
"""prompttap benchmark: one interleaved harness run, a zero-loss check at saturation, an RSS soak.

    .venv/bin/python bench/run.py [options] [-- harness options]
    make bench ARGS="--no-litellm -- --quick"

Phases (``--phases``, default all three, in this order):

  harness  The shared harness (``run_bench.py``, found at ``../shared/bench`` from the repo root or at
           ``$PROMPTTAP_BENCH_HARNESS``) in ONE interleaved run: direct, nginx, litellm, the minimal
           aiohttp pass-through and prompttap (recording on, embedded ClickHouse), each load
           starting once prompttap has drained the last one's captures (``quiet_harness.py``,
           so its drain never lands on another target's measurement). Everything after
           ``--`` goes to ``run_bench.py`` (``--quick``, ``--rounds``, ``--duration``, ``--scenarios``...).
  lost     prompttap + the harness's mock upstream, wrk at c=64 (unique bodies) then asyncio streams at
           c=64; wait until healthz shows nothing pending, SIGTERM, open the store in a child process
           and compare the rows with what the load generator completed, the upstream received and
           healthz ``recorded``.
  soak     N requests (``--soak``, default 100000) through a fresh prompttap at c=64 in wrk chunks,
           sampling its RSS; RSS after warmup, at 25/50/75/100 % and the max (target < 500 MB, flat).

The result is one table (measured value, target, PASS/FAIL), printed and saved as
``bench/results/<timestamp>.md`` (with ``<timestamp>.json``, the harness's output in
``<timestamp>-harness/`` and process logs in ``<timestamp>-logs/``). Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
HARNESS = Path(os.environ.get("PROMPTTAP_BENCH_HARNESS") or REPO.parent / "shared" / "bench").resolve()
BENCH_VENV = Path(os.environ.get("BENCH_VENV", "/tmp/bench-venv"))
LITELLM_VENV = Path(os.environ.get("LITELLM_VENV", "/tmp/litellm-venv"))
BENCH_PY = BENCH_VENV / "bin" / "python"
PROMPTTAP = REPO / ".venv" / "bin" / "prompttap"
REPO_PY = REPO / ".venv" / "bin" / "python"
RESULTS = REPO / "bench" / "results"
HOST = "127.0.0.1"
MB500_MIB = 500e6 / 2**20  # the "500 MB" in MiB (476.8)
LITELLM_REF_RPS = 202.0  # harness README, 2026-11-25 reference run (ns_c64, LiteLLM 1.82.6)

T0 = time.monotonic()
_PHASE = ["setup"]
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never an env proxy


def log(msg: str) -> None:
    el = time.monotonic() - T0
    print(f"[{time.strftime('%H:%M:%S')} +{el:6.0f}s {_PHASE[0]}] {msg}", flush=True)


def child_env() -> dict[str, str]:
    """Our environment minus proxies and PROMPTTAP_* settings that would redirect the store or upstream."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTTAP_")}
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(k, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


# ============================================================================ processes
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


def http_json(url: str, method: str = "GET", body: bytes | None = None, timeout: float = 5.0) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with _OPENER.open(req, timeout=timeout) as r:
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


# ============================================================================ prerequisites
def check_prereqs(need_litellm: bool, need_nginx: bool) -> list[str]:
    missing = []
    if shutil.which("wrk") is None:
        missing.append("wrk")
    if need_nginx and shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        missing.append("nginx")
    if not BENCH_PY.exists():
        missing.append(str(BENCH_VENV))
    else:
        r = subprocess.run(
            [str(BENCH_PY), "-c", "import uvicorn, uvloop, httptools, orjson, aiohttp, psutil"], capture_output=True
        )
        if r.returncode:
            missing.append(f"{BENCH_VENV} (packages)")
    if need_litellm and not (LITELLM_VENV / "bin" / "litellm").exists():
        missing.append(str(LITELLM_VENV))
    return missing


def ensure_prereqs(need_litellm: bool, need_nginx: bool) -> None:
    if not (HARNESS / "run_bench.py").exists():
        sys.exit(f"harness not found at {HARNESS} (set PROMPTTAP_BENCH_HARNESS)")
    if not PROMPTTAP.exists():
        sys.exit(f"{PROMPTTAP} missing: run `make install` first")
    missing = check_prereqs(need_litellm, need_nginx)
    if not missing:
        log(f"prerequisites present (wrk, nginx, {BENCH_VENV}" + (f", {LITELLM_VENV})" if need_litellm else ")"))
        return
    cmd = ["bash", str(HARNESS / "setup.sh")]
    env = dict(os.environ, BENCH_VENV=str(BENCH_VENV), LITELLM_VENV=str(LITELLM_VENV))
    if not need_litellm:
        env["SKIP_LITELLM"] = "1"
    log(f"missing: {', '.join(missing)}")
    if os.geteuid() != 0:
        sys.exit(
            f"the harness's setup.sh needs root (apt-get install wrk nginx-light, venvs from PyPI); run as root:\n"
            f"  {'SKIP_LITELLM=1 ' if not need_litellm else ''}bash {HARNESS / 'setup.sh'}"
        )
    log(
        f"running {shlex.join(cmd)}{' with SKIP_LITELLM=1' if not need_litellm else ''}: apt-get install wrk "
        f"nginx-light if absent, pip install the harness requirements into {BENCH_VENV}"
        + (f", litellm[proxy] (pinned by setup.sh) into {LITELLM_VENV}" if need_litellm else "")
        + " (about 2 min)"
    )
    r = subprocess.run(cmd, env=env, timeout=1800)
    if r.returncode:
        sys.exit(f"setup.sh failed (rc={r.returncode})")
    missing = check_prereqs(need_litellm, need_nginx)
    if missing:
        sys.exit(f"still missing after setup.sh: {', '.join(missing)}")
    log("setup done")


# ============================================================================ phase: harness
def run_harness(a: argparse.Namespace, passthrough: list[str], out: Path) -> dict[str, Any]:
    q = shlex.quote
    targets = "direct,nginx" if a.no_litellm else "direct,nginx,litellm"
    cmd = [
        str(BENCH_PY),
        str(REPO / "bench" / "quiet_harness.py"),  # run_bench.py, waiting for prompttap's drain before each load
        str(HARNESS),
        "--out",
        str(out),
        "--targets",
        targets,
        "--target",
        f"aiohttp-min={q(str(BENCH_PY))} {q(str(HARNESS / 'examples' / 'minimal_proxy.py'))} "
        "--port {port} --upstream {upstream}",
        "--target",
        f"prompttap={q(str(PROMPTTAP))} serve --listen 127.0.0.1:{{port}} --no-ui --upstream {{upstream}} "
        "--home {workdir}",
        "--target-version",
        f"prompttap={q(str(PROMPTTAP))} --version",
        *passthrough,
    ]
    log("running: " + shlex.join(cmd))
    out.mkdir(parents=True, exist_ok=True)
    p = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=HARNESS,
        env=child_env(),
        start_new_session=True,
    )
    deadline = time.monotonic() + a.harness_timeout
    timer = threading.Timer(a.harness_timeout, lambda: p.poll() is None and os.kill(p.pid, signal.SIGTERM))
    timer.daemon = True
    timer.start()
    try:
        assert p.stdout is not None
        with open(out / "harness-console.log", "wb") as f:
            for line in p.stdout:
                f.write(line)
                text = line.decode("utf-8", "replace").rstrip()
                if text.startswith("|") or not text:  # the harness prints its own results.md at the end
                    continue
                log(text)
        rc = p.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGTERM)  # the harness stops what it started on SIGTERM
        p.wait(30)
        raise
    finally:
        timer.cancel()
    if time.monotonic() > deadline:
        raise RuntimeError(f"harness exceeded --harness-timeout {a.harness_timeout:.0f}s")
    if rc != 0 or not (out / "results.json").exists():
        raise RuntimeError(f"run_bench.py failed (rc={rc}); see {out / 'harness-console.log'}")
    res = json.loads((out / "results.json").read_text())
    quiet = json.loads((out / "quiet.json").read_text()) if (out / "quiet.json").exists() else None
    log(f"harness done: {out / 'results.md'}")
    return {
        "results": res,
        "out": str(out),
        "quiet": quiet,
        "prompttap_log": log_findings(out / "logs" / "prompttap.log"),
    }


def log_findings(path: Path) -> dict[str, Any]:
    """Warnings, errors and tracebacks in a prompttap log."""
    if not path.exists():
        return {"path": str(path), "missing": True}
    counts = {"WARNING": 0, "ERROR": 0, "CRITICAL": 0, "Traceback": 0}
    first: list[str] = []
    for line in path.read_text(errors="replace").splitlines():
        hit = next((k for k in counts if f" {k} " in line or line.startswith(k)), None)
        if hit:
            counts[hit] += 1
            if len(first) < 8:
                first.append(line[:300])
    return {"path": str(path), "counts": counts, "first": first}


# ============================================================================ lost / soak helpers
class Stack:
    """A mock upstream + one prompttap on a fresh home, both ours."""

    def __init__(self, name: str, logs: Path, home: Path) -> None:
        self.name, self.logs, self.home = name, logs, home
        up_port, self.port = free_ports(2)
        self.upstream = f"http://{HOST}:{up_port}"
        self.url = f"http://{HOST}:{self.port}/v1/chat/completions"
        self.mock = Proc(
            f"{name}-mock",
            [str(BENCH_PY), str(HARNESS / "mock_upstream.py"), "--port", str(up_port)],
            logs / f"{name}-mock.log",
            cwd=HARNESS,
        )
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
            ],
            logs / f"{name}-prompttap.log",
            cwd=home,
        )

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.mock.start()
        wait_until(lambda: http_json(self.upstream + "/__mock/health")[0] == 200, 30, "mock upstream", self.mock)
        # the non-streaming config of the harness's ns_* scenarios (256-byte answer, no delay)
        cfg = {"chunks": 50, "first_delay_ms": 0.0, "chunk_delay_ms": 0.0, "content_bytes": 256}
        http_json(self.upstream + "/__mock/config", "POST", json.dumps(cfg).encode())
        self.pt.start()
        t = time.monotonic()
        wait_until(lambda: self.health(2)[0] == 200, 120, "prompttap healthz", self.pt)
        log(f"prompttap pid {self.pt.pid} on :{self.port} ready in {time.monotonic() - t:.1f}s; home {self.home}")
        http_json(self.upstream + "/__mock/stats/reset", "POST", b"")

    def health(self, timeout: float = 5.0) -> tuple[int, Any]:
        return http_json(f"http://{HOST}:{self.port}/_prompttap/healthz", timeout=timeout)

    def upstream_chat_count(self) -> int:
        stats = http_json(self.upstream + "/__mock/stats")[1] or {}
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


def run_wrk(url: str, concurrency: int, duration: int, tag: str) -> dict[str, Any]:
    """wrk with the harness's ``wrk_post.lua``; every body unique (``bench <tag>-<thread>-<n>``).

    Same request and parsing as the harness's loadgen ``wrk`` mode, but with a per-run tag: wrk's
    counter restarts with each run, so without it bodies would repeat across runs.
    """
    with tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False) as bf:
        body = {"model": "mock", "messages": [{"role": "user", "content": f"bench {tag}-@@N@@"}]}
        bf.write(json.dumps(body).encode())
    env = dict(child_env(), WRK_BODY_FILE=bf.name, WRK_UNIQUE="1")
    env.pop("WRK_JSON_OUT", None)
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{duration}s", "--timeout", "10s"]
    cmd += ["-s", str(HARNESS / "wrk_post.lua"), url]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, env=env)
    finally:
        os.unlink(bf.name)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed rc={r.returncode}: {r.stdout[-500:]} {r.stderr[-500:]}")
    w = json.loads(line[len("WRKJSON ") :])
    dur = w["duration_us"] / 1e6
    ok = w["requests"] - w["err_status"]
    return {
        "concurrency": concurrency,
        "duration_s": dur,
        "requests": w["requests"],
        "ok": ok,
        "errors": sum(w[k] for k in w if k.startswith("err_")),
        "error_detail": {k: w[k] for k in w if k.startswith("err_")},
        "rps": ok / dur if dur else 0.0,
        "lat_p50_ms": w["lat_p50_us"] / 1000,
        "lat_p99_ms": w["lat_p99_us"] / 1000,
        "lat_max_ms": w["lat_max_us"] / 1000,
    }


def run_closed_stream(url: str, upstream: str, concurrency: int, duration: float) -> dict[str, Any]:
    """The harness's loadgen asyncio `closed` mode with SSE; it finishes every request it started."""
    cmd = [str(BENCH_PY), str(HARNESS / "loadgen.py"), "closed", "--url", url, "-c", str(concurrency)]
    cmd += ["-d", str(duration), "--stream", "--upstream-admin", upstream]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 180, cwd=HARNESS, env=child_env())
    if r.returncode:
        raise RuntimeError(f"loadgen closed failed rc={r.returncode}: {r.stderr[-800:]}")
    return json.loads(r.stdout)


COUNT_SCRIPT = r"""
import json, sys
from prompttap.schemas.store import open_store
c = open_store("chdb://" + sys.argv[1])
q = lambda sql: c.query(sql).result_rows
out = {}
r = q("SELECT count(), uniqExact(id), uniqExact(request_sha256), countIf(status_code = 200 AND outcome = 'ok') "
      "FROM captures")[0]
out.update(rows=r[0], ids=r[1], bodies=r[2], ok_rows=r[3])
out["rows_final"] = q("SELECT count() FROM captures FINAL")[0][0]
out["by_outcome"] = [[str(a), int(b), bool(s), int(n)] for a, b, s, n in
                     q("SELECT outcome, status_code, stream, count() FROM captures GROUP BY 1, 2, 3 ORDER BY 4 DESC")]
out["by_stream"] = {("stream" if s else "json"): [int(n), int(u)] for s, n, u in
                    q("SELECT stream, count(), uniqExact(request_sha256) FROM captures GROUP BY 1")}
out["errors"] = [str(e)[:300] for (e,) in q("SELECT DISTINCT error FROM captures WHERE error != '' LIMIT 5")]
out["incomplete"] = q("SELECT countIf(incomplete), countIf(parse_error != '') FROM captures")[0]
print("COUNTJSON " + json.dumps(out))
"""


def count_store(home: Path) -> dict[str, Any]:
    """Open the embedded store in a child process (prompttap must have exited) and count captures."""
    store = (home / "store").resolve()
    r = subprocess.run(
        [str(REPO_PY), "-c", COUNT_SCRIPT, str(store)], capture_output=True, text=True, timeout=600, cwd=REPO
    )
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("COUNTJSON ")), None)
    if line is None:
        raise RuntimeError(f"counting the store failed rc={r.returncode}: {r.stderr[-1500:]}")
    return json.loads(line[len("COUNTJSON ") :])


def leftovers(home: Path) -> dict[str, Any]:
    rejected = home / "rejected"
    spool = home / "spool"
    return {
        "rejected_files": len(list(rejected.iterdir())) if rejected.exists() else 0,
        "spool_bytes": sum(f.stat().st_size for f in spool.glob("*") if f.is_file()) if spool.exists() else 0,
    }


def finish_and_count(stack: Stack, a: argparse.Namespace) -> dict[str, Any]:
    """Wait for the drain, SIGTERM prompttap, count the store. Shared by the lost and soak phases."""
    out: dict[str, Any] = {}
    out["upstream_received"] = stack.upstream_chat_count()
    log("waiting for healthz sinks.clickhouse.pending == 0")
    drain_s, h = stack.wait_drained(a.drain_timeout)
    out["drain_seconds"] = drain_s
    out["health_final"] = h
    if drain_s is None:
        log(f"NOT drained after {a.drain_timeout:.0f}s")
    else:
        log(f"drained in {drain_s:.1f}s")
    out["rss_after_drain_mib"] = stack.pt.rss_mib()
    log("stopping prompttap (SIGTERM)")
    rc = stack.pt.stop(timeout=60)
    out["exit_code"], out["stop_seconds"] = rc, stack.pt.stop_seconds
    log(f"prompttap exited rc={rc} after {stack.pt.stop_seconds or 0:.1f}s")
    stack.mock.stop()
    t = time.monotonic()
    out["store"] = count_store(stack.home)
    log(f"store counted in {time.monotonic() - t:.1f}s: {out['store']}")
    out.update(leftovers(stack.home))
    out["log"] = log_findings(stack.pt.log_path)
    return out


def loss_summary(completed: int, res: dict[str, Any]) -> dict[str, Any]:
    st = res["store"]
    h = res.get("health_final") or {}
    ch = h.get("sinks", {}).get("clickhouse", {})
    return {
        "completed": completed,
        "upstream_received": res["upstream_received"],
        "recorded": h.get("recorded"),
        "exported": ch.get("exported"),
        "dropped": h.get("dropped"),
        "rejected": ch.get("rejected"),
        "failed_exports": ch.get("failed_exports"),
        "rows": st["rows"],
        "distinct_ids": st["ids"],
        "distinct_requests": st["bodies"],
        "ok_rows": st["ok_rows"],
        # every request the client saw complete must be stored; bodies are unique per request
        "lost": max(0, completed - st["bodies"]),
        # every exchange that reached the upstream should be stored (incl. those wrk abandoned at its end)
        "unaccounted_vs_upstream": res["upstream_received"] - st["bodies"],
        "duplicate_rows_same_id": st["rows"] - st["ids"],
        "duplicate_captures_same_request": st["ids"] - st["bodies"],
    }


# ============================================================================ phase: lost
def run_lost(a: argparse.Namespace, logs: Path, work: Path) -> dict[str, Any]:
    stack = Stack("lost", logs, work / "lost-home")
    try:
        stack.start()
        cpu0 = stack.pt.cpu_s()
        log(f"wrk c={a.lost_concurrency} for {a.lost_duration}s, unique bodies -> {stack.url}")
        w = run_wrk(stack.url, a.lost_concurrency, a.lost_duration, "lost")
        log(
            f"wrk: {w['requests']} requests completed, {w['errors']} errors ({w['error_detail']}), "
            f"{w['rps']:.0f} req/s, p50 {w['lat_p50_ms']:.2f} ms, p99 {w['lat_p99_ms']:.2f} ms"
        )
        s: dict[str, Any] | None = None
        if a.lost_stream_duration > 0:
            log(f"asyncio SSE streams c={a.lost_concurrency} for {a.lost_stream_duration:g}s (closed loop)")
            s = run_closed_stream(stack.url, stack.upstream, a.lost_concurrency, a.lost_stream_duration)
            log(
                f"streams: {s['requests']} sent, {s['ok']} ok, {s['errors']} errors {s.get('error_kinds')}, "
                f"{s['rps']:.0f} streams/s, bytes identical {s.get('bytes_identical')}/{s.get('verified')}"
            )
        cpu = stack.pt.cpu_s() - cpu0
        completed = int(w["ok"]) + (int(s["ok"]) if s else 0)
        res = finish_and_count(stack, a)
        res.update(wrk=w, streams=s, cpu_ms_per_req=cpu * 1000 / completed if completed else None)
        res["summary"] = loss_summary(completed, res)
        sm = res["summary"]
        log(
            f"requests completed {sm['completed']} (wrk {w['ok']}"
            + (f" + streams {s['ok']}" if s else "")
            + f"), reached upstream {sm['upstream_received']}, healthz recorded {sm['recorded']}, "
            f"captures stored {sm['distinct_requests']} distinct ({sm['rows']} rows), lost {sm['lost']}, "
            f"duplicates {sm['duplicate_rows_same_id'] + sm['duplicate_captures_same_request']}"
        )
        return res
    finally:
        stack.stop_all()


# ============================================================================ phase: soak
class Sampler(threading.Thread):
    def __init__(self, stack: Stack, interval: float) -> None:
        super().__init__(daemon=True)
        self.stack, self.interval = stack, interval
        self.samples: list[dict[str, Any]] = []
        self.halt = threading.Event()

    def sample(self) -> dict[str, Any]:
        s: dict[str, Any] = {"t": time.monotonic() - T0, "rss_mib": self.stack.pt.rss_mib()}
        split = self.stack.pt.rss_split_mib()
        if split:
            s["anon_mib"], s["file_mib"] = split["anon"], split["file"]
        try:
            _, h = self.stack.health(timeout=5)
            s["recorded"] = h.get("recorded")
            s["pending"] = h.get("sinks", {}).get("clickhouse", {}).get("pending")
        except Exception:
            pass
        self.samples.append(s)
        return s

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            self.sample()


def run_soak(a: argparse.Namespace, logs: Path, work: Path) -> dict[str, Any]:
    n = a.soak
    stack = Stack("soak", logs, work / "soak-home")
    try:
        stack.start()
        time.sleep(1)
        rss_idle = stack.pt.rss_mib()
        split_idle = stack.pt.rss_split_mib() or {}
        log(
            f"RSS at start (idle, no request yet): {rss_idle:.1f} MiB "
            f"(anon {split_idle.get('anon', 0):.1f}, file-backed {split_idle.get('file', 0):.1f})"
        )
        log("warmup: wrk c=8 for 3s")
        warm = run_wrk(stack.url, 8, 3, "warmup")
        time.sleep(2)
        rss_warm = stack.pt.rss_mib()
        split_warm = stack.pt.rss_split_mib() or {}
        base = int((stack.health()[1] or {}).get("recorded") or 0)  # captures so far (the warmup's)
        log(f"RSS after warmup ({warm['ok']} requests): {rss_warm:.1f} MiB")
        sampler = Sampler(stack, a.sample_interval)
        sampler.start()
        done, marks, chunks = 0, [], []
        rate = None
        cpu0 = stack.pt.cpu_s()
        t_start = time.monotonic()
        try:
            while done < n:
                left = a.soak_max_seconds - (time.monotonic() - t_start)
                if left < 2:
                    log(f"--soak-max-seconds {a.soak_max_seconds:.0f} reached at {done}/{n} requests")
                    break
                # chunks of at most ~1/8 of N so the 25/50/75/100 % marks land near their targets
                want = (n - done) if rate is None else min(n - done, max(n / 8, 1))
                d = 5 if rate is None else int(min(30, max(2, round(want / rate))))
                d = int(min(d, left))
                w = run_wrk(stack.url, a.soak_concurrency, d, f"soak{len(chunks)}")
                done += int(w["ok"])
                rate = max(1.0, w["rps"] or 1.0)
                s = sampler.sample()
                chunks.append({"done": done, "rps": w["rps"], "errors": w["errors"], "rss_mib": s["rss_mib"]})
                marks.append((done, s["rss_mib"], s.get("anon_mib")))
                log(
                    f"{done}/{n} requests ({100 * done / n:.0f}%), {w['rps']:.0f} req/s, errors {w['errors']}, "
                    f"RSS {s['rss_mib']:.1f} MiB (anon {f(s.get('anon_mib'), 1)}), pending {s.get('pending')}"
                )
        finally:
            sampler.halt.set()
            sampler.join(5)
        load_s = time.monotonic() - t_start
        cpu = stack.pt.cpu_s() - cpu0
        # progress points: every chunk end (wrk's count) and every sample (healthz recorded - warmup)
        points = sorted(
            marks
            + [
                (x["recorded"] - base, x["rss_mib"], x.get("anon_mib"))
                for x in sampler.samples
                if x.get("recorded") and x["rss_mib"]
            ]
        )
        rss_at = {}
        for pct in (25, 50, 75, 100):
            hit = next((m for m in points if m[0] >= n * pct / 100), None)
            rss_at[pct] = {"requests": hit[0], "rss_mib": hit[1], "anon_mib": hit[2]} if hit else None
        rss_all = [x["rss_mib"] for x in sampler.samples if x.get("rss_mib")] + [m[1] for m in marks if m[1]]
        pend = [x["pending"] for x in sampler.samples if x.get("pending") is not None]
        res = finish_and_count(stack, a)
        res.update(
            requests=done,
            target_requests=n,
            load_seconds=load_s,
            rss_after_warmup_mib=rss_warm,
            split_at_start_mib=split_idle,
            split_after_warmup_mib=split_warm,
            rss_at=rss_at,
            rss_max_mib=max(rss_all) if rss_all else None,
            pending_max=max(pend) if pend else None,
            cpu_ms_per_req=cpu * 1000 / done if done else None,
            chunks=chunks,
            samples=sampler.samples,
        )
        res["rss_at_start_mib"] = rss_idle
        res["summary"] = loss_summary(done + int(warm["ok"]), res)  # the store also holds the warmup's
        log(
            f"RSS at start {rss_idle:.1f} MiB, after warmup {rss_warm:.1f} MiB; "
            + ", ".join(f"{p}%: {v['rss_mib']:.1f}" if v else f"{p}%: -" for p, v in rss_at.items())
            + f" MiB; max {res['rss_max_mib']:.1f} MiB; after drain {res['rss_after_drain_mib'] or 0:.1f} MiB"
        )
        return res
    finally:
        stack.stop_all()


# ============================================================================ report
def f(v: Any, nd: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def verdict(ok: bool | None) -> str:
    return "SKIP" if ok is None else ("PASS" if ok else "**FAIL**")


def harness_rows(h: dict[str, Any]) -> tuple[list[list[str]], list[str]]:
    res = h["results"]
    med = res["medians"]
    names = [t["name"] for t in res["targets"]]
    pt = "prompttap"
    notes: list[str] = []
    rows: list[list[str]] = []

    def m(sc: str, tgt: str, key: str) -> float | None:
        v = med.get(sc, {}).get(tgt, {}).get(key)
        return v if isinstance(v, (int, float)) else None

    def added(sc: str, key: str) -> tuple[float | None, float | None, float | None]:
        p, d = m(sc, pt, key), m(sc, "direct", key)
        return (p - d if p is not None and d is not None else None), p, d

    for label, sc, key, lim in (
        ("added p50 latency, c=1 (ns_c1) vs direct", "ns_c1", "lat_p50_ms", 1.0),
        ("added p99 latency, c=1 (ns_c1) vs direct", "ns_c1", "lat_p99_ms", 3.0),
        ("TTFT overhead p50, 1 stream (stream_c1)", "stream_c1", "ttft_p50_ms", 1.0),
        ("TTFT overhead p50, 16 streams (stream_c16)", "stream_c16", "ttft_p50_ms", 2.0),
    ):
        dv, p, d = added(sc, key)
        if dv is None:
            rows.append([label, "not measured (scenario not run)", f"< {lim:g} ms", "SKIP"])
            continue
        extra = ""
        if key.startswith("ttft"):
            d99, _, _ = added(sc, "ttft_p99_ms")
            extra = f"; p99 {d99:+.2f} ms" if d99 is not None else ""
        ng = m(sc, "nginx", key)
        ref = f"; nginx {ng - d:+.2f}" if ng is not None and d is not None else ""
        am = m(sc, "aiohttp-min", key)
        ref += f", aiohttp-min {am - d:+.2f}" if am is not None and d is not None else ""
        rows.append([label, f"{dv:+.3f} ms ({p:.3f} vs {d:.3f}{extra}{ref})", f"< {lim:g} ms", verdict(dv < lim)])

    sat = next((s["id"] for s in res["scenarios"] if s["kind"] == "wrk" and s.get("concurrency", 1) > 1), None)
    prps = m(sat, pt, "rps") if sat else None
    lrps = m(sat, "litellm", "rps") if sat else None
    arps = m(sat, "aiohttp-min", "rps") if sat else None
    if prps is None:
        rows.append(["saturation req/s vs LiteLLM", "not measured (scenario not run)", "≥ 10x", "SKIP"])
        rows.append(["saturation req/s vs aiohttp-min", "not measured (scenario not run)", "≥ 40 %", "SKIP"])
    else:
        if lrps:
            rows.append(
                [
                    f"saturation req/s vs LiteLLM ({sat})",
                    f"{prps:.0f} vs {lrps:.0f} req/s = {prps / lrps:.1f}x",
                    "≥ 10x",
                    verdict(prps / lrps >= 10),
                ]
            )
        else:
            rows.append(
                [
                    f"saturation req/s vs LiteLLM ({sat})",
                    f"{prps:.0f} req/s; LiteLLM not run (reference run: {LITELLM_REF_RPS:.0f} req/s → "
                    f"{prps / LITELLM_REF_RPS:.1f}x)",
                    "≥ 10x",
                    "SKIP",
                ]
            )
        if arps:
            rows.append(
                [
                    f"saturation req/s vs aiohttp-min ({sat})",
                    f"{prps:.0f} vs {arps:.0f} req/s = {100 * prps / arps:.0f} %",
                    "≥ 40 %",
                    verdict(prps / arps >= 0.40),
                ]
            )
        else:
            rows.append([f"saturation req/s vs aiohttp-min ({sat})", "aiohttp-min not run", "≥ 40 %", "SKIP"])

    # byte identity: every streamed response in the measurements + the one-per-shape fidelity check
    ident = ver = 0
    for sc_runs in res["raw"].values():
        for r in sc_runs.get(pt, []):
            ident += r.get("bytes_identical") or 0
            ver += r.get("verified") or 0
    fid = res["fidelity"].get(pt, {})
    fb = [k for k, v in fid.items() if v.get("bytes_identical")]
    bad = {k: (v.get("status") if v.get("status") != 200 else "differs") for k, v in fid.items() if k not in fb}
    if ver or fid:
        pctv = 100.0 * ident / ver if ver else None
        val = (f"{pctv:.2f} % of {ver} streams" if ver else "no streams verified") + f"; shapes {len(fb)}/{len(fid)}"
        val += f" (not identical: {bad})" if bad else ""
        ok = (pctv is None or pctv == 100.0) and not bad
        rows.append(["bytes identical to upstream", val, "100 %", verdict(ok)])

    errs = [(sc, r.get("errors") or 0) for sc, sc_runs in res["raw"].items() for r in sc_runs.get(pt, [])]
    n_err = sum(e for _, e in errs)
    rows.append(
        [
            "errors in prompttap's measurements",
            f"{n_err}" + (f" ({', '.join(f'{s}: {e}' for s, e in errs if e)})" if n_err else ""),
            "0",
            verdict(n_err == 0),
        ]
    )

    cpu_parts = []
    for s in res["scenarios"]:
        v = m(s["id"], pt, "proxy_cpu_ms_per_req")
        if v is not None:
            am = m(s["id"], "aiohttp-min", "proxy_cpu_ms_per_req")
            cpu_parts.append(f"{s['id']} {v:.3f}" + (f" (aiohttp-min {am:.3f})" if am is not None else ""))
    if cpu_parts:
        rows.append(["proxy CPU ms/req (ms/stream for stream_*)", "; ".join(cpu_parts), "report vs floor", "INFO"])

    mem = res["memory"].get(pt, {})
    rss = [mem.get("start", {}).get("rss_mib"), mem.get("end", {}).get("rss_mib"), mem.get("peak_rss_mib")]
    if any(x is not None for x in rss):
        amem = res["memory"].get("aiohttp-min", {})
        peak = max(x for x in rss if x is not None)
        val = f"after warmup {f(rss[0], 1)} / after runs {f(rss[1], 1)} / peak {f(rss[2], 1)} MiB"
        if amem:
            val += f" (aiohttp-min {f(amem.get('end', {}).get('rss_mib'), 1)})"
        if mem.get("workdir_bytes"):
            val += f"; wrote {mem['workdir_bytes'] / 2**20:.1f} MiB to its home"
        rows.append(["RSS during the harness run", val, f"< 500 MB ({MB500_MIB:.0f} MiB)", verdict(peak < MB500_MIB)])
        if mem.get("idle_cpu_pct") is not None:
            rows.append(["idle CPU", f"{mem['idle_cpu_pct']:.2f} % of a core", "report", "INFO"])

    busy = [r.get("host_busy_pct") for sc_runs in res["raw"].values() for rs in sc_runs.values() for r in rs]
    busy = [b for b in busy if b is not None]
    meta = res["meta"]
    notes.append(
        f"Harness: {meta['rounds']} round(s) x {meta['duration_s']:g} s, targets {', '.join(names)}; "
        f"host CPU busy during measurements median {statistics.median(busy):.0f} % (max {max(busy):.0f} %)."
        if busy
        else f"Harness: {meta['rounds']} round(s) x {meta['duration_s']:g} s, targets {', '.join(names)}."
    )
    quiet = h.get("quiet")
    if quiet is not None:
        w = quiet["waits"]
        left = [x for x in w if x.get("left")]
        notes.append(
            f"Before each warmup and measurement the harness waited for prompttap to drain its captures "
            f"(bench/quiet_harness.py): {len(w)} waits, {sum(x['waited_s'] for x in w):.0f} s in all, "
            f"longest {max((x['waited_s'] for x in w), default=0):.1f} s"
            + (f"; {len(left)} ran out after {quiet['timeout_s']:.0f} s." if left else ".")
        )
    c1 = res["raw"].get("ns_c1", {})
    per_round = [
        (p.get("lat_p99_ms"), d.get("lat_p99_ms"))
        for p, d in zip(c1.get(pt, []), c1.get("direct", []), strict=False)  # both in round order
    ]
    if per_round and all(isinstance(x, (int, float)) for pair in per_round for x in pair):
        notes.append(
            "ns_c1 p99 by round, prompttap vs direct (ms): "
            + ", ".join(f"{p:.2f} vs {d:.2f} ({p - d:+.2f})" for p, d in per_round)
            + "."
        )
    if meta.get("concurrent_benchmarks"):
        notes.append(
            "WARNING: other benchmarks ran during the harness run: " + "; ".join(meta["concurrent_benchmarks"])
        )
    if meta["rounds"] < 3:
        notes.append("Fewer than 3 rounds: a smoke test, not a measurement (p99 at c=1 especially is noise).")
    return rows, notes


def loss_rows(name: str, r: dict[str, Any]) -> list[list[str]]:
    s = r["summary"]
    dup = s["duplicate_rows_same_id"] + s["duplicate_captures_same_request"]
    drained = r.get("drain_seconds")
    val = (
        f"completed {s['completed']}, reached upstream {s['upstream_received']}, recorded {s['recorded']}, "
        f"stored {s['distinct_requests']} distinct ({s['rows']} rows); lost {s['lost']}"
    )
    if s["unaccounted_vs_upstream"]:
        val += f"; {s['unaccounted_vs_upstream']:+d} vs upstream"
    rows = [[f"{name}: captures lost", val, "0", verdict(s["lost"] == 0 and s["unaccounted_vs_upstream"] <= 0)]]
    rows.append(
        [
            f"{name}: duplicate captures",
            f"{dup} (same id {s['duplicate_rows_same_id']}, same request twice {s['duplicate_captures_same_request']})",
            "0",
            verdict(dup == 0),
        ]
    )
    rows.append(
        [
            f"{name}: drained to ClickHouse",
            (f"pending 0 after {drained:.1f} s" if drained is not None else "pending never reached 0")
            + f"; dropped {s['dropped']}, rejected {s['rejected']}, failed exports {s['failed_exports']}; "
            f"SIGTERM → exit {r.get('exit_code')} in {f(r.get('stop_seconds'), 1)} s",
            "pending 0, exit 0",
            verdict(drained is not None and r.get("exit_code") == 0 and not s["dropped"] and not s["rejected"]),
        ]
    )
    lg = r.get("log", {}).get("counts", {})
    if any(lg.values()):
        rows.append(
            [f"{name}: prompttap log", ", ".join(f"{k} {v}" for k, v in lg.items() if v), "clean", verdict(False)]
        )
    return rows


def soak_rows(r: dict[str, Any]) -> list[list[str]]:
    at = r["rss_at"]
    vals = ", ".join(
        (f"{p}% {v['rss_mib']:.1f}" + (f" (anon {v['anon_mib']:.1f})" if v.get("anon_mib") else "")) if v else f"{p}% -"
        for p, v in at.items()
    )
    rmax = r.get("rss_max_mib")
    si = r.get("split_at_start_mib") or {}
    start = f"at start (idle) {f(r.get('rss_at_start_mib'), 1)}"
    if si:
        start += f" (anon {si['anon']:.1f}, file-backed {si['file']:.1f})"
    rows = [
        [
            f"soak {r['requests']} req: RSS (MiB)",
            f"{start}; after warmup {r['rss_after_warmup_mib']:.1f}; {vals}; max {f(rmax, 1)}; "
            f"after drain {f(r.get('rss_after_drain_mib'), 1)}",
            f"< 500 MB ({MB500_MIB:.0f} MiB)",
            verdict(rmax is not None and rmax < MB500_MIB),
        ]
    ]
    a25, a100 = at.get(25), at.get(100)
    if a25 and a100 and a100["requests"] > a25["requests"]:
        growth = a100["rss_mib"] - a25["rss_mib"]
        per100k = growth * 100000 / (a100["requests"] - a25["requests"])
        val = f"RSS {growth:+.1f} MiB ({100 * growth / a25['rss_mib']:+.1f} %, {per100k:+.1f} MiB per 100k req)"
        if a25.get("anon_mib") and a100.get("anon_mib"):
            val += f"; anon {a100['anon_mib'] - a25['anon_mib']:+.1f} MiB"
        rows.append(["soak: RSS flat (25 % → 100 %)", val, "growth ≤ 10 %", verdict(growth <= 0.10 * a25["rss_mib"])])
    else:
        rows.append(
            ["soak: RSS flat (25 % → 100 %)", f"only {r['requests']} of {r['target_requests']} run", "", "SKIP"]
        )
    rates = [c["rps"] for c in r["chunks"] if c.get("rps")]
    rows.append(
        [
            "soak: throughput, CPU",
            f"{r['requests'] / r['load_seconds']:.0f} req/s over {r['load_seconds']:.0f} s"
            + (f" (chunks {min(rates):.0f}-{max(rates):.0f})" if rates else "")
            + f"; {f(r.get('cpu_ms_per_req'), 3)} CPU ms/req; max pending {r.get('pending_max')}",
            "report",
            "INFO",
        ]
    )
    rows += loss_rows("soak", r)
    return rows


def render(results: dict[str, Any], stamp: str, argv: list[str]) -> str:
    L = [f"# prompttap benchmark {stamp}", ""]
    L.append(f"`bench/run.py {shlex.join(argv)}` — host {os.cpu_count()} CPU, load average at end {os.getloadavg()}")
    L.append("")
    rows: list[list[str]] = []
    notes: list[str] = []
    for phase in ("harness", "lost", "soak"):
        r = results.get(phase)
        if r is None:
            continue
        if "error" in r:
            rows.append([f"{phase} phase", f"ERROR: {r['error']}", "completes", "**FAIL**"])
            continue
        if phase == "harness":
            hr, hn = harness_rows(r)
            rows += hr
            notes += hn
            lg = r.get("prompttap_log", {}).get("counts", {})
            if any(lg.values()):
                rows.append(
                    [
                        "harness: prompttap log",
                        ", ".join(f"{k} {v}" for k, v in lg.items() if v),
                        "clean",
                        verdict(False),
                    ]
                )
        elif phase == "lost":
            w = r["wrk"]
            s = r.get("streams")
            notes.append(
                f"Loss check: wrk c={w['concurrency']} {w['duration_s']:.0f} s → {w['ok']} requests "
                f"({w['rps']:.0f} req/s, p50 {w['lat_p50_ms']:.2f} ms, p99 {w['lat_p99_ms']:.2f} ms, errors "
                f"{w['errors']})"
                + (
                    f"; SSE c={s['concurrency']} → {s['ok']} streams ({s['rps']:.0f}/s, errors {s['errors']})"
                    if s
                    else ""
                )
                + f"; prompttap {f(r.get('cpu_ms_per_req'), 3)} CPU ms/req."
            )
            rows += loss_rows("loss check at c=64", r)
        else:
            rows += soak_rows(r)
    L.append("| metric | measured | target | result |")
    L.append("|---|---|---|---|")
    L += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    if notes:
        L.append("")
        L += [f"- {n}" for n in notes]
    for phase in ("harness", "lost", "soak"):
        r = results.get(phase) or {}
        lg = r.get("prompttap_log") if phase == "harness" else r.get("log")
        if lg and lg.get("first"):
            L.append(f"\nFirst warnings/errors in prompttap's log ({phase}, {lg['path']}):\n")
            L += [f"    {x}" for x in lg["first"]]
    if results.get("harness", {}).get("out"):
        L.append(f"\nFull harness table: {results['harness']['out']}/results.md")
    return "\n".join(L) + "\n"


# ============================================================================ main
def main() -> int:
    argv = sys.argv[1:]
    passthrough: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, passthrough = argv[:i], argv[i + 1 :]
    ap = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s [options] [-- run_bench.py options]",
    )
    ap.add_argument("--phases", default="harness,lost,soak", help="comma list of harness,lost,soak (default all)")
    ap.add_argument("--no-litellm", action="store_true", help="leave LiteLLM out (quicker; no setup of its venv)")
    ap.add_argument("--soak", type=int, default=100000, metavar="N", help="requests in the soak phase (100000)")
    ap.add_argument("--soak-concurrency", type=int, default=64)
    ap.add_argument("--soak-max-seconds", type=float, default=1800, help="time bound of the soak load (1800)")
    ap.add_argument("--sample-interval", type=float, default=2.0, help="RSS sampling period in the soak (2 s)")
    ap.add_argument("--lost-concurrency", type=int, default=64)
    ap.add_argument("--lost-duration", type=int, default=10, help="seconds of wrk in the loss check (10)")
    ap.add_argument(
        "--lost-stream-duration", type=float, default=5, help="seconds of SSE streams in the loss check (5; 0 = none)"
    )
    ap.add_argument("--drain-timeout", type=float, default=600, help="max wait for pending == 0 (600 s)")
    ap.add_argument("--harness-timeout", type=float, default=3600, help="time bound of the harness phase (3600 s)")
    ap.add_argument("--strict", action="store_true", help="exit 1 if any row FAILs")
    a = ap.parse_args(argv)
    phases = [p.strip() for p in a.phases.split(",") if p.strip()]
    unknown = set(phases) - {"harness", "lost", "soak"}
    if unknown:
        ap.error(f"unknown phase(s): {', '.join(sorted(unknown))}")
    if passthrough and "harness" not in phases:
        ap.error("options after -- go to the harness, but the harness phase is not selected")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    log(f"repo {REPO}; harness {HARNESS}; phases {','.join(phases)}")
    ensure_prereqs(need_litellm="harness" in phases and not a.no_litellm, need_nginx="harness" in phases)

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    logs = RESULTS / f"{stamp}-logs"
    work = Path(tempfile.mkdtemp(prefix="prompttap-bench-"))
    results: dict[str, Any] = {}
    crashed = False
    try:
        for phase in phases:
            _PHASE[0] = phase
            t = time.monotonic()
            log(f"=== phase {phase} ===")
            try:
                if phase == "harness":
                    results[phase] = run_harness(a, passthrough, RESULTS / f"{stamp}-harness")
                elif phase == "lost":
                    results[phase] = run_lost(a, logs, work)
                else:
                    results[phase] = run_soak(a, logs, work)
            except Exception as exc:
                crashed = True
                results[phase] = {"error": f"{type(exc).__name__}: {exc}"[:600]}
                log(f"phase {phase} FAILED: {exc}")
            log(f"=== phase {phase} done in {time.monotonic() - t:.0f}s ===")
    finally:
        cleanup()
        shutil.rmtree(work, ignore_errors=True)
    _PHASE[0] = "report"
    md = render(results, stamp, sys.argv[1:])
    out_md = RESULTS / f"{stamp}.md"
    out_md.write_text(md)
    slim = {k: {kk: vv for kk, vv in v.items() if kk != "results"} for k, v in results.items()}
    (RESULTS / f"{stamp}.json").write_text(json.dumps(slim, indent=1, default=str))
    print()
    print(md)
    log(f"wrote {out_md} (details: {RESULTS / (stamp + '.json')}; logs: {logs})")
    if crashed:
        return 2
    if a.strict and "**FAIL**" in md:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
