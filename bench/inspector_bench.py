#!/usr/bin/env python3
"""Inspector benchmark: page and JSON latency with N synthetic captures (default 1,000,000) in the
embedded store, served by a real ``prompttap serve`` over HTTP; each figure against a 300 ms target.

    .venv/bin/python bench/inspector_bench.py                          # 1,000,000 captures, 7 runs per page
    .venv/bin/python bench/inspector_bench.py --rows 100000 --runs 5
    .venv/bin/python bench/inspector_bench.py --keep /tmp/ib           # keep the store ...
    .venv/bin/python bench/inspector_bench.py --keep /tmp/ib --reuse   # ... and time it again without regenerating
    .venv/bin/python bench/inspector_bench.py --keep /tmp/ib --reuse --profile   # + each query timed alone

The captures (``bench/inspector_captures.py``) are generated inside ClickHouse, spread over the
last 30 days: six prompt templates behind five routes and eleven models, conversations of 1-6
turns, 96% ok, a third streamed, and three rare words planted for search: ``quasarmint``
(1 in 100,000), ``zephyrlatch`` (1 in 10,000) and ``ochreventure`` (1 in 1,000).

Every URL is fetched ``--warmup`` times, then ``--runs`` times (fewer when one fetch takes over 2 s);
the table shows the median (and the slowest run). ``--profile`` then stops the server and times
each query function of ``inspector.queries`` alone against the same store.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from inspector_captures import generate
from paths import REPO

PY = sys.executable
TARGET_MS = 300.0


# --- timing ----------------------------------------------------------------------------------------------


def start_server(home: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    sys.path.insert(0, str(REPO))
    from tests.harness import free_port

    ui_port, proxy_port = free_port(), free_port()
    log = home / "serve.log"
    cmd = [PY, "-m", "prompttap", "serve", "--home", str(home), "--listen", f"127.0.0.1:{proxy_port}"]
    cmd += ["--ui", f"127.0.0.1:{ui_port}", "--upstream", "http://127.0.0.1:9", "--log-level", "warning"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTTAP_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{ui_port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prompttap serve exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code in (200, 503):
                return proc, url, log
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("prompttap serve did not start in 180 s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def pick_targets(client: httpx.Client) -> dict[str, str]:
    """Ids to open: a recent multi-turn capture (and its thread), one from 15 days ago, the biggest template."""
    newest = client.get("/api/captures", params={"limit": 300}).json()["items"]
    by_thread: dict[str, list[dict[str, Any]]] = {}
    for item in newest:
        by_thread.setdefault(item["thread_id"], []).append(item)
    thread = max(by_thread, key=lambda t: len(by_thread[t]))
    middle = (datetime.now(UTC) - timedelta(days=15)).isoformat()
    old = client.get("/api/captures", params={"until": middle, "limit": 1}).json()
    templates = client.get("/api/templates").json()["items"]
    return {
        "capture": by_thread[thread][0]["id"],
        "old_capture": old["items"][0]["id"],
        "old_cursor": old["next"] or f"{middle},{old['items'][0]['id']}",
        "thread": thread,
        "template": max(templates, key=lambda t: t["captures"])["id"],
        "tail": datetime.now(UTC).isoformat(),
    }


def pages(t: dict[str, str]) -> list[tuple[str, str]]:
    """(what, path): the pages the issue names, their JSON twins, and what a page fetches besides."""
    search = "q=zephyrlatch&route=anythingllm"
    return [
        ("captures list", "/"),
        ("captures list JSON", "/api/captures"),
        ("search: rare word + route", f"/?{search}"),
        ("search: rare word + route JSON", f"/api/captures?{search}"),
        ("search: 1-in-100k word", "/?q=quasarmint"),
        ("search: common word", "/?q=refund"),
        ("search: two words", "/?q=refund+warehouse"),
        ("filter: model + outcome", "/?model=claude-opus-4-1&outcome=upstream_error"),
        ("older page (15 days back)", f"/?{urlencode({'before': t['old_cursor']})}"),
        ("live-tail poll (every 2 s)", f"/captures/rows?{urlencode({'tail': t['tail']})}"),
        ("capture page (recent)", f"/captures/{t['capture']}"),
        ("capture JSON (recent)", f"/api/captures/{t['capture']}"),
        ("capture page (15 days old)", f"/captures/{t['old_capture']}"),
        ("compare candidates (capture page JS)", f"/api/captures/{t['capture']}/compare-candidates"),
        ("thread page", f"/threads/{t['thread']}"),
        ("thread JSON", f"/api/threads/{t['thread']}"),
        ("templates page", "/templates"),
        ("templates JSON", "/api/templates"),
        ("template page (largest group)", f"/templates/{t['template']}"),
        ("template JSON (largest group)", f"/api/templates/{t['template']}"),
        ("stats page", "/stats"),
        ("stats JSON", "/api/stats"),
        ("stats page, last 24 h", "/stats?since=24h"),
    ]


def time_url(client: httpx.Client, path: str, warmup: int, runs: int) -> dict[str, Any]:
    def once() -> tuple[float, int, int]:
        t0 = time.perf_counter()
        r = client.get(path)
        body = r.content
        return (time.perf_counter() - t0) * 1000, r.status_code, len(body)

    first = [once() for _ in range(max(warmup, 1))]
    status, size = first[-1][1], first[-1][2]
    if status != 200:
        return {"status": status, "median": math.nan, "max": math.nan, "runs": 0, "bytes": size}
    n = runs if first[-1][0] < 2000 else max(3, runs // 2)  # a slow page gets fewer runs
    times = [once()[0] for _ in range(n)]
    return {"status": status, "median": statistics.median(times), "max": max(times), "runs": n, "bytes": size}


def run_timings(home: Path, warmup: int, runs: int, target: float) -> list[dict[str, Any]]:
    proc, url, _log = start_server(home)
    try:
        with httpx.Client(base_url=url, timeout=300) as client:
            targets = pick_targets(client)
            print(f"timing against {url} (thread {targets['thread']}, template {targets['template']})", flush=True)
            results = []
            for what, path in pages(targets):
                r = {"what": what, "path": path, **time_url(client, path, warmup, runs)}
                r["pass"] = r["status"] == 200 and r["median"] <= target
                results.append(r)
                print(
                    f"  {what:38s} {r['median']:9.1f} ms  (max {r['max']:.1f}, {r['runs']} runs, "
                    f"{r['bytes'] / 1024:,.0f} KiB, HTTP {r['status']})",
                    flush=True,
                )
            return results
    finally:
        stop_server(proc)


# --- profile: each query function alone ----------------------------------------------------------------


def profile(home: Path, runs: int) -> None:
    """Runs in a child process on the stopped server's store: every read of a page, timed alone."""
    sys.path.insert(0, str(REPO))
    from prompttap.inspector import queries, views
    from prompttap.inspector.diff import candidates
    from prompttap.schemas.store import open_store

    client = open_store(f"chdb://{(home / 'store').resolve()}")
    newest = queries.list_captures(client, queries.CaptureFilter(), 300)
    capture = newest[0]
    row = queries.get_capture(client, __import__("uuid").UUID(capture["id"]))
    template = queries.template_groups(client, queries.CaptureFilter(), 1)[0]["id"]
    everything = queries.CaptureFilter()
    search = queries.CaptureFilter(q="zephyrlatch", route="anythingllm")
    calls = {
        "list_captures()": lambda: queries.list_captures(client, everything, 50),
        "list_captures(q, route)": lambda: queries.list_captures(client, search, 50),
        "list_captures(q=refund)": lambda: queries.list_captures(client, queries.CaptureFilter(q="refund"), 50),
        "filter_options()": lambda: queries.filter_options(client),
        "get_capture()": lambda: queries.get_capture(client, __import__("uuid").UUID(capture["id"])),
        "previous_in_thread()": lambda: queries.previous_in_thread(client, row),
        "replays_of()": lambda: queries.replays_of(client, capture["id"]),
        "compare_candidates()": lambda: candidates.compare_candidates(
            client, __import__("uuid").UUID(capture["id"]), 20
        ),
        "thread_captures()": lambda: queries.thread_captures(client, capture["thread_id"]),
        "template_groups()": lambda: queries.template_groups(client, everything, 200),
        "views.template_list()": lambda: views.template_list(client, everything, 200),
        "template_members()": lambda: queries.template_members(client, template, 200),
        "views.template_detail()": lambda: views.template_detail(client, template, 200),
        "stats()": lambda: queries.stats(client, everything),
    }
    print(json.dumps({"profile": "start"}), flush=True)
    for name, call in calls.items():
        call()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            call()
            times.append((time.perf_counter() - t0) * 1000)
        print(json.dumps({"query": name, "median": statistics.median(times)}), flush=True)


