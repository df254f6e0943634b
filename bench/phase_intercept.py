"""Phase ``intercept``: HTTPS through prompttap's forward proxy (issue 14) next to direct over TLS.

A TLS mock upstream (the harness's mock under uvicorn's TLS, ``tls_mock.py``, with a trustme test CA)
and a fresh prompttap with ``--intercept`` that sends ``api.openai.com`` to it. One client
(``tls_load.py``: aiohttp in the harness venv) drives every target with the same code:

  direct  https://127.0.0.1:PORT of the mock, trusting the test CA
  proxy   https://api.openai.com through the forward proxy (CONNECT), trusting only prompttap's CA
  routed  http://127.0.0.1:PORT of prompttap's own proxy port, forwarding to the same TLS mock: a
          reference, so proxy minus routed is what the interception itself adds

Each round runs every scenario against every target (the order rotating), each load starting once
prompttap has recorded the last one's captures. Reported values are medians over the rounds. Before
the load, each API shape is sent once direct and once through the proxy and the bytes compared; every
response of the load is compared with the bytes the mock sent.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from dataclasses import asdict, dataclass
from typing import Any

import psutil
from console import log
from paths import BENCH_PY, HOST, REPO, RunDirs
from stack import NS_MOCK, Stack, child_env, free_ports, log_findings
from upstream_tls import UpstreamTLS

INTERCEPTED = "api.openai.com"
# The harness's stream scenarios (run_bench.py's defaults): 50 chunks, 20 ms to the first, 5 ms apart.
STREAM_MOCK = {"chunks": 50, "first_delay_ms": 20.0, "chunk_delay_ms": 5.0, "content_bytes": 400}
# The one warning a fresh home gives with --intercept: its CA was just made (and is not trusted yet).
EXPECTED_LOG = ("created prompttap's CA",)
# What is kept of each measurement (the client's summary has more) and the medians taken over rounds.
KEYS = (
    "rps",
    "lat_p50_ms",
    "lat_p99_ms",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "client_cpu_pct",
    "prompttap_cpu_ms_per_req",
    "host_busy_pct",
)


@dataclass(frozen=True)
class Scenario:
    id: str
    desc: str
    concurrency: int
    stream: bool = False
    fresh: bool = False


def scenarios(a: argparse.Namespace) -> list[Scenario]:
    c = a.intercept_concurrency
    return [
        Scenario("ka_c1", "JSON, one kept-alive connection", 1),
        Scenario("stream_c1", "SSE, one stream at a time (50 chunks, 20 ms first delay, 5 ms gap)", 1, stream=True),
        Scenario(f"sat_c{c}", f"JSON, {c} kept-alive connections", c),
        Scenario("fresh_c1", "JSON, a new connection per request", 1, fresh=True),
    ]


class Client:
    """``tls_load.py`` against this phase's stack, one measurement per process."""

    def __init__(self, stack: Stack, tls: UpstreamTLS, forward: str) -> None:
        self.argv = [str(BENCH_PY), str(REPO / "bench" / "tls_load.py"), "--upstream", stack.upstream]
        self.argv += ["--upstream-ca", str(tls.ca), "--proxy", forward, "--host", INTERCEPTED]
        self.argv += ["--proxy-ca", str(stack.home / "ca" / "prompttap-ca.pem")]
        self.argv += ["--routed", f"http://{HOST}:{stack.port}"]

    def __call__(self, *args: str, timeout: float) -> dict[str, Any]:
        r = subprocess.run([*self.argv, *args], capture_output=True, text=True, timeout=timeout, env=child_env())
        if r.returncode:
            raise RuntimeError(f"tls_load.py {' '.join(args)} failed rc={r.returncode}: {r.stderr[-800:]}")
        return json.loads(r.stdout)


