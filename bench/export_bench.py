#!/usr/bin/env python3
"""Export benchmark: N synthetic captures in a fresh embedded store, exported to each file format.

    .venv/bin/python bench/export_bench.py                 # 1,000,000 captures
    .venv/bin/python bench/export_bench.py --rows 100000 --formats openai-chat,parquet

The captures are generated inside ClickHouse (``INSERT ... SELECT`` from ``numbers()``, in
batches): chat conversations of 1-3 turns with ~60-word messages, a system prompt, every
5th with a tool call and its result, every 7th with an e-mail address and a phone number
in it; 3 of every 10 captures are the turns of one thread (so threads collapse) and 1 in
100 repeats the previous conversation (so de-duplication has work). Each format is then
exported by a real ``prompttap export`` process reading the store directly; its RSS
(process tree, sampled every 50 ms by psutil) and wall time are measured. ``--redact``
exports with redaction on.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
WORDS = (  # noqa: SIM905 - a word list reads better as text
    "the a model answer prompt token latency stream cache request response user assistant system tool "
    "call result function weather city price order invoice account shipping refund delivery schedule "
    "meeting report summary draft review code test deploy server database query index table column row "
    "batch error retry timeout budget forecast market customer support ticket status update please "
    "thanks could would should maybe quickly carefully today tomorrow yesterday morning evening detail "
    "example"
).split()


def generate_sql(start: int, count: int) -> str:
    words = "[" + ",".join(f"'{w}'" for w in WORDS) + "]"

    def text(salt: str, base: int = 40) -> str:
        # 40-80 words picked by hash of (seed, salt): deterministic and JSON-safe (letters, spaces)
        return (
            f"arrayStringConcat(arrayMap(j -> {words}[1 + cityHash64(seed, {salt}, j) % {len(WORDS)}], "
            f"range({base} + cityHash64(seed, {salt}) % 40)), ' ')"
        )

    pii = (
        "concat(' mail me at user', toString(seed), '@example.com or call +1 555 ', "
        "leftPad(toString(seed % 1000), 3, '0'), ' ', leftPad(toString(seed % 10000), 4, '0'))"
    )

    def message(role: str, salt: str, with_pii: str) -> str:
        # SQL text of one normalized message (JSON built by concatenation)
        return (
            f"""concat('{{"role":"', {role}, '","content":"', {text(salt)}, if({with_pii}, {pii}, ''), """
            """'","parts":[],"tool_calls":[],"tool_call_id":null,"name":null}')"""
        )

    # an assistant tool call and its result; \\" in a SQL literal is \" in the JSON text
    call = (
        r"""concat('{"role":"assistant","content":"","parts":[],"tool_calls":[{"id":"call_', toString(seed), """
        r"""'","name":"lookup","arguments":"{\\"q\\":\\"', """
        + text("7", 2)
        + r""", '\\"}"}],"tool_call_id":null,"name":null},{"role":"tool","content":"', """
        + text("8", 10)
        + r""", '","parts":[],"tool_calls":[],"tool_call_id":"call_', toString(seed), '","name":"lookup"}')"""
    )
    tools = (
        '[{"name":"lookup","description":"Look something up","parameters":{"type":"object",'
        '"properties":{"q":{"type":"string"}},"required":["q"]}}]'
    )
    each_turn = message("if(i % 2 = 0, 'user', 'assistant')", "i", "i = 0 AND pii")
    turns = f"arrayStringConcat(arrayMap(i -> {each_turn}, range(2 * turns - 1)), ',')"
    first, answer = message("'user'", "0", "pii"), message("'assistant'", "1", "false")
    last = message("'user'", "2", "false")
    with_tool = f"concat({first}, ',', {call}, ',', {answer}, ',', {last})"
    return f"""
INSERT INTO captures (id, trace_id, span_id, parent_span_id, started_at, duration_ms, route, method, path,
    upstream_url, status_code, outcome, request_body_encoding, response_body_encoding, client, api, model,
    response_model, stream, params, system_prompt, messages, tools, output_text, output_tool_calls,
    finish_reason, input_tokens, output_tokens, chunk_count, thread_id, prompt_template_id, recorded_at)
SELECT
    generateUUIDv7(n), lower(hex(cityHash64(n, 1))) || lower(hex(cityHash64(n, 2))), lower(hex(cityHash64(n, 3))),
    '', toDateTime64('2026-01-01 00:00:00', 6, 'UTC') + toIntervalMillisecond(n * 37), 800 + n % 900,
    'default', 'POST', '/v1/chat/completions', 'https://api.example.com/v1/chat/completions', 200, 'ok',
    'utf-8', 'utf-8', 'bench', 'openai.chat', 'gpt-4o-mini', 'gpt-4o-mini-2024-07-18', false, '{{"temperature":0.2}}',
    concat('You are the support assistant of ', {words}[1 + seed % 5], '. Answer briefly and politely.'),
    concat('[', if(tooly, {with_tool}, {turns}), ']'),
    if(tooly, '{tools}', '[]'),
    {text("99")}, '[]', 'stop', 50 + n % 400, 20 + n % 300, 0,
    thread, concat('tpl_', toString(n % 5)), now64(6)
