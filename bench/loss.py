"""Loss accounting: drain prompttap, stop it, count its store and compare with what the load completed."""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from console import log
from paths import REPO, REPO_PY
from stack import Stack, log_findings

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
