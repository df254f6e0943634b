"""Issue #6, export as fine-tuning data, end to end.

Real captures are made through a real ``prompttap serve`` (OpenAI and Anthropic SDKs, the
fake upstream): multi-turn conversations sharing a thread by session header and by
inference, tool calls and their results, an image part, a stream, a failed, a cut, a
cancelled request, a duplicate, planted personal data. They are exported by the real CLI,
through the running server's API and, once it stopped, from the store itself, and loaded
back with the consumers' own tools: OpenAI's fine-tuning format rules (an independent
checker below) and the SDKs' message types, ``datasets`` and ``pyarrow`` for Parquet, the
``langfuse`` SDK against a fake Langfuse API.
"""

from __future__ import annotations

import base64
import json
import os
import pty
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import datasets
import httpx
import openai
import pyarrow.parquet as pq
import pydantic
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from prompttap.inspector.export import Redactor, protect_json, unprotect_json
from tests.fake_upstream import FakeUpstream
from tests.harness import ROOT, Prompttap, free_port

KEY = "sk-test-0123456789abcdefWXYZ"
OA_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
AN_TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(40))).decode()
PII = "bob.smith@example.com, +1 (555) 123-4567, from 192.168.10.20, key sk-proj-AbCdEf0123456789XyZaBcDeF"
PII_VALUES = ("bob.smith@example.com", "(555) 123-4567", "192.168.10.20", "sk-proj-AbCdEf0123456789XyZaBcDeF")


# ------------------------------------------------------------------------------ the captures


@dataclass
class World:
    pt: Prompttap
    n: str  # marks every prompt of this module
    conv_a: list[dict[str, Any]]  # conversation A as sent, answer appended (OpenAI shape)
    conv_c: dict[str, Any]  # conversation C as sent to Anthropic, answer appended
    answers: dict[str, str] = field(default_factory=dict)
    running: bool = True

    def ensure_running(self) -> None:
        if not self.running:
            self.pt.start()
            self.running = True

    def ensure_stopped(self) -> None:
        if self.running:
            assert self.pt.stop() == 0
            self.running = False


@pytest.fixture(scope="module")
def world(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("export-home")
    pt = Prompttap(home, fake.base_url, "--route", f"claude={fake.base_url}", "--upstream-timeout", "3").start()
    try:
        yield make_captures(pt)
    finally:
        pt.stop()


def make_captures(pt: Prompttap) -> World:
    n = uuid.uuid4().hex[:12]
    oa = openai.OpenAI(base_url=f"{pt.url}/v1", api_key=KEY, max_retries=0)

    def chat(messages: list[dict[str, Any]], session: str | None = None, **kw: Any) -> Any:
        headers = {"x-prompttap-session": session} if session else {}
        return oa.chat.completions.create(model="gpt-4o-mini", messages=messages, extra_headers=headers, **kw)

    # A: four turns in one session, a tool call and its results in the middle.
    sa = f"conv-a-{n}"
    a: list[dict[str, Any]] = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": f"hello {n}"},
    ]
    a.append({"role": "assistant", "content": chat(a, sa).choices[0].message.content})
    a.append({"role": "user", "content": f"call tool please {n}"})
    calls = chat(a, sa, tools=OA_TOOLS).choices[0].message.tool_calls
    assert calls and len(calls) == 2
    a.append(
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.function.name, "arguments": c.function.arguments},
                }
                for c in calls
            ],
        }
    )
    a += [{"role": "tool", "tool_call_id": c.id, "content": w} for c, w in zip(calls, ("sunny", "rainy"), strict=True)]
    # (no tools from here on: the fake upstream would call them again for "call tool please")
    a.append({"role": "assistant", "content": chat(a, sa).choices[0].message.content})
    a.append({"role": "user", "content": f"thanks {n}"})
    a.append({"role": "assistant", "content": chat(a, sa).choices[0].message.content})

    # B: two turns joined by thread inference alone.
    b: list[dict[str, Any]] = [{"role": "user", "content": f"inference {n}"}]
    b.append({"role": "assistant", "content": chat(b).choices[0].message.content})
    b.append({"role": "user", "content": f"more {n}"})
    chat(b)

    # C: Anthropic through a route, with a system prompt, tool use and tool results.
    an = anthropic.Anthropic(base_url=f"{pt.url}/claude", api_key="sk-ant-api03-test-0000", max_retries=0)
    sc = {"x-prompttap-session": f"conv-c-{n}"}
    c: list[dict[str, Any]] = [{"role": "user", "content": f"call tool please {n}"}]
    kw: dict[str, Any] = {"model": "claude-haiku-4-5", "max_tokens": 300, "system": "Be brief.", "tools": AN_TOOLS}
    first = an.messages.create(messages=c, extra_headers=sc, **kw)
    uses = [bl for bl in first.content if bl.type == "tool_use"]
    assert len(uses) == 2
    c.append(
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": u.id, "name": u.name, "input": u.input} for u in uses],
        }
    )
    c.append(
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": u.id, "content": w}
                for u, w in zip(uses, ("sunny", "rainy"), strict=True)
            ],
        }
    )
    second = an.messages.create(messages=c, extra_headers=sc, **kw)
    c.append({"role": "assistant", "content": second.content[0].text})
    conv_c = {"system": "Be brief.", "messages": c, "tools": AN_TOOLS}

    # D: failed; E: the same exchange twice; F: cut at max_tokens; G: cancelled mid-stream.
    failed = httpx.post(
        f"{pt.url}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"failed {n}"}]},
        headers={"x-fake-status": "500"},
    )
    assert failed.status_code == 500
    for _ in range(2):
        chat([{"role": "user", "content": f"dup {n}"}])
    chat([{"role": "user", "content": f"trunc {n} one two three four five"}], max_tokens=2)
    with httpx.stream(
        "POST",
        f"{pt.url}/v1/chat/completions",
        json={
            "model": "gpt-4o-mini",
            "stream": True,
            "messages": [{"role": "user", "content": f"cancel {n} " + "w " * 40}],
        },
        headers={"x-fake-chunk-delay-ms": "50"},
    ) as r:
        it = r.iter_bytes()
        next(it)
        next(it)
    # H: an image part; I: personal data (echoed into the answer); J: a stream; K: not a chat.
    chat(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": f"image {n}"},
                    {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}},
                ],
            }
        ]
    )
    chat([{"role": "user", "content": f"contact {n}: {PII}"}], session=f"pii-{n}")
    streamed = "".join(
        ch.choices[0].delta.content or ""
        for ch in chat([{"role": "user", "content": f"stream {n}"}], stream=True)
        if ch.choices
    )
    assert streamed.startswith("Echo: stream")
    oa.models.list()

    pt.wait_captures(17, timeout=60)
    pt.drained()
    return World(pt, n, a, conv_c)


