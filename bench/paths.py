"""Where the benchmark finds its tools and writes its results; one run's directories."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HARNESS = Path(os.environ.get("PROMPTTAP_BENCH_HARNESS") or REPO.parent / "shared" / "bench").resolve()
BENCH_VENV = Path(os.environ.get("BENCH_VENV", "/tmp/bench-venv"))
LITELLM_VENV = Path(os.environ.get("LITELLM_VENV", "/tmp/litellm-venv"))
BENCH_PY = BENCH_VENV / "bin" / "python"
PROMPTTAP = REPO / ".venv" / "bin" / "prompttap"
REPO_PY = REPO / ".venv" / "bin" / "python"
RESULTS = REPO / "bench" / "results"
HOST = "127.0.0.1"


@dataclass(frozen=True)
class RunDirs:
    """One run's places: its outputs under ``bench/results/<stamp>*`` and a scratch dir for homes."""

    stamp: str
    work: Path  # temporary prompttap homes; removed when the run ends

    @property
    def harness(self) -> Path:
        return RESULTS / f"{self.stamp}-harness"

    @property
    def logs(self) -> Path:
        return RESULTS / f"{self.stamp}-logs"

    @property
    def table(self) -> Path:
        return RESULTS / f"{self.stamp}.md"

    @property
    def details(self) -> Path:
        return RESULTS / f"{self.stamp}.json"
