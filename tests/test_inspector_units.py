"""Inspector pieces without a running prompttap: the search index (EXPLAIN on an embedded
store), image safety, template slots, thread changes, replay request building, settings."""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import uuid

import pytest

from prompttap.collector import config
from prompttap.collector.server import StartupError
from prompttap.inspector import queries, replay, security, views
from prompttap.inspector.queries import filters
from prompttap.schemas.store import MIGRATIONS_DIR, migrate, open_store
from prompttap.serve import inspector_options
from tests.test_inspector_security import Audit

# --- the full-text index -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_store():
    store = open_store("chdb://memory")
    migrate(store)
    rng = random.Random(7)
    words = [f"w{i}" for i in range(4000)]
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    rows = []
    for i in range(30_000):
        text = " ".join(rng.choice(words) for _ in range(60))
        if i == 17_000:
            text += "\nNeedleWord in a message"
        messages = json.dumps([{"role": "user", "content": text}])
        output = "the answer is outputonlyword" if i == 25_000 else "ok"
        rows.append([uuid.uuid4(), base + dt.timedelta(seconds=i), base, "a" * 32, "b" * 16, messages, output])
    store.insert(
        "captures",
        rows,
        column_names=["id", "started_at", "recorded_at", "trace_id", "span_id", "messages", "output_text"],
    )
    store.command("OPTIMIZE TABLE captures FINAL")
    return store


def _search_granules(plan: str) -> tuple[int, int]:
    block = plan.split("Name: idx_search", 1)[1]
    m = re.search(r"Granules: (\d+)/(\d+)", block)
    assert m, plan
    return int(m.group(1)), int(m.group(2))


def test_search_prunes_granules_with_the_text_index(big_store):
    flt = queries.CaptureFilter(q="needleword")
    plan = queries.explain_search(big_store, flt)
    kept, total = _search_granules(plan)
    assert total >= 20 and kept <= 2, plan
    hits = queries.list_captures(big_store, flt, 50)
    assert len(hits) == 1
    assert "NeedleWord" in queries.get_capture(big_store, uuid.UUID(hits[0]["id"]))["messages"][0]["content"]
    # Case-insensitive, all words, outputs too; the index answers without reading the bodies.
    assert len(queries.list_captures(big_store, queries.CaptureFilter(q="NEEDLEWORD message"), 50)) == 1
    assert queries.list_captures(big_store, queries.CaptureFilter(q="needleword outputonlyword"), 50) == []
    out = queries.CaptureFilter(q="outputonlyword")
    assert len(queries.list_captures(big_store, out, 50)) == 1
    assert _search_granules(queries.explain_search(big_store, out))[0] <= 2
    # Combined with other filters and a cursor, the index still prunes.
    cursor = queries.Cursor(dt.datetime(2026, 1, 2, tzinfo=dt.UTC), uuid.uuid4())
    assert len(queries.list_captures(big_store, flt, 50, before=cursor)) == 1


def test_search_results_match_a_full_scan(big_store):
    for word in ("w17", "w3999", "w42"):
        indexed = {r["id"] for r in queries.list_captures(big_store, queries.CaptureFilter(q=word), 1000)}
        scan = big_store.query(
            "SELECT id FROM captures WHERE hasToken(messages, {w:String}) ORDER BY started_at DESC LIMIT 1000",
            parameters={"w": word},
        )
        assert indexed == {str(r[0]) for r in scan.result_rows}, word


def test_a_query_without_words_is_no_search(big_store):
    assert queries.CaptureFilter(q="!!! ...").where() == ("", {})


def test_the_search_expression_is_the_migrations(big_store):
    sql = (MIGRATIONS_DIR / "0003_search_index.sql").read_text()
    assert filters.SEARCH_EXPR in sql
    show = big_store.command("SHOW CREATE TABLE captures")
    assert "idx_search" in show and "splitByNonAlpha" in show


def test_keyset_cursor_round_trip():
    c = queries.Cursor.parse("2026-01-02T03:04:05.123456+00:00,01a211d8-f2e6-7d0e-9c80-f637e852546e")
    assert str(c) == "2026-01-02T03:04:05.123456+00:00,01a211d8-f2e6-7d0e-9c80-f637e852546e"
    assert queries.ch_time(c.started_at) == "2026-01-02 03:04:05.123456"
    with pytest.raises(ValueError):
        queries.Cursor.parse("nope")