# ------------------------------------------------------------------------------ running the CLI


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PROMPTTAP_", "LANGFUSE_"))}
    return subprocess.run(
        [sys.executable, "-m", "prompttap", "export", *args],
        cwd=ROOT,
        env={**base, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def export(world: World, out: Path, *args: str, via_server: bool = True, **kw: Any) -> dict[str, Any]:
    """Run ``prompttap export`` for the world's home; returns the --json report."""
    where = ["--home", str(world.pt.home)]
    if via_server:
        where += ["--ui", f"127.0.0.1:{world.pt.ui_port}"]
    r = cli(*args, "--out", str(out), *where, "--json", "--no-progress", **kw)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["source"].startswith("server" if via_server else "store"), report
    return report


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def mentioning(items: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    return [it for it in items if text in json.dumps(it, ensure_ascii=False)]


# ------------------------------------------------------------------------------ OpenAI's rules

# The checks of OpenAI's "chat fine-tuning data preparation" guide, written from the guide
# (not from the exporter): keys, roles, content, an assistant message, weights, tool pairing.
ALLOWED_KEYS = {"role", "content", "name", "function_call", "tool_calls", "tool_call_id", "weight"}


def openai_format_errors(example: Any) -> list[str]:
    errors = []
    if not isinstance(example, dict):
        return ["data_type"]
    messages = example.get("messages")
    if not messages:
        return ["missing_messages_list"]
    assistants = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    if not assistants:
        errors.append("example_missing_assistant_message")
    pending: set[str] = set()
    for i, m in enumerate(messages):
        if "role" not in m or ("content" not in m and not m.get("tool_calls")):
            errors.append("message_missing_key")
        if set(m) - ALLOWED_KEYS:
            errors.append("message_unrecognized_key")
        if m.get("role") not in ("system", "user", "assistant", "tool", "function"):
            errors.append("unrecognized_role")
        content = m.get("content")
        if m.get("role") != "assistant" and not isinstance(content, str | list):
            errors.append("missing_content")
        if "weight" in m and (m["role"] != "assistant" or m["weight"] not in (0, 1)):
            errors.append("invalid_weight")
        if m.get("role") in ("user", "assistant") and pending:
            errors.append("unanswered_tool_call")
        for call in m.get("tool_calls") or []:
            if call.get("type") != "function" or not call.get("id"):
                errors.append("invalid_tool_call")
            json.loads(call["function"]["arguments"])
            if i != assistants[-1]:
                pending.add(call["id"])
        if m.get("role") == "tool":
            if m.get("tool_call_id") not in pending:
                errors.append("tool_result_without_call")
            pending.discard(m.get("tool_call_id"))
    if pending:
        errors.append("unanswered_tool_call")
    return errors


OPENAI_MESSAGES = pydantic.TypeAdapter(list[openai.types.chat.ChatCompletionMessageParam])
OPENAI_TOOLS = pydantic.TypeAdapter(list[openai.types.chat.ChatCompletionToolParam])
ANTHROPIC_MESSAGES = pydantic.TypeAdapter(list[anthropic.types.MessageParam])
ANTHROPIC_TOOLS = pydantic.TypeAdapter(list[anthropic.types.ToolParam])


def check_openai_file(path: Path) -> list[dict[str, Any]]:
    items = lines(path)
    for it in items:
        assert openai_format_errors(it) == [], it
        OPENAI_MESSAGES.validate_python(it["messages"], strict=True)
        OPENAI_TOOLS.validate_python(it.get("tools", []), strict=True)
    return items


# ------------------------------------------------------------------------------ formats


def test_openai_chat_through_the_running_server(world: World, tmp_path: Path):
    world.ensure_running()
    out = tmp_path / "chat.jsonl"
    report = export(world, out, "--format", "openai-chat")
    items = check_openai_file(out)
    n = world.n
    # Threads, not fragments: A (4 captures), B (2, joined by inference), C (2) once each.
    (a,) = mentioning(items, f"hello {n}")
    assert a == {"messages": world.conv_a}
    assert len(mentioning(items, f"inference {n}")) == 1 and mentioning(items, f"more {n}")
    (c,) = [i for i in items if i["messages"][0] == {"role": "system", "content": "Be brief."}]
    conv = world.conv_c["messages"]
    uses = conv[1]["content"]
    assert c["messages"][:2] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": conv[0]["content"]},
    ]
    assert [tc["id"] for tc in c["messages"][2]["tool_calls"]] == [u["id"] for u in uses]
    assert [json.loads(tc["function"]["arguments"]) for tc in c["messages"][2]["tool_calls"]] == [
        u["input"] for u in uses
    ]
    assert c["messages"][3:5] == [
        {"role": "tool", "tool_call_id": uses[0]["id"], "content": "sunny"},
        {"role": "tool", "tool_call_id": uses[1]["id"], "content": "rainy"},
    ]
    assert c["messages"][5] == {"role": "assistant", "content": conv[-1]["content"]}
    assert c["tools"] == [{"type": "function", "function": {**OA_TOOLS[0]["function"]}}]
    # Content parts kept where the format allows them: the image stays an image_url part.
    (img,) = mentioning(items, f"image {n}")
    assert img["messages"][0]["content"] == [
        {"type": "text", "text": f"image {n}"},
        {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}},
    ]
    # Default selection: successful, complete answers only; duplicates collapsed.
    for gone in (f"failed {n}", f"trunc {n}", f"cancel {n}"):
        assert not mentioning(items, gone)
    assert len(mentioning(items, f"dup {n}")) == 1
    assert len(items) == 7
    assert report["exported"] == 7 and report["skipped"] == 0
    assert report["captures"] == 13 and report["conversations"] == 8 and report["duplicates"] == 1


def test_per_capture_and_no_dedupe_opt_outs(world: World, tmp_path: Path):
    world.ensure_running()
    out = tmp_path / "all.jsonl"
    report = export(world, out, "--format", "openai-chat", "--per-capture", "--no-dedupe")
    items = check_openai_file(out)
    assert len(mentioning(items, f"hello {world.n}")) == 4  # every turn of A
    assert len(mentioning(items, f"dup {world.n}")) == 2
    assert report["exported"] == 13 and report["duplicates"] == 0
    # The turn whose answer was a tool call ends with that call, unanswered (it is the target).
    (turn2,) = [i for i in items if i["messages"][-1].get("tool_calls") and f"hello {world.n}" in json.dumps(i)]
    assert turn2["messages"][-1]["tool_calls"] == world.conv_a[4]["tool_calls"]


def test_anthropic_format_over_http(world: World):
    world.ensure_running()
    url = f"{world.pt.ui_url}/api/export"
    r = httpx.post(url, json={"format": "anthropic"}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    assert "attachment" in r.headers["content-disposition"] and ".jsonl" in r.headers["content-disposition"]
    assert r.headers["x-prompttap-export-total"] == "7" and r.headers["x-prompttap-export-duplicates"] == "1"
    items = [json.loads(ln) for ln in r.text.splitlines()]
    for it in items:
        ANTHROPIC_MESSAGES.validate_python(it["messages"])
        ANTHROPIC_TOOLS.validate_python(it.get("tools", []))
        assert [m["role"] for m in it["messages"]][::2] == ["user"] * ((len(it["messages"]) + 1) // 2)
    # Conversation C comes back exactly as it was sent to the Messages API, answer appended.
    (c,) = [i for i in items if i.get("system") == "Be brief."]
    assert c == world.conv_c
    # Conversation A, captured from the OpenAI API: tool results become a user turn of blocks.
    (a,) = mentioning(items, f"hello {world.n}")
    calls = world.conv_a[4]["tool_calls"]
    assert a["system"] == "You are terse."
    assert a["messages"][3] == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": t["id"], "name": "get_weather", "input": json.loads(t["function"]["arguments"])}
            for t in calls
        ],
    }
    assert a["messages"][4] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": calls[0]["id"], "content": "sunny"},
            {"type": "tool_result", "tool_use_id": calls[1]["id"], "content": "rainy"},
        ],
    }
    report = httpx.get(f"{world.pt.ui_url}/api/export/reports/{r.headers['x-prompttap-export-id']}").json()
    assert report["done"] and report["exported"] == len(items) == 7


