"""The command line contract: clear one-line errors and non-zero exits."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.harness import ROOT, Prompttap, free_port


def run(*args: str, home: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "prompttap", *args, "--home", str(home)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("prompttap: ")
    return lines[0]


def test_bad_flags(tmp_path: Path):
    assert "HOST:PORT" in one_line_error(run("serve", "--listen", "nonsense", home=tmp_path))
    assert "NAME=URL" in one_line_error(run("serve", "--route", "x", home=tmp_path))
    assert "unrecognized" in one_line_error(run("serve", "--frobnicate", home=tmp_path))


def test_port_in_use(tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = one_line_error(run("serve", "--listen", f"127.0.0.1:{port}", "--no-ui", home=tmp_path))
    assert f"127.0.0.1:{port}" in line and "already in use" in line


def test_unreachable_store(tmp_path: Path):
    dead = f"http://default:secret@127.0.0.1:{free_port()}/prompttap"
    line = one_line_error(run("serve", "--store", dead, "--no-ui", home=tmp_path))
    assert "cannot open store" in line and "secret" not in line


def test_embedded_store_in_use_names_the_cause(fake, tmp_path: Path):
    with Prompttap(tmp_path / "pt", fake.base_url, ui=False):
        line = one_line_error(
            run("serve", "--listen", f"127.0.0.1:{free_port()}", "--no-ui", home=tmp_path / "pt", timeout=120)
        )
    assert "already open in another process" in line


def test_version():
    out = subprocess.run(
        [sys.executable, "-m", "prompttap", "--version"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("prompttap ")