FROM (
    SELECT number AS n, n % 10 AS k,
        if(k >= 7, k - 6, 1 + seed % 3) AS turns,
        toUInt64(if(k >= 7, intDiv(n, 10) * 10 + 7, if(n % 100 = 1, n - 1, n))) AS seed,
        if(k >= 7, concat('thr_m', toString(intDiv(n, 10))), concat('thr_', toString(n))) AS thread,
        k < 7 AND seed % 5 = 2 AS tooly,
        seed % 7 = 0 AS pii
    FROM numbers({start}, {count})
)
"""


def generate(home: Path, rows: int, batch: int) -> None:
    """Runs in a child process: the store belongs to one process at a time."""
    sys.path.insert(0, str(REPO))
    from prompttap.schemas.store import migrate, open_store

    client = open_store(f"chdb://{(home / 'store').resolve()}")
    migrate(client)
    for start in range(0, rows, batch):
        client.command(generate_sql(start, min(batch, rows - start)))
    client.command("OPTIMIZE TABLE captures FINAL")
    n = client.command("SELECT count() FROM captures")
    size = client.command("SELECT sum(data_compressed_bytes) FROM system.parts WHERE table = 'captures' AND active")
    print(json.dumps({"rows": int(n), "compressed_bytes": int(size)}))


def run_export(home: Path, fmt: str, out: Path, redact: bool) -> dict:
    cmd = [PY, "-m", "prompttap", "export", "--format", fmt, "--out", str(out), "--home", str(home), "--json"]
    cmd += ["--no-progress"] + (["--redact"] if redact else [])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTTAP_")}
    env["PYTHONPATH"] = str(REPO)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.05)
    stdout, stderr = proc.communicate()
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"export {fmt} failed ({proc.returncode}): {stderr.strip()}")
    report = json.loads(stdout.strip().splitlines()[-1])
    size = sum(Path(f).stat().st_size for f in report.get("files") or [])
    return {"format": fmt, "report": report, "seconds": seconds, "peak_rss": peak, "bytes": size}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="captures to generate (default 1,000,000)")
    ap.add_argument("--formats", default="openai-chat,anthropic,sharegpt,parquet")
    ap.add_argument("--batch", type=int, default=200_000, help="captures per INSERT ... SELECT")
    ap.add_argument("--redact", action="store_true", help="export with --redact")
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temp dir, removed)")
    ap.add_argument("--generate-into", metavar="HOME", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate_into:
        generate(Path(args.generate_into), args.rows, args.batch)
        return 0

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="prompttap-export-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    home = work / "home"
    try:
        print(f"generating {args.rows:,} captures in {home} ...", flush=True)
        t0 = time.monotonic()
        gen = subprocess.run(
            [PY, __file__, "--generate-into", str(home), "--rows", str(args.rows), "--batch", str(args.batch)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            check=False,
        )
        if gen.returncode != 0:
            print(gen.stderr, file=sys.stderr)
            return 1
        info = json.loads(gen.stdout.strip().splitlines()[-1])
        print(
            f"generated {info['rows']:,} captures in {time.monotonic() - t0:.1f}s "
            f"({info['compressed_bytes'] / 2**20:,.0f} MiB compressed)",
            flush=True,
        )
        results = []
        for fmt in args.formats.split(","):
            out = work / f"out-{fmt}{'.parquet' if fmt == 'parquet' else '.jsonl'}"
            r = run_export(home, fmt, out, args.redact)
            results.append(r)
            rep = r["report"]
            print(
                f"  {fmt:12s} {rep['exported']:>10,} rows  {r['seconds']:7.1f}s  "
                f"{rep['exported'] / r['seconds']:>9,.0f} rows/s  peak RSS {r['peak_rss'] / 2**20:7,.0f} MiB  "
                f"file {r['bytes'] / 2**20:8,.1f} MiB",
                flush=True,
            )
            out.unlink(missing_ok=True)
        print()
        print("| format | captures | rows exported | duplicates | seconds | rows/s | peak RSS (MiB) | file (MiB) |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in results:
            rep = r["report"]
            print(
                f"| {r['format']} | {rep['captures']:,} | {rep['exported']:,} | {rep['duplicates']:,} | "
                f"{r['seconds']:.1f} | {rep['exported'] / r['seconds']:,.0f} | {r['peak_rss'] / 2**20:,.0f} | "
                f"{r['bytes'] / 2**20:,.1f} |"
            )
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
