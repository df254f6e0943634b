"""The tools the benchmark needs (wrk, nginx, the harness's venvs): checked, and installed by the harness's setup.sh."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from console import log
from paths import BENCH_PY, BENCH_VENV, HARNESS, LITELLM_VENV, PROMPTTAP


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