# --- rendering helpers --------------------------------------------------------------------------

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgAAAAAgAB4iG8MwAAAABJRU5ErkJggg=="


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        (f"data:image/png;base64,{PNG}", True),
        (f"data:image/jpeg;base64,{PNG}", True),
        (f"data:image/webp;base64,{PNG}", True),
        (f"data:image/gif;base64,{PNG}", True),
        ("https://example.com/a.png", True),
        ("http://example.com/a.png?x=1&y=2", True),
        (f"data:image/svg+xml;base64,{PNG}", False),
        ("data:image/svg+xml,<svg onload=alert(1)>", False),
        (f"data:text/html;base64,{PNG}", False),
        (f"data:image/png,{PNG}", False),
        ("data:image/png;base64,not base64!", False),
        (f"DATA:image/png;base64,{PNG}", False),
        ("javascript:alert(1)", False),
        ("JaVaScRiPt:alert(1)", False),
        ("vbscript:x", False),
        ("//example.com/a.png", False),
        ('https://example.com/a.png" onerror="alert(1)', False),
        ("https://exa mple.com/", False),
        ("file:///etc/passwd", False),
        ("", False),
        (None, False),
        (42, False),
    ],
)
def test_safe_image_src(url, safe):
    src = views.safe_image_src(url)
    assert (src is not None) is safe and (src is None or src == url)


def test_audit_catches_unsafe_markup():
    for bad in (
        "<script>alert(1)</script>",
        '<img src="javascript:alert(1)">',
        '<img src="data:image/svg+xml;base64,AAAA">',
        '<a href="javascript:alert(1)">x</a>',
        '<div onclick="x()">',
        "<svg onload=alert(1)>",
        '<iframe src="x"></iframe>',
        "<style>x</style>",
        '<meta http-equiv="refresh" content="0">',
    ):
        assert Audit(bad).problems, bad
    assert Audit('<script src="/static/app.js" defer></script><svg class="chart"></svg>').problems == []


def test_template_slots_line_up_placeholders_with_values():
    masked = "Today is {{date}} at {{time}}.\nContext:\n{{context}}\nKeep {{braces}} as text. Ref {{number}}."
    variables = [
        ("date", "2026-01-02"),
        ("time", "10:00"),
        ("context", "doc one"),
        ("context", "doc two"),
        ("number", "42"),
    ]
    segments, values = views.template_slots(masked, variables)
    assert [s["slot"] for s in segments if "slot" in s] == ["date#1", "time#1", "context#1", "number#1"]
    assert values == {
        "date#1": ["2026-01-02"],
        "time#1": ["10:00"],
        "context#1": ["doc one", "doc two"],
        "number#1": ["42"],
    }
    assert "".join(s.get("text", s.get("placeholder", "")) for s in segments) == masked


def test_turn_changes_added_dropped_rewritten():
    prev = {"system_prompt": "Be brief.", "output_text": "A1", "messages": [{"role": "user", "content": "Q1"}]}
    cur = {
        "system_prompt": "Be very brief.",
        "messages": [
            {"role": "user", "content": "Q1 (edited)"},
            {"role": "assistant", "content": "A1"},
            {"role": "user", "content": "Q2"},
        ],
    }
    ch = views.turn_changes(prev, cur)
    assert [r["role"] for r in ch["rewritten"]] == ["user"] and ch["rewritten"][0]["before"] == "Q1"
    assert [m["text"] for m in ch["added"]] == ["A1", "Q2"] and ch["answer_carried_over"]
    assert ch["system_changed"]
    assert "very" in "".join(op["text"] for op in ch["system_diff"] if op["op"] == "insert")
    assert views.turn_changes(None, cur)["first"]


# --- replay request building --------------------------------------------------------------------

OPTIONS = {"proxy_url": "http://127.0.0.1:8787", "upstream_keys": {"default": "sk-new-key", "app": "sk-app-key"}}


def _capture(**kw):
    base = {
        "id": str(uuid.uuid4()),
        "route": "default",
        "method": "POST",
        "path": "/v1/chat/completions",
        "api": "openai.chat",
        "request_body": json.dumps(
            {"model": "gpt-4o", "messages": [{"role": "system", "content": "old"}, {"role": "user", "content": "hi"}]}
        ),
        "request_body_encoding": "utf-8",
        "request_headers": {
            "authorization": "Bearer ...abcd",
            "content-type": "application/json",
            "user-agent": "OpenAI/Python",
            "x-stainless-os": "Linux",
        },
        "truncated": False,
        "tags": [],
    }
    return {**base, **kw}