def test_sharegpt_format(world: World, tmp_path: Path):
    world.ensure_running()
    out = tmp_path / "sharegpt.jsonl"
    report = export(world, out, "--format", "sharegpt")
    items = lines(out)
    assert report["exported"] == len(items) == 7
    (a,) = mentioning(items, f"hello {world.n}")
    calls = world.conv_a[4]["tool_calls"]
    assert [t["from"] for t in a["conversations"]] == [
        "system", "human", "gpt", "human", "function_call", "observation", "gpt", "human", "gpt",
    ]  # fmt: skip
    assert json.loads(a["conversations"][4]["value"]) == [
        {"name": "get_weather", "arguments": json.loads(t["function"]["arguments"])} for t in calls
    ]
    assert json.loads(a["conversations"][5]["value"]) == ["sunny", "rainy"]
    assert a["conversations"][-1] == {"from": "gpt", "value": world.conv_a[-1]["content"]}
    (c,) = [i for i in items if i["conversations"][0] == {"from": "system", "value": "Be brief."}]
    assert json.loads(c["tools"])[0]["name"] == "get_weather"


def test_parquet_loads_with_datasets_and_pyarrow(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    world.ensure_running()
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out = tmp_path / "conversations.parquet"
    report = export(world, out, "--format", "parquet")
    table = pq.read_table(out)
    assert table.num_rows == report["exported"] == 7
    ds = datasets.load_dataset("parquet", data_files=str(out), split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == 7
    rows = {r["id"]: r for r in ds}
    # Compare with the source captures as the inspector's API returns them.
    for capture_id, row in rows.items():
        cap = world.pt.capture(capture_id)
        assert row["thread_id"] == cap["thread_id"] and row["trace_id"] == cap["trace_id"]
        assert row["system_prompt"] == cap["system_prompt"] and row["output_text"] == cap["output_text"]
        assert [(m["role"], m["content"]) for m in row["messages"]] == [
            (m["role"], m["content"]) for m in cap["messages"]
        ]
        assert [(c["id"], c["name"], c["arguments"]) for m in row["messages"] for c in m["tool_calls"]] == [
            (c["id"], c["name"], c["arguments"]) for m in cap["messages"] for c in m["tool_calls"]
        ]
        assert row["output_tool_calls"] == cap["output_tool_calls"]
        assert [t["name"] for t in row["tools"]] == [t["name"] for t in cap["tools"]]
    (a,) = [r for r in rows.values() if r["messages"] and r["messages"][0]["content"] == f"hello {world.n}"]
    assert [m["role"] for m in a["messages"]] == [m["role"] for m in world.conv_a[1:-1]]
    (img,) = [r for r in rows.values() if r["messages"][0]["content"] == f"image {world.n}"]
    assert img["messages"][0]["parts"] == [
        {"type": "text", "text": f"image {world.n}", "url": ""},
        {"type": "image", "text": "", "url": PNG},
    ]
    assert table.schema.field("started_at").type.tz == "UTC"


def test_redact_scrubs_and_counts(world: World, tmp_path: Path):
    world.ensure_running()
    scope = ("--session", f"pii-{world.n}")
    plain = tmp_path / "plain.jsonl"
    export(world, plain, "--format", "openai-chat", *scope)
    assert all(v in plain.read_text() for v in PII_VALUES)
    expected = {"email": 2, "phone": 2, "ip": 2, "secret": 2}  # the prompt and the echoed answer
    for fmt, name in (("openai-chat", "red.jsonl"), ("parquet", "red.parquet"), ("anthropic", "red.anthropic")):
        out = tmp_path / name
        report = export(world, out, "--format", fmt, "--redact", *scope)
        assert report["redactions"] == expected, fmt
        text = out.read_bytes().decode("utf-8", "replace")
        for value in PII_VALUES:
            assert value not in text, (fmt, value)
        if fmt == "openai-chat":
            (item,) = lines(out)
            assert item["messages"][0]["content"] == f"contact {world.n}: [EMAIL], [PHONE], from [IP], key [SECRET]"
        if fmt == "parquet":
            (row,) = pq.read_table(out).to_pylist()
            assert row["output_text"].startswith(f"Echo: contact {world.n}: [EMAIL], [PHONE], from [IP], key [SECRET]")
    r = cli("--format", "openai-chat", "--redact", *scope, "--out", str(tmp_path / "h.jsonl"), "--home",
            str(world.pt.home), "--ui", f"127.0.0.1:{world.pt.ui_port}", "--no-progress")  # fmt: skip
    assert "redacted: 2 email, 2 phone, 2 ip, 2 secret" in r.stdout, r.stdout


def test_a_split_names_both_sides_even_when_one_is_empty(world: World, tmp_path: Path):
    """One bucket in a million goes to train: every thread of this world lands in validation (CI once met
    it by chance with --split 0.5, and the report had no "train" at all)."""
    for via_server in (True, False):
        if via_server:
            world.ensure_running()
        else:
            world.ensure_stopped()  # the store itself, not the running serve
        out = tmp_path / f"server-{via_server}" / "data.jsonl"
        report = export(world, out, "--format", "openai-chat", "--per-capture", "--split", "0.000001",
                        via_server=via_server)  # fmt: skip
        validation = len(lines(out.with_name("data.validation.jsonl")))
        assert validation > 0 and lines(out.with_name("data.train.jsonl")) == []
        assert report["split"] == {"train": 0, "validation": validation}, report


def test_split_is_deterministic_and_by_thread(world: World, tmp_path: Path):
    world.ensure_running()
    whole = tmp_path / "whole.jsonl"
    export(world, whole, "--format", "openai-chat", "--per-capture")
    runs = []
    for k in range(2):
        out = tmp_path / f"run{k}" / "data.jsonl"
        report = export(world, out, "--format", "openai-chat", "--per-capture", "--split", "0.5")
        train, val = out.with_name("data.train.jsonl"), out.with_name("data.validation.jsonl")
        assert report["split"] == {"train": len(lines(train)), "validation": len(lines(val))}
        runs.append((train.read_bytes(), val.read_bytes()))
    assert runs[0] == runs[1]
    both = [*lines(tmp_path / "run0" / "data.train.jsonl"), *lines(tmp_path / "run0" / "data.validation.jsonl")]
    assert sorted(map(json.dumps, both)) == sorted(map(json.dumps, lines(whole)))
    # By thread: every turn of a conversation lands on the same side.
    for part in ("train", "validation"):
        items = lines(tmp_path / "run0" / f"data.{part}.jsonl")
        hello = len(mentioning(items, f"hello {world.n}"))
        assert hello in (0, 4)
    # Over HTTP a part is one request; the langfuse items carry the thread to check it there too.
    threads: dict[str, set[str]] = {}
    rows = 0
    for part in ("train", "validation"):
        r = httpx.post(
            f"{world.pt.ui_url}/api/export",
            json={"format": "langfuse", "per_capture": True, "split": 0.5, "part": part},
            timeout=60,
        )
        threads[part] = {json.loads(ln)["metadata"]["thread_id"] for ln in r.text.splitlines()}
        rows += len(r.text.splitlines())
    assert not threads["train"] & threads["validation"]
    assert rows == len(both)


def test_default_selection_and_asking_for_more(world: World, tmp_path: Path):
    world.ensure_running()
    out = tmp_path / "everything.jsonl"
    report = export(world, out, "--format", "openai-chat", "--outcome", "any", "--include-incomplete", "--per-capture")
    items = check_openai_file(out)
    n = world.n
    # Cut at max_tokens, cancelled mid-stream: their partial answers are exported when asked for.
    for partial in (f"trunc {n}", f"cancel {n}"):
        (item,) = mentioning(items, partial)
        assert item["messages"][-1]["role"] == "assistant" and item["messages"][-1]["content"].startswith("Echo:")
    # A failed capture has no answer to learn: counted as skipped, with the reason.
    assert not mentioning(items, f"failed {n}")
    assert report["skipped_reasons"] == {"no assistant message": 1}
    # Every chat capture is considered; the model listing is not a conversation.
    chats = [c for c in world.pt.captures(limit=1000) if c["api"] != "openai.models" and "after the" not in str(c)]
    assert report["captures"] == len(chats) >= 16
    only_failed = tmp_path / "failed.jsonl"
    report = export(world, only_failed, "--format", "openai-chat", "--outcome", "upstream_error")
    assert report["captures"] == 0  # failed answers are incomplete unless asked for
    ids = [c["id"] for c in world.pt.captures(limit=100) if c["session_id"] == f"conv-a-{n}"][:2]
    picked = tmp_path / "picked.jsonl"
    report = export(world, picked, "--format", "openai-chat", "--id", ids[0], "--id", ids[1], "--per-capture")
    assert report["exported"] == 2


def test_progress_plain_lines_and_terminal_bar(world: World, tmp_path: Path):
    world.ensure_running()
    where = ["--home", str(world.pt.home), "--ui", f"127.0.0.1:{world.pt.ui_port}"]
    r = cli("--format", "openai-chat", "--out", str(tmp_path / "p.jsonl"), *where)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^export: 7/7 conversations \(100%\), [\d,]+/s", r.stderr, re.M), r.stderr
    assert "exported 7 conversations as openai-chat" in r.stdout and "1 duplicates removed" in r.stdout
    # On a terminal: one line redrawn in place, with a bar, the counts and the rate.
    primary, secondary = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTTAP_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prompttap",
            "export",
            "--format",
            "sharegpt",
            "--out",
            str(tmp_path / "t.jsonl"),
            *where,
        ],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=secondary,
    )
    proc.wait(timeout=120)
    os.close(secondary)
    screen = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
    os.close(primary)
    assert proc.returncode == 0
    assert b"\r\x1b[Kexport [" in screen and b"/s" in screen and b"7/7 conversations" in screen, screen