# --- main ------------------------------------------------------------------------------------------------


def child(args: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([PY, __file__, *args], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="captures to generate (default 1,000,000)")
    ap.add_argument("--batch", type=int, default=100_000, help="captures per INSERT ... SELECT")
    ap.add_argument("--runs", type=int, default=7, help="timed fetches per URL (default 7)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed fetches per URL first (default 2)")
    ap.add_argument("--target-ms", type=float, default=TARGET_MS)
    ap.add_argument("--no-optimize", action="store_true", help="leave the parts as inserted (no OPTIMIZE FINAL)")
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temp dir, removed)")
    ap.add_argument("--reuse", action="store_true", help="with --keep: time the store already in DIR")
    ap.add_argument("--profile", action="store_true", help="then time each query function alone")
    ap.add_argument("--generate-into", metavar="HOME", help=argparse.SUPPRESS)
    ap.add_argument("--profile-into", metavar="HOME", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate_into:
        generate(Path(args.generate_into), args.rows, args.batch, not args.no_optimize)
        return 0
    if args.profile_into:
        profile(Path(args.profile_into), args.runs)
        return 0

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="prompttap-inspector-bench-"))
    home = work / "home"
    try:
        if not (args.reuse and (home / "store").exists()):
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir(parents=True)
            print(f"generating {args.rows:,} captures in {home} ...", flush=True)
            t0 = time.monotonic()
            gen_args = ["--generate-into", str(home), "--rows", str(args.rows), "--batch", str(args.batch)]
            gen = child(gen_args + (["--no-optimize"] if args.no_optimize else []))
            facts: dict[str, Any] = {}
            for line in gen.stdout or []:
                facts = json.loads(line)
                if "progress" in facts:
                    print(f"  {facts['progress']:>10,} rows  {time.monotonic() - t0:6.0f} s", flush=True)
            if gen.wait() != 0:
                return 1
            print(
                f"generated {facts['rows']:,} captures in {time.monotonic() - t0:.0f} s: "
                f"{facts['compressed_bytes'] / 2**20:,.0f} MiB compressed, {facts['parts']} parts; "
                f"rare words in {facts['rare']} captures",
                flush=True,
            )
        results = run_timings(home, args.warmup, args.runs, args.target_ms)
        print()
        print("| page | path | median (ms) | max (ms) | target | verdict |")
        print("| --- | --- | ---: | ---: | ---: | --- |")
        for r in results:
            path = r["path"] if len(r["path"]) <= 60 else r["path"][:57] + "..."
            verdict = "PASS" if r["pass"] else ("FAIL" if r["status"] == 200 else f"FAIL (HTTP {r['status']})")
            print(f"| {r['what']} | `{path}` | {r['median']:.1f} | {r['max']:.1f} | {args.target_ms:.0f} | {verdict} |")
        if args.profile:
            print("\nquery functions alone (median of --runs, same store, no HTTP):")
            prof = child(["--profile-into", str(home), "--runs", str(args.runs)])
            for line in prof.stdout or []:
                item = json.loads(line)
                if "query" in item:
                    print(f"  {item['query']:28s} {item['median']:9.1f} ms", flush=True)
            prof.wait()
        return 0 if all(r["pass"] for r in results) else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