def test_replay_paths_that_stay_on_their_route():
    options = {**OPTIONS, "routes": ("app", "pfx")}
    for route, path in (("app", "/app/v1/../v1/chat/completions"), ("app", "/app/./v1/messages"), ("default", "/v1/x")):
        assert replay.availability(options, _capture(route=route, path=path)) is None, path
    plan = replay.build(_capture(route="app", path="/app/v1/chat/completions"), options, {})
    assert plan["url"] == "http://127.0.0.1:8787/app/v1/chat/completions"
    assert plan["headers"]["authorization"] == "Bearer sk-app-key"


def test_build_openai_replay():
    cap = _capture(session_id="s1", tags=["a"])
    plan = replay.build(cap, OPTIONS, {"model": "gpt-4o-mini", "temperature": 0, "system_prompt": "new"})
    body = json.loads(plan["body"])
    assert plan["url"] == "http://127.0.0.1:8787/v1/chat/completions"
    assert body["model"] == "gpt-4o-mini" and body["temperature"] == 0
    assert body["messages"][0] == {"role": "system", "content": "new"}
    h = plan["headers"]
    assert h["authorization"] == "Bearer sk-new-key" and h["x-prompttap-replay-of"] == cap["id"]
    assert "x-stainless-os" not in h and h["x-prompttap-session"] == "s1" and h["x-prompttap-tags"] == "a,replay"
    unchanged = replay.build(cap, OPTIONS, {"model": "", "temperature": ""})
    assert unchanged["body"] == cap["request_body"].encode()


def test_build_replay_per_api():
    anth = _capture(
        api="anthropic.messages",
        route="app",
        path="/app/v1/messages",
        request_body=json.dumps({"model": "claude", "system": "old", "messages": []}),
        request_headers={"x-api-key": "...abcd", "anthropic-version": "2023-06-01", "anthropic-beta": "x"},
    )
    plan = replay.build(anth, OPTIONS, {"system_prompt": "new", "temperature": 0.5})
    assert plan["url"].endswith("/app/v1/messages") and plan["headers"]["x-api-key"] == "sk-app-key"
    assert plan["headers"]["anthropic-version"] == "2023-06-01" and plan["headers"]["anthropic-beta"] == "x"
    assert "authorization" not in plan["headers"]
    assert json.loads(plan["body"])["system"] == "new"

    gem = _capture(
        api="gemini.generate",
        path="/v1beta/models/gemini-2.0-flash:generateContent?key=...WXYZ&alt=sse",
        request_body=json.dumps({"contents": []}),
        request_headers={},
    )
    plan = replay.build(gem, OPTIONS, {"model": "gemini-2.5-pro", "temperature": 1, "system_prompt": "s"})
    assert plan["url"] == "http://127.0.0.1:8787/v1beta/models/gemini-2.5-pro:generateContent?alt=sse"
    assert plan["headers"]["authorization"] == "Bearer sk-new-key"
    body = json.loads(plan["body"])
    assert body["generationConfig"]["temperature"] == 1 and body["systemInstruction"]["parts"][0]["text"] == "s"

    olla = _capture(
        api="ollama.chat",
        path="/api/chat",
        request_body=json.dumps({"model": "llama3.2", "messages": [{"role": "user", "content": "x"}]}),
    )
    body = json.loads(replay.build(olla, OPTIONS, {"temperature": 0.1, "system_prompt": "sys"})["body"])
    assert body["options"]["temperature"] == 0.1 and body["messages"][0] == {"role": "system", "content": "sys"}

    resp = _capture(api="openai.responses", path="/v1/responses", request_body=json.dumps({"model": "m", "input": "x"}))
    assert json.loads(replay.build(resp, OPTIONS, {"system_prompt": "be nice"})["body"])["instructions"] == "be nice"