def run(a: argparse.Namespace, dirs: RunDirs) -> dict[str, Any]:
    targets = [t.strip() for t in a.intercept_targets.split(",") if t.strip()]
    tls = UpstreamTLS.make(dirs.work / "intercept-tls")
    up_port, pt_port, fwd_port = free_ports(3)
    forward = f"http://{HOST}:{fwd_port}"
    intercept = ["--intercept", "--intercept-listen", f"{HOST}:{fwd_port}"]
    intercept += ["--intercept-host", f"{INTERCEPTED}=https://{HOST}:{up_port}"]
    stack = Stack("intercept", dirs.logs, dirs.work / "intercept-home", intercept, tls, (up_port, pt_port))
    try:
        stack.start()
        client = Client(stack, tls, forward)
        same = client("same", timeout=60)
        log("same request direct and through the proxy: " + ", ".join(f"{k} {v['identical']}" for k, v in same.items()))
        scs = scenarios(a)
        raw: dict[str, dict[str, list[dict[str, Any]]]] = {sc.id: {t: [] for t in targets} for sc in scs}
        for rnd in range(a.intercept_rounds):
            for si, sc in enumerate(scs):
                shift = (rnd + si) % len(targets)
                for t in targets[shift:] + targets[:shift]:
                    r = measure(stack, client, sc, t, a)
                    raw[sc.id][t].append(r)
                    log(
                        f"r{rnd + 1} {sc.id:<10} {t:<7} req/s {r['rps']:.0f} p50 {r['lat_p50_ms']:.3f} "
                        f"p99 {r['lat_p99_ms']:.3f}"
                        + (f" ttft p50 {r['ttft_p50_ms']:.3f}" if sc.stream else "")
                        + f" errors {r['errors']} identical {r['bytes_identical']}/{r['verified']}"
                        f" client CPU {r['client_cpu_pct']:.0f} %"
                    )
        _, health = stack.health()
        stack.pt.stop()  # SIGTERM before the log is read, so a problem on the way out shows in it too
        return {
            "scenarios": [asdict(sc) for sc in scs],
            "targets": targets,
            "rounds": a.intercept_rounds,
            "duration_s": a.intercept_duration,
            "same": same,
            "raw": raw,
            "medians": {sc: {t: medians(runs) for t, runs in by_t.items()} for sc, by_t in raw.items()},
            "intercept_health": (health or {}).get("intercept"),
            "exit_code": stack.pt.exit_code,
            "log": log_findings(stack.pt.log_path, EXPECTED_LOG),
        }
    finally:
        stack.stop_all()


def measure(stack: Stack, client: Client, sc: Scenario, target: str, a: argparse.Namespace) -> dict[str, Any]:
    """One load on one target, once prompttap has recorded the previous one's captures."""
    stack.configure_mock(STREAM_MOCK if sc.stream else NS_MOCK)
    drained, _ = stack.wait_drained(a.drain_timeout)
    if drained is None:
        log(f"prompttap still had captures pending after {a.drain_timeout:.0f}s; measuring anyway")
    args = ["run", "--via", target, "-c", str(sc.concurrency), "-d", str(a.intercept_duration)]
    args += ["--stream"] * sc.stream + ["--fresh"] * sc.fresh
    cpu0, host0 = stack.pt.cpu_s(), psutil.cpu_times()
    r = client(*args, timeout=a.intercept_duration + 120)
    cpu, host1 = stack.pt.cpu_s() - cpu0, psutil.cpu_times()
    n = r["ok"] + r["warmup_requests"]  # prompttap's CPU is measured over the client's warmup too
    r["prompttap_cpu_ms_per_req"] = cpu * 1000 / n if n and target != "direct" else None
    total = sum(host1) - sum(host0)
    idle = host1.idle - host0.idle + getattr(host1, "iowait", 0) - getattr(host0, "iowait", 0)
    r["host_busy_pct"] = 100.0 * (1 - idle / total) if total > 0 else None  # as the harness counts it
    return r


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in KEYS:
        vals = [r[k] for r in runs if isinstance(r.get(k), (int, float))]
        out[k] = statistics.median(vals) if vals else None
    out["errors"] = sum(r["errors"] + r["warmup_errors"] for r in runs)
    out["verified"] = sum(r["verified"] for r in runs)
    out["bytes_identical"] = sum(r["bytes_identical"] for r in runs)
    out["ok"] = sum(r["ok"] for r in runs)
    return out