def test_langfuse_dataset_items_link_to_their_traces(world: World, tmp_path: Path):
    world.ensure_running()
    with FakeLangfuse() as lf:
        env = {"LANGFUSE_PUBLIC_KEY": "pk-lf-test", "LANGFUSE_SECRET_KEY": "sk-lf-test", "LANGFUSE_HOST": lf.url}
        where = ["--home", str(world.pt.home), "--ui", f"127.0.0.1:{world.pt.ui_port}"]
        r = cli("--format", "langfuse", "--dataset", "prompttap-ft", *where, "--json", "--no-progress", env=env)
        assert r.returncode == 0, r.stderr
        report = json.loads(r.stdout.strip().splitlines()[-1])
        assert report["langfuse"] == {"dataset": "prompttap-ft", "items": 7}
        assert lf.datasets["prompttap-ft"]["name"] == "prompttap-ft"
        assert set(lf.auth) == {"Basic " + base64.b64encode(b"pk-lf-test:sk-lf-test").decode()}
        items = list(lf.items.values())
        assert len(items) == 7 and {i["datasetName"] for i in items} == {"prompttap-ft"}
        for item in items:
            cap = world.pt.capture(item["metadata"]["capture_id"])
            assert item["sourceTraceId"] == cap["trace_id"] and item["sourceObservationId"] == cap["span_id"]
        (a,) = mentioning([i["input"] | {"item": i} for i in items], f"hello {world.n}")
        a = a["item"]
        assert [*a["input"]["messages"], a["expectedOutput"]] == world.conv_a
        # Exporting again updates the same items (ids derive from dataset and capture).
        r = cli("--format", "langfuse", "--dataset", "prompttap-ft", *where, "--no-progress", env=env)
        assert r.returncode == 0, r.stderr
        assert len(lf.items) == 7
        assert lf.other == []  # the SDK needed nothing beyond the two endpoints
    r = cli("--format", "langfuse", "--dataset", "x", "--home", str(world.pt.home))
    assert r.returncode == 1 and "LANGFUSE_PUBLIC_KEY" in r.stderr


