"""Phase ``harness``: the shared harness (run_bench.py) in one interleaved run, prompttap among its targets.

direct, nginx, litellm (unless ``--no-litellm``), the minimal aiohttp pass-through and prompttap
(recording on, embedded ClickHouse). ``quiet_harness.py`` wraps run_bench.py so each load starts once
prompttap has drained the last one's captures. The options after ``--`` (``a.harness_args``) go to
run_bench.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import threading
import time
from typing import Any

from console import log
from paths import BENCH_PY, HARNESS, PROMPTTAP, REPO, RunDirs
from stack import child_env, log_findings


def run(a: argparse.Namespace, dirs: RunDirs) -> dict[str, Any]:
    out = dirs.harness
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
        *a.harness_args,
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
