"""``prompttap demo --exit-after-script``: the first-run experience (issue #5), end to end.

The demo runs as a user would start it; the store it leaves behind is then checked for what each
inspector page needs: a RAG conversation threaded under one template, tool calls, Anthropic
traffic, a failure, a replay and the diff pairs it prints.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.harness import ROOT, query_store

COLUMNS = (
    "toString(id)",
    "route",
    "api",
    "model",
    "outcome",
    "stream",
    "thread_id",
    "prompt_template_id",
    "input_tokens",
    "finish_reason",
    "output_tool_calls",
    "toString(replay_of)",
    "client",
    "output_text",
)
KEYS = ("id", "route", "api", "model", "outcome", "stream", "thread", "template", "input_tokens", "finish")
KEYS += ("tool_calls", "replay_of", "client", "output")
NO_SDKS = "import sys; sys.modules['openai'] = sys.modules['anthropic'] = None; from prompttap.cli import main; "


def run_demo(home: Path, *, sdks: bool = True) -> tuple[subprocess.CompletedProcess[str], float]:
    entry = ["-m", "prompttap"] if sdks else ["-c", NO_SDKS + "sys.exit(main())"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTTAP_")}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, *entry, "demo", "--exit-after-script", "--home", str(home)],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result, time.monotonic() - started


def stored(home: Path) -> list[dict[str, Any]]:
    rows = query_store(home, f"SELECT {', '.join(COLUMNS)} FROM captures FINAL ORDER BY started_at, id")
    return [dict(zip(KEYS, row, strict=True)) for row in rows]


def check_demo(home: Path, result: subprocess.CompletedProcess[str], elapsed: float) -> list[dict[str, Any]]:
    """The assertions both runs share; returns the captures."""
    assert result.returncode == 0, result.stdout + result.stderr
    assert elapsed < 60, f"the demo took {elapsed:.1f}s"
    assert "FAILED" not in result.stdout and "warning:" not in result.stdout, result.stdout
    assert re.findall(r"^\[(\d)/7\] .*\.\.\. ok", result.stdout, re.M) == [str(i) for i in range(1, 8)]
    caps = stored(home)
    assert {"anythingllm", "agent", "claude"} <= {c["route"] for c in caps}

    # The AnythingLLM conversation: 5 turns, the regenerated turn 5, the re-run of turn 1 (then the replay).
    rag = [c for c in caps if c["route"] == "anythingllm" and c["api"] == "openai.chat" and c["replay_of"] is None]
    assert len(rag) == 7
    turns, regenerated, rerun = rag[:5], rag[5], rag[6]
    assert len({c["thread"] for c in turns}) == 1 and turns[0]["thread"].startswith("thr_")
    assert regenerated["thread"] == turns[0]["thread"]  # a regenerated turn stays in its conversation
    assert rerun["thread"] != turns[0]["thread"]  # a new chat is a new thread
    assert len({c["template"] for c in rag}) == 1 and rag[0]["template"].startswith("tpl_")
    # AnythingLLM hangs up at the finish_reason chunk; the proxy still records the usage chunk it never read.
    assert all(c["outcome"] == "ok" and c["stream"] and c["input_tokens"] > 0 for c in rag)
    assert all(c["client"] == "AnythingLLM/1.16.0" for c in rag)
    assert regenerated["output"] != turns[4]["output"]
    assert sum(c["api"] == "openai.embeddings" for c in caps) == 7

    agent = [c for c in caps if c["route"] == "agent"]
    assert [c["finish"] for c in agent[:3]] == ["tool_calls", "tool_calls", "stop"]
    assert [json.loads(c["tool_calls"])[0]["name"] for c in agent[:2]] == ["lookup_order", "track_shipment"]
    assert len({c["thread"] for c in agent}) == 1

    failed = [c for c in caps if c["outcome"] != "ok"]
    assert [(c["route"], c["outcome"]) for c in failed] == [("agent", "upstream_error")]

    claude = [c for c in caps if c["route"] == "claude"]
    assert [(c["api"], c["stream"]) for c in claude] == [("anthropic.messages", False), ("anthropic.messages", True)]
    assert all(c["output"] and c["input_tokens"] > 0 for c in claude)

    replays = [c for c in caps if c["replay_of"] is not None]
    assert len(replays) == 1
    assert replays[0]["replay_of"] == turns[1]["id"] and replays[0]["model"] == "gpt-4.1-mini"

    ids = {c["id"] for c in caps}
    diffs = dict(re.findall(r"diff: ([\w ]+?)\s+http://127\.0\.0\.1:\d+/diff\?a=([\w-]+&b=[\w-]+)", result.stdout))
    assert set(diffs) == {"replay", "context changed", "regenerated"}, result.stdout
    for pair in diffs.values():
        assert set(pair.split("&b=")) <= ids
    assert diffs["replay"] == f"{turns[1]['id']}&b={replays[0]['id']}"
    assert diffs["context changed"] == f"{turns[0]['id']}&b={rerun['id']}"
    assert diffs["regenerated"] == f"{turns[4]['id']}&b={regenerated['id']}"
    assert re.search(r"diff: regenerated .*\(blame: model\)", result.stdout)
    assert re.search(r"diff: context changed .*\(blame: prompt\)", result.stdout)
    for page in ("/threads/thr_", "/templates/tpl_", "/stats", "/captures/"):
        assert page in result.stdout
    return caps


def test_demo_populates_every_page(tmp_path: Path):
    result, elapsed = run_demo(tmp_path / "demo")
    caps = check_demo(tmp_path / "demo", result, elapsed)
    agent = [c for c in caps if c["route"] == "agent"]
    assert all(c["client"].startswith("OpenAI/Python") for c in agent)


def test_demo_without_the_sdks(tmp_path: Path):
    """openai and anthropic are dev extras: with the base install the demo speaks the same wire over httpx."""
    result, elapsed = run_demo(tmp_path / "demo", sdks=False)
    caps = check_demo(tmp_path / "demo", result, elapsed)
    assert all(c["client"].startswith("python-httpx") for c in caps if c["route"] in ("agent", "claude"))