# ------------------------------------------------------------------------------ where captures are read


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode != 0
    errors = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1, r.stderr
    assert errors[0].startswith("prompttap: ")
    return errors[0]


def test_running_server_without_a_known_inspector_gives_one_line_with_the_remedy(world: World, tmp_path: Path):
    world.ensure_running()
    dead = f"127.0.0.1:{free_port()}"
    # The server's record names an inspector that does not answer (it names the live server's pid).
    record = world.pt.home / "spool" / "SERVER"
    kept = record.read_text()
    record.write_text(json.dumps({"inspector": f"http://{dead}", "pid": world.pt.proc.pid}))
    try:
        r = cli("--format", "openai-chat", "--out", str(tmp_path / "x.jsonl"), "--home", str(world.pt.home))
    finally:
        record.write_text(kept)
    line = one_line_error(r)
    assert "running `prompttap serve`" in line and "--server" in line and "stop it" in line and dead in line
    assert not (tmp_path / "x.jsonl").exists()
    # PROMPTTAP_SERVER (or --server) names the inspector outright.
    r = cli("--format", "openai-chat", "--out", str(tmp_path / "y.jsonl"), "--home", str(world.pt.home),
            "--json", env={"PROMPTTAP_SERVER": world.pt.ui_url})  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["exported"] == 7
    # The server kept recording while exports ran against it.
    before = len(world.pt.captures(limit=1000))
    openai.OpenAI(base_url=f"{world.pt.url}/v1", api_key=KEY).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "after the exports"}]
    )
    world.pt.wait_captures(before + 1)


