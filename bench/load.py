"""Load generators for the phases prompttap is started for: wrk with unique bodies, asyncio SSE streams."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from typing import Any

from paths import BENCH_PY, HARNESS
from stack import child_env


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