@pytest.mark.parametrize(
    ("cap", "options", "changes", "status", "text"),
    [
        ({"route": "other"}, OPTIONS, {}, 409, "--upstream-key other=ENV_VAR"),
        ({}, {"upstream_keys": {"default": "k"}}, {}, 409, "proxy"),
        ({"truncated": True}, OPTIONS, {}, 409, "size limit"),
        ({}, OPTIONS, {"temperature": 3}, 400, "between 0 and 2"),
        ({}, OPTIONS, {"temperature": "hot"}, 400, "number"),
        ({}, OPTIONS, {"model": "a b"}, 400, "model"),
        ({}, OPTIONS, {"stream": True}, 400, "unknown"),
        ({"request_body": "not json"}, OPTIONS, {"model": "x"}, 400, "not JSON"),
        ({"api": "openai.embeddings"}, OPTIONS, {"system_prompt": "x"}, 400, "system prompt"),
        # A replay goes to its own route's upstream only (with that route's key).
        ({"route": "app", "path": "/app/../v1/chat/completions"}, OPTIONS, {}, 409, "climbs out of route 'app'"),
        ({"route": "app", "path": "/app/%2E%2e/v1/chat/completions"}, OPTIONS, {}, 409, "climbs out of route"),
        ({"route": "app", "path": "/app/v1/..%2f..%5c../x"}, OPTIONS, {}, 409, "climbs out of route"),
        ({"path": "/../app/v1/chat/completions"}, OPTIONS, {}, 409, "climbs out of route 'default'"),
        ({"path": "/app/v1/chat/completions"}, {**OPTIONS, "routes": ("app",)}, {}, 409, "leads to route 'app'"),
        ({"path": "/%61pp/v1/chat/completions"}, {**OPTIONS, "routes": ("app",)}, {}, 409, "leads to route 'app'"),
        (
            {"api": "gemini.generate", "path": "/v1beta/models/gemini-2.0-flash:generateContent"},
            OPTIONS,
            {"model": "../../../app/v1/x"},
            409,
            "climbs out of route 'default'",
        ),
    ],
)
def test_replay_refusals(cap, options, changes, status, text):
    with pytest.raises(replay.ReplayError) as err:
        replay.build(_capture(**cap), options, changes)
    assert err.value.status == status and text in str(err.value)


# --- security helpers and settings ---------------------------------------------------------------


def test_safe_next_and_secrets():
    assert security.safe_next("/stats?x=1") == "/stats?x=1"
    for bad in ("//evil", "https://evil/", "/\\evil", "javascript:x", "", None):
        assert security.safe_next(bad) == "/"
    assert security.same_secret("abc", "abc") and not security.same_secret("abc", "abd")
    assert security.session_value("t") != "t" and len(security.session_value("t")) == 64
    mw = security.SecurityMiddleware(None, "tok")  # type: ignore[arg-type]
    token = mw.new_csrf()
    assert mw.csrf_valid(token) and not mw.csrf_valid(token + "x") and not mw.csrf_valid("a.b")
    restarted = security.SecurityMiddleware(None, "tok")  # type: ignore[arg-type]
    assert restarted.csrf_valid(token)  # with a token the CSRF key survives a restart
    assert not security.SecurityMiddleware(None, None).csrf_valid(token)  # type: ignore[arg-type]


def test_settings_ui_token_and_upstream_keys():
    env = {"PROMPTTAP_UI_TOKEN": "from-env"}
    s = config.load({"upstream_keys": ["default=MY_KEY"]}, env)
    assert s.ui_token == "from-env" and s.upstream_keys == {"default": "MY_KEY"}
    assert "from-env" not in repr(s)
    assert config.load({"ui_token": "flag"}, env).ui_token == "flag"
    for host in ("127.0.0.1", "localhost", "[::1]", "127.1.2.3"):
        config.load({"ui": f"{host}:8788"}, {})
    for host in ("0.0.0.0", "192.168.1.5", "[::]", "example.com"):
        with pytest.raises(config.ConfigError, match="PROMPTTAP_UI_TOKEN"):
            config.load({"ui": f"{host}:8788"}, {})
        config.load({"ui": f"{host}:8788"}, env)
    config.load({"ui": "0.0.0.0:8788", "no_ui": True}, {})
    with pytest.raises(config.ConfigError, match="not defined"):
        config.load({"upstream_keys": ["app=X"]}, {})
    routes = config.load({"routes": ["app=http://x"], "upstream_keys": ["app=X"]}, {})
    assert routes.upstream_keys == {"app": "X"}


def test_inspector_options_resolve_keys_at_start_up():
    s = config.load({"listen": "0.0.0.0:9000", "upstream_keys": ["default=K"]}, {})
    opts = inspector_options(s, {"K": "secret-value", "LANGFUSE_HOST": "https://lf.example", "LANGFUSE_BASE_URL": ""})
    assert opts["proxy_url"] == "http://127.0.0.1:9000" and opts["upstream_keys"] == {"default": "secret-value"}
    assert opts["langfuse_url"] == "https://lf.example" and opts["ui_token"] is None
    assert inspector_options(config.load({"listen": "[::]:9000"}, {}), {})["proxy_url"] == "http://[::1]:9000"
    both = {"LANGFUSE_BASE_URL": "https://base.example", "LANGFUSE_HOST": "https://host.example"}
    assert inspector_options(config.load({}, {}), both)["langfuse_url"] == "https://base.example"
    with pytest.raises(StartupError, match="K is not set"):
        inspector_options(s, {})
    assert views.langfuse_trace_url({"langfuse_url": "https://lf.example/"}, "ab" * 16) == (
        "https://lf.example/trace/" + "ab" * 16
    )