def test_export_finds_the_running_server_from_its_home_alone(world: World, tmp_path: Path):
    """Issue 15: `serve` on any --ui port records where its inspector listens; `export` with only
    the home (PROMPTTAP_HOME, or --home and --store) finds it, for every format."""
    world.ensure_running()
    home_env = {"PROMPTTAP_HOME": str(world.pt.home)}
    store = f"chdb://{(world.pt.home / 'store').resolve()}"
    for fmt in ("openai-chat", "anthropic", "sharegpt", "parquet"):
        ref, out, out2 = (tmp_path / f"{name}.{fmt}" for name in ("server", "home", "store"))
        r = cli("--format", fmt, "--out", str(ref), "--server", world.pt.ui_url, "--json", "--no-progress")
        assert r.returncode == 0, r.stderr
        exported = json.loads(r.stdout.strip().splitlines()[-1])["exported"]
        assert exported >= 7
        for target, where, env in ((out, [], home_env), (out2, ["--home", str(world.pt.home), "--store", store], {})):
            r = cli("--format", fmt, "--out", str(target), *where, "--json", "--no-progress", env=env)
            assert r.returncode == 0, (fmt, r.stderr)
            report = json.loads(r.stdout.strip().splitlines()[-1])
            assert report["source"] == f"server {world.pt.ui_url}" and report["exported"] == exported, report
            if fmt == "parquet":
                assert pq.read_table(target).to_pylist() == pq.read_table(ref).to_pylist()
            else:
                assert target.read_bytes() == ref.read_bytes()
    with FakeLangfuse() as lf:
        env = {**home_env, "LANGFUSE_PUBLIC_KEY": "pk-lf-test", "LANGFUSE_SECRET_KEY": "sk-lf-test"}
        r = cli(
            "--format",
            "langfuse",
            "--dataset",
            "from-home",
            "--json",
            "--no-progress",
            env={**env, "LANGFUSE_HOST": lf.url},
        )
        assert r.returncode == 0, r.stderr
        report = json.loads(r.stdout.strip().splitlines()[-1])
        assert report["source"] == f"server {world.pt.ui_url}"
        assert report["langfuse"] == {"dataset": "from-home", "items": exported}
        assert len(lf.items) == exported
    record = json.loads((world.pt.home / "spool" / "SERVER").read_text())
    assert record == {"inspector": world.pt.ui_url, "pid": world.pt.proc.pid}


def test_a_stale_server_record_misleads_no_one(fake: FakeUpstream, make_pt, tmp_path: Path):
    p = make_pt()
    openai.OpenAI(base_url=f"{p.url}/v1", api_key=KEY).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "stale record"}]
    )
    p.wait_captures(1)
    p.drained()
    record = p.home / "spool" / "SERVER"
    assert json.loads(record.read_text())["inspector"] == p.ui_url
    assert p.stop() == 0 and not record.exists()  # a clean exit takes it away
    p.start()
    assert record.exists()
    p.kill()  # left behind, naming a dead process and a closed port
    assert record.exists()
    r = cli("--format", "openai-chat", "--out", str(tmp_path / "x.jsonl"), "--home", str(p.home), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["source"].startswith("store")
    # A server without an inspector on that home now: the old record is not believed either.
    make_pt(home=p.home, ui=False)
    dead = f"127.0.0.1:{free_port()}"
    line = one_line_error(
        cli("--format", "openai-chat", "--out", str(tmp_path / "y.jsonl"), "--home", str(p.home), "--ui", dead)
    )
    assert f"http://{dead}" in line and p.ui_url not in line and "--server" in line


def test_server_with_inspector_off(fake: FakeUpstream, make_pt, tmp_path: Path):
    p = make_pt(ui=False)
    r = cli("--format", "openai-chat", "--out", str(tmp_path / "x.jsonl"), "--home", str(p.home),
            "--ui", f"127.0.0.1:{free_port()}")  # fmt: skip
    line = one_line_error(r)
    assert "--server" in line


def test_no_store_yet(tmp_path: Path):
    line = one_line_error(cli("--format", "openai-chat", "--out", str(tmp_path / "x.jsonl"), "--home", str(tmp_path)))
    assert "no store at" in line
    line = one_line_error(cli("--format", "parquet", "--home", str(tmp_path)))
    assert "--out" in line
    line = one_line_error(cli("--format", "openai-chat", "--out", "-", "--split", "0.9", "--home", str(tmp_path)))
    assert "stdout" in line
    line = one_line_error(cli("--format", "openai-chat", "--out", "x", "--split", "2", "--home", str(tmp_path)))
    assert "split" in line


def test_bad_request_over_http(world: World):
    world.ensure_running()
    r = httpx.post(f"{world.pt.ui_url}/api/export", json={"format": "csv"})
    assert r.status_code == 400 and "format must be one of" in r.json()["detail"]
    r = httpx.post(f"{world.pt.ui_url}/api/export", json={"since": "yesterday-ish"})
    assert r.status_code == 400 and "not a time" in r.json()["detail"]
    assert httpx.get(f"{world.pt.ui_url}/api/export/reports/nope").status_code == 404
    info = httpx.get(f"{world.pt.ui_url}/api/export/info").json()
    assert info["store"] == f"chdb://{(world.pt.home / 'store').resolve()}"


def test_export_from_the_store_after_the_server_stopped(world: World, tmp_path: Path):
    world.ensure_running()
    via_server = {fmt: tmp_path / f"server.{fmt}" for fmt in ("openai-chat", "parquet", "anthropic")}
    for fmt, out in via_server.items():
        export(world, out, "--format", fmt, "--redact")
    world.ensure_stopped()
    for fmt, server_out in via_server.items():
        out = tmp_path / f"store.{fmt}"
        report = export(world, out, "--format", fmt, "--redact", via_server=False)
        assert report["exported"] >= 7
        if fmt == "parquet":  # the same file, whoever ran ClickHouse's writer
            assert pq.read_table(out).to_pylist() == pq.read_table(server_out).to_pylist()
        else:
            assert out.read_bytes() == server_out.read_bytes()
    check_openai_file(tmp_path / "store.openai-chat")
    # While this process has the store open (a stand-in for any other owner), the CLI says so.
    code = (
        "import sys, time\n"
        "from schemas.store import open_store\n"
        "c = open_store(sys.argv[1])\n"
        "print('open', flush=True)\n"
        "time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, f"chdb://{(world.pt.home / 'store').resolve()}"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        r = cli("--format", "openai-chat", "--out", str(tmp_path / "z.jsonl"), "--home", str(world.pt.home),
                "--ui", f"127.0.0.1:{free_port()}")  # fmt: skip
        line = one_line_error(r)
        assert "open in another process" in line and "--server" in line
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------------------ pure parts


def test_redaction_of_json_text_keeps_it_valid():
    red = Redactor()
    args = json.dumps({"note": "line\nbob@example.com", "who": "caf\u00e9 ann@example.org", "ip": "10.0.0.1"})
    assert "\\n" in args and "\\u00e9" in args
    out = red.json_text(args)
    assert json.loads(out) == {"note": "line\n[EMAIL]", "who": "caf\u00e9 [EMAIL]", "ip": "[IP]"}
    assert red.counts == {"email": 2, "ip": 1}
    sample = r'{"a":"\\\"x\u0041\/\b\f\r\t"}'
    assert unprotect_json(protect_json(sample)) == sample


def test_redaction_patterns():
    red = Redactor()
    text = (
        "mail a.b+c@mail.example.co.uk, call +44 20 7946 0958 or 555-123-4567 or +4915112345678, "
        "hosts 10.1.2.3 and 2001:db8::8a2e:370:7334, "
        "keys AKIAIOSFODNN7EXAMPLE ghp_0123456789abcdefghijABCDEFGHIJ012345 "
        "Bearer abcdefghijklmnopqrstuvwx12; not 2026-01-31, v1.2.3 or 12:30"
    )
    assert red.text(text) == (
        "mail [EMAIL], call [PHONE] or [PHONE] or [PHONE], hosts [IP] and [IP], keys [SECRET] [SECRET] "
        "[SECRET]; not 2026-01-31, v1.2.3 or 12:30"
    )
    assert red.counts == {"email": 1, "phone": 3, "ip": 2, "secret": 3}


def test_export_button_posts_the_list_filters_with_csrf(world: World):
    """The capture list's Export button: a form POST (CSRF-checked) streaming the same file."""
    world.ensure_running()
    with httpx.Client(base_url=world.pt.ui_url, timeout=60) as browser:
        page = browser.get("/", params={"route": "claude"}).text
        form = re.search(r'<form method="post" action="(/api/export/form)".*?</form>', page, re.S)
        assert form, "the capture list has an Export form"
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.group(0)))
        assert fields["route"] == "claude" and fields["csrf_token"]
        same = {"origin": world.pt.ui_url, "sec-fetch-site": "same-origin"}
        r = browser.post(form.group(1), data={**fields, "format": "anthropic"}, headers=same)
        assert r.status_code == 200, r.text
        assert "attachment" in r.headers["content-disposition"]
        lines = [json.loads(line) for line in r.text.splitlines()]
        assert lines and all(line["messages"][-1]["role"] == "assistant" for line in lines)
        forged = browser.post(form.group(1), data={**fields, "csrf_token": "forged.0"}, headers=same)
        assert forged.status_code == 403


def test_a_get_never_starts_an_export_and_other_origins_cannot_post_one(world: World):
    """Issue 15: an export is a POST with the Origin and CSRF checks. A GET that started one could
    be fired by any page (a link, an <img>): it must not run the export at all."""
    world.ensure_running()
    base = world.pt.ui_url
    for path in ("/api/export", "/api/export/form"):
        r = httpx.get(base + path, params={"format": "openai-chat", "include_incomplete": "true"}, timeout=60)
        assert r.status_code == 405, (path, r.status_code)
        assert "x-prompttap-export-id" not in r.headers and "attachment" not in r.headers.get("content-disposition", "")
    with httpx.Client(base_url=base, timeout=60) as browser:
        page = browser.get("/").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        form = {"csrf_token": token, "format": "openai-chat"}
        for evil in ({"origin": "http://evil.example"}, {"origin": "null"}, {"sec-fetch-site": "cross-site"}):
            assert browser.post("/api/export/form", data=form, headers=evil).status_code == 403, evil
            assert browser.post("/api/export", json={"format": "openai-chat"}, headers=evil).status_code == 403, evil
        same = {"origin": base, "sec-fetch-site": "same-origin"}
        assert browser.post("/api/export/form", data={"format": "openai-chat"}, headers=same).status_code == 403
        assert browser.post("/api/export", json={"format": "openai-chat"}, headers=same).status_code == 403
        ok = browser.post("/api/export", json={"format": "openai-chat"}, headers={**same, "x-csrf-token": token})
        assert ok.status_code == 200 and len(ok.text.splitlines()) >= 7


def test_export_button_in_a_real_browser(world: World, tmp_path: Path):
    """The capture list's Export form in headless Chromium: a POST carrying the CSRF token and the
    list's filters downloads the file; the browser never sends a GET to the export API."""
    sync_api = pytest.importorskip("playwright.sync_api")
    world.ensure_running()
    sent: list[tuple[str, str, str]] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless=new", "--no-sandbox"])
        try:
            page = browser.new_page(accept_downloads=True)
            page.on("request", lambda req: sent.append((req.method, req.url, req.post_data or "")))
            page.goto(f"{world.pt.ui_url}/?route=claude")
            page.select_option('[data-testid="export-format"]', "anthropic")
            with page.expect_download() as info:
                page.click('[data-testid="export-button"]')
            download = info.value
            out = tmp_path / "download.jsonl"
            download.save_as(out)
            assert download.failure() is None
            assert download.suggested_filename.startswith("prompttap-anthropic-")
        finally:
            browser.close()
    items = lines(out)
    assert items == [i for i in items if i["system"] == "Be brief."] and len(items) == 1
    (post,) = [s for s in sent if "/api/export" in s[1]]
    assert post[0] == "POST" and post[1].endswith("/api/export/form")
    fields = dict(httpx.QueryParams(post[2]))
    assert fields["route"] == "claude" and fields["format"] == "anthropic" and fields["csrf_token"]


def test_export_form_keeps_the_capture_list_filters():
    from starlette.requests import Request as StarletteRequest

    from prompttap.inspector.export import export_filters
    from prompttap.inspector.web import templates

    request = StarletteRequest(
        {"type": "http", "query_string": b"route=app&model=gpt-4o&limit=50&before=x&q=words&since=24h", "headers": []}
    )
    assert export_filters(request) == {"route": "app", "model": "gpt-4o", "since": "24h"}
    failed = StarletteRequest({"type": "http", "query_string": b"outcome=upstream_error", "headers": []})
    assert export_filters(failed) == {"outcome": "upstream_error", "include_incomplete": "true"}
    assert templates.env.globals["export_filters"] is export_filters  # for the list page's Export form


# ------------------------------------------------------------------------------ a fake Langfuse


class FakeLangfuse:
    """The two endpoints the langfuse SDK calls to create a dataset and its items."""

    def __init__(self) -> None:
        self.datasets: dict[str, dict[str, Any]] = {}
        self.items: dict[str, dict[str, Any]] = {}
        self.auth: list[str] = []
        self.other: list[str] = []
        self.port = free_port()
        app = FastAPI()
        now = "2026-01-01T00:00:00.000Z"

        @app.post("/api/public/v2/datasets")
        async def create_dataset(request: Request) -> JSONResponse:
            self.auth.append(request.headers.get("authorization", ""))
            body = await request.json()
            ds = self.datasets.setdefault(body["name"], {"id": uuid.uuid4().hex, "projectId": "p", "createdAt": now})
            ds.update(name=body["name"], description=body.get("description"), metadata=body.get("metadata"))
            return JSONResponse({**ds, "updatedAt": now})

        @app.post("/api/public/dataset-items")
        async def create_item(request: Request) -> JSONResponse:
            self.auth.append(request.headers.get("authorization", ""))
            body = await request.json()
            ds = self.datasets.get(body.get("datasetName"))
            if ds is None:
                return JSONResponse({"message": "dataset not found"}, status_code=404)
            item_id = body.get("id") or uuid.uuid4().hex
            self.items[item_id] = body
            return JSONResponse(
                {
                    "status": "ACTIVE",
                    "input": body.get("input"),
                    "expectedOutput": body.get("expectedOutput"),
                    "metadata": body.get("metadata"),
                    "sourceTraceId": body.get("sourceTraceId"),
                    "sourceObservationId": body.get("sourceObservationId"),
                    "id": item_id,
                    "datasetId": ds["id"],
                    "datasetName": ds["name"],
                    "createdAt": now,
                    "updatedAt": now,
                    "mediaReferences": [],
                }
            )

        @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
        async def other(path: str, request: Request) -> JSONResponse:
            self.other.append(f"{request.method} /{path}")
            return JSONResponse({"message": "not in the fake"}, status_code=404)

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeLangfuse:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "fake Langfuse did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
