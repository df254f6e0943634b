"""The inspector's pages and their JSON twins, over captures recorded by a real prompttap
process (fake upstream, official SDKs), read back from its embedded ClickHouse."""

from __future__ import annotations

import base64
import math
import re
import time
import uuid
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.fake_upstream import FakeUpstream
from tests.harness import Prompttap, query_store

ORIGINAL_KEY = "sk-original-client-key-ORIG"
CONFIGURED_KEY = "sk-configured-replay-key-CONF"
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
    )
).decode()
SYSTEM = "You are the ACME support bot. Today is {date}. Be brief."


class Page(HTMLParser):
    """Elements by data-testid / id, and their text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text_by: dict[str, list[str]] = {}
        self._open: list[tuple[str, str]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        key = a.get("data-testid") or a.get("id")
        if tag not in ("input", "img", "br", "meta", "link") and key:
            self._open.append((tag, key))
            self.text_by.setdefault(key, []).append("")
        elif tag not in ("input", "img", "br", "meta", "link"):
            self._open.append((tag, ""))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i][0] == tag:
                del self._open[i:]
                break

    def handle_data(self, data: str) -> None:
        for _, key in self._open:
            if key:
                self.text_by[key][-1] += data

    def text(self, key: str) -> str:
        return "\n".join(self.text_by.get(key, []))

    def all(self, key: str) -> list[str]:
        return self.text_by.get(key, [])

    def attrs(self, tag: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag]


def get(pt: Prompttap, path: str, **params: Any) -> httpx.Response:
    r = httpx.get(pt.ui_url + path, params=params or None, timeout=30)  # params={} would drop path's query
    assert r.status_code == 200, (path, r.status_code, r.text[:500])
    return r


def api(pt: Prompttap, path: str, **params: Any) -> Any:
    return get(pt, "/api" + path, **params).json()


def by_marker(pt: Prompttap, marker: str) -> dict[str, Any]:
    """The (original, not replayed) capture whose last user message carries ``marker``."""
    items = api(pt, "/captures", q=marker, limit=50)["items"]
    items = [i for i in items if marker in i["last_user_message"] and not i["replay_of"]]
    assert len(items) == 1, (marker, items)
    return api(pt, f"/captures/{items[0]['id']}")


@pytest.fixture(scope="module")
def ui(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("inspector")
    env = {"PT_TEST_REPLAY_KEY": CONFIGURED_KEY}
    flags = ("--route", f"app={fake.base_url}/v1", "--upstream-key", "default=PT_TEST_REPLAY_KEY")
    with Prompttap(home, fake.base_url, *flags, env=env) as p:
        p.seeded = seed(p)  # type: ignore[attr-defined]
        yield p


def seed(pt: Prompttap) -> dict[str, Any]:
    """A conversation of three turns (one template), a tool round trip, images, a stream, an
    error, an Anthropic call through a route, and a tagged capture; returns what was sent."""
    oa = openai.OpenAI(base_url=f"{pt.url}/v1", api_key=ORIGINAL_KEY, max_retries=0)
    session = {"x-prompttap-session": "sess-conv", "x-prompttap-user": "ada", "x-prompttap-tags": "conv,demo"}
    history: list[dict[str, Any]] = []
    answers = []
    for turn, (day, question) in enumerate(
        [
            ("2026-11-23", "where is order 4411 turnone"),
            ("2026-11-24", "and when does it arrive turntwo"),
            ("2026-11-25", "thanks, cancel it turnthree"),
        ]
    ):
        if turn == 2:
            history = history[2:]  # the app's history window slides: the first exchange is dropped
        history.append({"role": "user", "content": question})
        reply = oa.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "system", "content": SYSTEM.format(date=day)}, *history],
            temperature=0.3,
            extra_headers=session,
        )
        answers.append(reply.choices[0].message.content)
        history.append({"role": "assistant", "content": reply.choices[0].message.content})

    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    first = oa.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "call tool please toolmarker"}], tools=tools
    )
    calls = first.choices[0].message.tool_calls
    oa.chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "user", "content": "call tool please toolmarker"},
            {"role": "assistant", "content": None, "tool_calls": [c.model_dump() for c in calls]},
            *({"role": "tool", "tool_call_id": c.id, "content": f"sunny in {c.id} toolresult"} for c in calls),
            {"role": "user", "content": "summarise toolfollowup"},
        ],
        tools=tools,
    )
    oa.chat.completions.create(
        model="gpt-4o",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is in these imagemarker"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                ],
            }
        ],
    )
    stream = oa.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "line one\nstreammarker after a newline"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-fake-chunk-delay-ms": "20"},
    )
    for _ in stream:
        pass
    with pytest.raises(openai.InternalServerError):
        oa.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "errormarker"}],
            extra_headers={"x-fake-status": "500"},
        )
    an = anthropic.Anthropic(base_url=f"{pt.url}/app", api_key="sk-ant-original-key-ANTH", max_retries=0)
    an.messages.create(
        model="claude-haiku-4-5",
        max_tokens=50,
        system="Be terse.",
        messages=[{"role": "user", "content": "routemarker"}],
    )
    oa.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "tagmarker"}],
        extra_headers={"x-prompttap-tags": "alpha,beta", "x-prompttap-user": "grace"},
    )
    total = 3 + 2 + 1 + 1 + 1 + 1 + 1
    pt.wait_captures(total)
    pt.drained()
    return {"total": total, "answers": answers, "until": datetime.now(UTC).isoformat()}


# --- captures list ---------------------------------------------------------------------------


def test_list_is_newest_first_with_the_list_columns(ui: Prompttap):
    items = api(ui, "/captures")["items"]
    assert len(items) >= ui.seeded["total"]
    times = [i["started_at"] for i in items]
    assert times == sorted(times, reverse=True)  # (ties break by id in ClickHouse's UUID order)
    tag = next(i for i in items if "tagmarker" in i["last_user_message"])
    assert tag["tags"] == ["alpha", "beta"] and tag["user_id"] == "grace"
    for key in (
        "route",
        "api",
        "model",
        "status_code",
        "outcome",
        "duration_ms",
        "ttft_ms",
        "input_tokens",
        "output_tokens",
        "cost_usd",
    ):
        assert key in tag
    page = Page(get(ui, "/").text)
    rows = page.all("capture-row")
    assert len(rows) == len(items[:50])
    assert "tagmarker" in page.text("captures-table")
    assert any(a.get("data-id") == tag["id"] for a in page.attrs("tr"))


@pytest.mark.parametrize(
    ("params", "marker"),
    [
        ({"route": "app"}, "routemarker"),
        ({"api": "anthropic.messages"}, "routemarker"),
        ({"outcome": "upstream_error"}, "errormarker"),
        ({"status": "500"}, "errormarker"),
        ({"tag": "alpha"}, "tagmarker"),
        ({"user": "grace"}, "tagmarker"),
    ],
)
def test_filters(ui: Prompttap, params: dict[str, str], marker: str):
    items = api(ui, "/captures", **params)["items"]
    # (The proxy currently records an upstream error twice, under two ids: count distinct markers.)
    assert items and {marker in i["last_user_message"] for i in items} == {True}
    page = Page(get(ui, "/", **params).text)
    assert len(page.all("capture-row")) == len(items) and marker in page.text("captures-table")


def test_session_thread_template_and_time_filters(ui: Prompttap):
    conv = api(ui, "/captures", session="sess-conv")["items"]
    assert len(conv) == 3
    assert len({c["thread_id"] for c in conv}) == 1
    assert len(api(ui, "/captures", thread=conv[0]["thread_id"])["items"]) == 3
    assert len({c["prompt_template_id"] for c in conv}) == 1
    assert len(api(ui, "/captures", template=conv[0]["prompt_template_id"])["items"]) == 3
    oldest, newest = conv[-1], conv[0]
    window = api(ui, "/captures", session="sess-conv", since=oldest["started_at"], until=newest["started_at"])
    assert [i["id"] for i in window["items"]] == [conv[1]["id"], oldest["id"]]
    assert api(ui, "/captures", since="1h")["items"] and not api(ui, "/captures", until="1h")["items"]
    assert httpx.get(f"{ui.ui_url}/api/captures", params={"since": "yesterday"}).status_code == 400


def test_keyset_pagination_walks_every_capture_once(ui: Prompttap):
    everything = [i["id"] for i in api(ui, "/captures", limit=1000)["items"]]
    seen, cursor, pages = [], None, 0
    while True:
        page = api(ui, "/captures", limit=3, **({"before": cursor} if cursor else {}))
        seen += [i["id"] for i in page["items"]]
        pages += 1
        cursor = page["next"]
        if not cursor:
            break
    assert seen == everything and pages >= 3
    second = api(ui, "/captures", limit=3, before=api(ui, "/captures", limit=3)["next"])
    back = api(ui, "/captures", limit=3, after=second["prev"])
    assert [i["id"] for i in back["items"]] == everything[:3]
    html = get(ui, "/", limit=3).text
    older = re.search(r'href="([^"]+)" data-testid="page-older"', html).group(1).replace("&amp;", "&")
    assert "before=" in older
    assert Page(get(ui, older).text).all("capture-row") and 'data-testid="page-newer"' in get(ui, older).text
    assert httpx.get(f"{ui.ui_url}/api/captures", params={"before": "garbage"}).status_code == 400


def test_full_text_search_over_prompts_and_outputs_uses_the_index(ui: Prompttap):
    assert len(api(ui, "/captures", q="STREAMMARKER")["items"]) == 1  # case-insensitive, after a newline
    assert len(api(ui, "/captures", q="streammarker newline")["items"]) == 1  # all words
    assert api(ui, "/captures", q="streammarker turnone")["items"] == []
    assert len(api(ui, "/captures", q="toolresult")["items"]) == 1  # a tool result in the history
    # Outputs: the fake answers "Echo: <question> 🦜你好"; no prompt of the stream capture has that suffix.
    assert len(api(ui, "/captures", q="streammarker 🦜你好")["items"]) == 1
    assert len(api(ui, "/captures", q="turntwo")["items"]) == 2  # its question is in turn 3's history too
    assert len(api(ui, "/captures", q="ACME")["items"]) == 3  # system prompts
    plan = api(ui, "/search/explain", q="streammarker")
    assert plan["uses_search_index"], plan["plan"]
    assert re.search(r"Name: idx_search", plan["plan"])
    page = Page(get(ui, "/", q="imagemarker").text)
    assert len(page.all("capture-row")) == 1


def test_live_tail_returns_captures_stored_since_the_cursor(ui: Prompttap):
    page = Page(get(ui, "/").text)
    table = next(a for a in page.attrs("table") if a.get("id") == "captures")
    cursor = table["data-tail"]
    assert cursor and table["data-tail-url"].startswith("/captures/rows")
    quiet = get(ui, "/captures/rows", tail=cursor)
    assert quiet.text.strip() == ""
    openai.OpenAI(base_url=f"{ui.url}/v1", api_key=ORIGINAL_KEY).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "tailmarker"}]
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = get(ui, "/captures/rows", tail=cursor)
        if "tailmarker" in r.text:
            break
        time.sleep(0.1)
    assert "tailmarker" in r.text and r.headers["x-tail"] > cursor
    assert len(Page(r.text).all("capture-row")) == 1
    assert get(ui, "/captures/rows", tail=r.headers["x-tail"]).text.strip() == ""
    assert api(ui, "/captures", tail=cursor)["items"][0]["last_user_message"] == "tailmarker"


# --- one capture -------------------------------------------------------------------------------


def test_capture_page_renders_the_conversation_and_side_panel(ui: Prompttap):
    cap = by_marker(ui, "turntwo")
    page = Page(get(ui, f"/captures/{cap['id']}").text)
    assert "Today is 2026-11-24" in page.text("system-prompt")
    roles = [a["data-role"] for t, a in page.tags if a.get("data-testid") == "message"]
    assert roles == ["user", "assistant", "user"]
    assert ui.seeded["answers"][0] in page.text("chat")
    assert "Echo: and when does it arrive turntwo" in page.text("answer-text")
    side = page.text("side-panel")
    assert "gpt-4o-mini" in page.text("side-model") and "200 ok" in page.text("side-outcome")
    assert '"temperature": 0.3' in page.text("params")
    assert "Bearer ...ORIG" in page.text("request-headers") and ORIGINAL_KEY not in side
    assert '"model": "gpt-4o-mini"' in page.text("raw-request")  # pretty JSON
    assert "copy-request" in page.text_by and "compare-form" in page.text_by
    links = {
        a.get("data-testid"): a.get("href") for a in page.attrs("a") if a.get("data-testid", "").startswith("link-")
    }
    previous = by_marker(ui, "turnone")
    assert links["link-thread"] == f"/threads/{cap['thread_id']}"
    assert links["link-template"] == f"/templates/{cap['prompt_template_id']}"
    assert links["link-previous"] == f"/captures/{previous['id']}"
    assert cap["links"]["previous_in_thread_id"] == previous["id"]
    assert cap["links"]["compare_candidates"] == f"/api/captures/{cap['id']}/compare-candidates"
    assert "link-langfuse" not in links  # Langfuse not configured
    form = next(a for a in page.attrs("form") if a.get("id") == "compare-form")
    assert form["action"] == "/diff" and form["data-candidates-url"].endswith("/compare-candidates")


def test_capture_page_tools_calls_results_and_pretty_arguments(ui: Prompttap):
    cap = by_marker(ui, "toolfollowup")
    html = get(ui, f"/captures/{cap['id']}").text
    page = Page(html)
    assert "get_weather" in page.text("tools") and '"city"' in page.text("tools")
    assert '{\n  "city": "city-0"\n}' in page.text("tool-arguments")  # indented, not one line
    assert "result of" in page.text("chat") and "toolresult" in page.text("chat")
    roles = [a["data-role"] for t, a in page.tags if a.get("data-testid") == "message"]
    assert roles == ["user", "assistant", "tool", "tool", "user"]
    first = by_marker(ui, "toolmarker")
    answer = Page(get(ui, f"/captures/{first['id']}").text)
    assert len(answer.all("answer-tool-call")) == 2 and "get_weather" in answer.text("answer")


def test_capture_page_images_are_thumbnails_only_when_safe(ui: Prompttap):
    cap = by_marker(ui, "imagemarker")
    page = Page(get(ui, f"/captures/{cap['id']}").text)
    srcs = [a["src"] for a in page.attrs("img")]
    assert srcs == [f"data:image/png;base64,{PNG}", "https://example.com/cat.png"]


def test_stream_timeline_and_timing(ui: Prompttap):
    cap = by_marker(ui, "streammarker")
    page = Page(get(ui, f"/captures/{cap['id']}").text)
    chunks = [a for t, a in page.tags if t == "rect" and a.get("class") == "chunk"]
    assert len(chunks) == len(cap["stream_timing"]) >= 5
    assert "ms" in page.text("side-ttft") and cap["ttft_ms"] is not None


def test_error_capture_shows_its_outcome(ui: Prompttap):
    cap = api(ui, "/captures", outcome="upstream_error")["items"][0]
    page = Page(get(ui, f"/captures/{cap['id']}").text)
    assert "500 upstream_error" in page.text("capture-status")


def test_unknown_capture_is_404(ui: Prompttap):
    assert httpx.get(f"{ui.ui_url}/captures/{uuid.uuid4()}").status_code == 404
    assert httpx.get(f"{ui.ui_url}/api/captures/{uuid.uuid4()}").status_code == 404
    assert httpx.get(f"{ui.ui_url}/api/captures/not-an-id").status_code == 400


# --- templates and threads -----------------------------------------------------------------


def test_templates_list_and_template_page_mark_the_variable_spans(ui: Prompttap):
    conv = by_marker(ui, "turnone")
    tpl = conv["prompt_template_id"]
    groups = {g["id"]: g for g in api(ui, "/templates")["items"]}
    group = groups[tpl]
    assert group["captures"] == 3 and group["routes"] == ["default"] and group["models"] == ["gpt-4o-mini"]
    assert group["first_seen"] <= group["last_seen"] and "{{date}}" in group["preview"]
    assert tpl in Page(get(ui, "/templates").text).text("templates-table")

    detail = api(ui, f"/templates/{tpl}")
    assert detail["masked"] == SYSTEM.format(date="{{date}}")
    assert [s.get("slot") for s in detail["segments"] if "slot" in s] == ["date#1"]
    values = sorted(m["values"]["date#1"][0] for m in detail["members"])
    assert values == ["2026-11-23", "2026-11-24", "2026-11-25"]
    assert detail["distinct_values"]["date#1"] == 3
    page = Page(get(ui, f"/templates/{tpl}").text)
    text = page.text("template-text")
    assert text.count("ACME support bot") == 1 and "{{date}}" in text
    marks = [a for t, a in page.tags if t == "mark" and "data-slot" in a]
    assert [m["data-slot"] for m in marks] == ["date#1"]
    assert all(v in page.text("template-members") for v in values)
    form = next(a for a in page.attrs("form") if a.get("id") == "template-diff-form")
    assert form["action"] == "/diff" and form["method"] == "get"
    radios = [a for a in page.attrs("input") if a.get("type") == "radio"]
    assert {r["name"] for r in radios} == {"a", "b"} and len(radios) == 6
    assert httpx.get(f"{ui.ui_url}/api/templates/tpl_nope").status_code == 404


def test_thread_page_shows_how_the_prompt_grew(ui: Prompttap):
    conv = by_marker(ui, "turnone")
    thread = api(ui, f"/threads/{conv['thread_id']}")
    turns = thread["turns"]
    assert next(t["id"] for t in turns) == conv["id"] and len(turns) == 3
    t1, t2, t3 = (t["changes"] for t in turns)
    assert t1["first"] and [m["role"] for m in t1["added"]] == ["user"]
    assert [m["role"] for m in t2["added"]] == ["assistant", "user"] and t2["kept"] == 1
    assert t2["answer_carried_over"] and not t2["dropped"] and t2["system_changed"]  # the date moved on
    # Turn 3: the window slid (first question and answer dropped) and the date in the system prompt changed.
    assert [m["role"] for m in t3["dropped"]] == ["user", "assistant"] and "turnone" in t3["dropped"][0]["text"]
    assert t3["system_changed"]
    assert {"op": "insert", "text": "2026-11-25."} in t3["system_diff"]
    page = Page(get(ui, f"/threads/{conv['thread_id']}").text)
    assert len(page.all("turn")) == 3
    assert "dropped 2" in page.all("turn-summary")[1] and "system prompt changed" in page.all("turn-summary")[1]
    assert "turnone" in page.text("change-dropped")
    assert "2026-11-25." in page.text("system-diff")
    assert httpx.get(f"{ui.ui_url}/api/threads/thr_nope").status_code == 404


# --- stats -------------------------------------------------------------------------------------


def _exact_quantile(values: list[float], level: float) -> float:
    ordered = sorted(values)
    return ordered[min(math.floor(level * len(ordered)), len(ordered) - 1)]


def test_stats_numbers_match_the_captures(ui: Prompttap):
    until = ui.seeded["until"]
    caps = api(ui, "/captures", limit=1000, until=until)["items"]
    s = api(ui, "/stats", until=until)
    assert s["requests"] == len(caps) >= ui.seeded["total"]
    errors = [c for c in caps if c["outcome"] != "ok"]
    assert s["errors"] == len(errors) >= 1
    assert s["error_rate"] == pytest.approx(len(errors) / len(caps))
    durations = [c["duration_ms"] for c in caps]
    assert s["latency_ms"]["p50"] == pytest.approx(_exact_quantile(durations, 0.5))
    assert s["latency_ms"]["p95"] == pytest.approx(_exact_quantile(durations, 0.95))
    ttfts = [c["ttft_ms"] for c in caps if c["ttft_ms"] is not None]
    assert s["ttft_ms"]["p50"] == pytest.approx(_exact_quantile(ttfts, 0.5))
    assert s["input_tokens"] == sum(c["input_tokens"] or 0 for c in caps)
    assert s["output_tokens"] == sum(c["output_tokens"] or 0 for c in caps)
    assert s["cost_usd"] == pytest.approx(sum(c["cost_usd"] or 0 for c in caps))
    by_model = {r["name"]: r for r in s["by_model"]}
    for model in {c["model"] for c in caps}:
        mine = [c for c in caps if c["model"] == model]
        assert by_model[model]["requests"] == len(mine)
        assert by_model[model]["input_tokens"] == sum(c["input_tokens"] or 0 for c in mine)
        assert by_model[model]["cost_usd"] == pytest.approx(sum(c["cost_usd"] or 0 for c in mine))
    by_route = {r["name"]: r["requests"] for r in s["by_route"]}
    assert by_route == {"default": len(caps) - 1, "app": 1}
    assert sum(p["requests"] for p in s["over_time"]) == len(caps)
    assert sum(p["errors"] for p in s["over_time"]) == len(errors)
    page = Page(get(ui, "/stats", until=until).text)
    assert page.text("total-requests") == str(len(caps))
    for chart in ("chart-requests", "chart-latency", "chart-errors", "chart-tokens-model", "chart-cost-model"):
        assert chart in page.text_by
    bars = [a for t, a in page.tags if t == "rect" and a.get("class") in ("bar", "bar-err")]
    assert bars and all(float(b["height"]) > 0 for b in bars)
    assert api(ui, "/stats", route="app")["requests"] == 1


def test_every_page_has_a_documented_json_twin(ui: Prompttap):
    spec = get(ui, "/openapi.json").json()
    for path in (
        "/api/captures",
        "/api/captures/{capture_id}",
        "/api/templates",
        "/api/templates/{template_id}",
        "/api/threads/{thread_id}",
        "/api/stats",
        "/api/captures/{capture_id}/replay",
        "/api/captures/{capture_id}/delete",
    ):
        assert path in spec["paths"], path
    assert "delete" in spec["paths"]["/api/captures/{capture_id}"]
    params = {p["name"] for p in spec["paths"]["/api/captures"]["get"]["parameters"]}
    assert {"q", "since", "until", "template", "user", "tag", "before", "after", "tail"} <= params
    assert "/" not in spec["paths"] and "/stats" not in spec["paths"]  # pages stay out of the API docs
    assert "swagger-ui" in get(ui, "/docs").text


# --- replay ------------------------------------------------------------------------------------


def _fake_saw(fake: FakeUpstream, marker: str) -> list[Any]:
    return [r for r in fake.requests if marker.encode() in r.body]


def test_replay_uses_the_configured_key_and_links_back(ui: Prompttap, fake: FakeUpstream):
    orig = by_marker(ui, "turntwo")
    before = len(_fake_saw(fake, "turntwo"))
    r = httpx.post(
        f"{ui.ui_url}/api/captures/{orig['id']}/replay", json={"model": "gpt-4o", "temperature": 0.9}, timeout=60
    )
    assert r.status_code == 200, r.text
    result = r.json()
    seen = _fake_saw(fake, "turntwo")[before:]
    assert len(seen) == 1
    up = seen[0]
    assert up.header("authorization") == f"Bearer {CONFIGURED_KEY}"
    assert ORIGINAL_KEY not in str(up.headers)
    assert up.json()["model"] == "gpt-4o" and up.json()["temperature"] == 0.9
    assert up.json()["messages"] == orig["request"]["messages"]  # the rest is the captured request
    new = api(ui, f"/captures/{result['id']}")
    assert new["replay_of"] == orig["id"] and "replay" in new["tags"]
    assert new["model"] == "gpt-4o" and new["request_headers"]["authorization"] == "Bearer ...CONF"
    assert result["diff_url"] == f"/diff?a={orig['id']}&b={result['id']}"
    assert api(ui, f"/captures/{orig['id']}")["links"]["replays"] == [result["id"]]
    assert api(ui, f"/captures/{orig['id']}/replays")["items"][0]["id"] == result["id"]
    page = Page(get(ui, f"/captures/{result['id']}").text)
    assert orig["id"] in page.text("replay-of")


def test_replay_unchanged_sends_the_captured_bytes_and_can_change_the_system_prompt(ui: Prompttap, fake: FakeUpstream):
    orig = by_marker(ui, "turnone")
    r = httpx.post(f"{ui.ui_url}/api/captures/{orig['id']}/replay", timeout=60)
    assert r.status_code == 200, r.text
    assert fake.requests[-1].body == orig["request_body"].encode()
    r = httpx.post(
        f"{ui.ui_url}/api/captures/{orig['id']}/replay", json={"system_prompt": "Answer in French."}, timeout=60
    )
    assert r.status_code == 200, r.text
    sent = fake.requests[-1].json()["messages"]
    assert sent[0] == {"role": "system", "content": "Answer in French."} and sent[1:] == orig["request"]["messages"][1:]
    assert api(ui, f"/captures/{r.json()['id']}")["system_prompt"] == "Answer in French."


def test_replay_through_the_html_form_opens_the_diff(ui: Prompttap, fake: FakeUpstream):
    orig = by_marker(ui, "tagmarker")
    with httpx.Client(base_url=ui.ui_url, timeout=60) as client:
        page = Page(client.get(f"/captures/{orig['id']}").text)
        form = next(a for a in page.attrs("form") if a.get("id") == "replay-form")
        token = next(a["value"] for a in page.attrs("input") if a.get("name") == "csrf_token")
        r = client.post(
            form["action"],
            data={"csrf_token": token, "model": "gpt-4o", "temperature": ""},
            headers={"origin": ui.ui_url},
        )
    assert r.status_code == 303, r.text
    assert r.headers["location"].startswith(f"/diff?a={orig['id']}&b=")
    assert fake.requests[-1].header("authorization") == f"Bearer {CONFIGURED_KEY}"


def test_replay_without_a_key_for_the_route_says_how_to_set_one(ui: Prompttap, fake: FakeUpstream):
    orig = by_marker(ui, "routemarker")  # route "app" has no --upstream-key
    count = len(fake.requests)
    r = httpx.post(f"{ui.ui_url}/api/captures/{orig['id']}/replay", json={}, timeout=30)
    assert r.status_code == 409 and "--upstream-key app=ENV_VAR" in r.json()["detail"]
    assert len(fake.requests) == count
    page = Page(get(ui, f"/captures/{orig['id']}").text)
    assert "--upstream-key app=ENV_VAR" in page.text("replay-unavailable")
    assert "replay-form" not in page.text_by
    bad = by_marker(ui, "turnone")
    r = httpx.post(f"{ui.ui_url}/api/captures/{bad['id']}/replay", json={"temperature": 7}, timeout=30)
    assert r.status_code == 400 and "between 0 and 2" in r.json()["detail"]
    r = httpx.post(f"{ui.ui_url}/api/captures/{bad['id']}/replay", json={"stream": True}, timeout=30)
    assert r.status_code == 400


def test_replay_through_a_route_with_anthropic_headers(fake: FakeUpstream, make_pt):
    pt = make_pt(
        "--route",
        f"app={fake.base_url}/v1",
        "--upstream-key",
        "app=PT_TEST_ANTH_KEY",
        env={"PT_TEST_ANTH_KEY": "sk-ant-configured-AAAA", "LANGFUSE_HOST": "https://langfuse.example"},
    )
    an = anthropic.Anthropic(base_url=f"{pt.url}/app", api_key="sk-ant-original-BBBB", max_retries=0)
    an.messages.create(model="claude-haiku-4-5", max_tokens=20, messages=[{"role": "user", "content": "anthmarker"}])
    cap = pt.wait_captures(1)[0]
    r = httpx.post(f"{pt.ui_url}/api/captures/{cap['id']}/replay", json={"system_prompt": "Be kind."}, timeout=60)
    assert r.status_code == 200, r.text
    up = fake.requests[-1]
    assert up.path == "/v1/messages"
    assert up.header("x-api-key") == "sk-ant-configured-AAAA" or up.header("authorization") == (
        "Bearer sk-ant-configured-AAAA"
    )
    assert "BBBB" not in str(up.headers)
    assert up.header("anthropic-version") and up.json()["system"] == "Be kind."
    new = pt.capture(r.json()["id"])
    assert new["route"] == "app" and new["replay_of"] == cap["id"]
    # With Langfuse configured, the capture links to its trace there.
    page = Page(get(pt, f"/captures/{cap['id']}").text)
    trace = pt.capture(cap["id"])["trace_id"]
    link = next(a["href"] for a in page.attrs("a") if a.get("data-testid") == "link-langfuse")
    assert link == f"https://langfuse.example/trace/{trace}" and len(trace) == 32
    assert f"trace {trace}" in page.text("links")


# --- delete ------------------------------------------------------------------------------------


def test_delete_removes_the_capture_and_its_span(fake: FakeUpstream, make_pt):
    pt = make_pt()
    client = openai.OpenAI(base_url=f"{pt.url}/v1", api_key=ORIGINAL_KEY)
    for word in ("keepme", "deleteme", "deleteapi"):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": word}])
    pt.wait_captures(3)
    pt.drained()
    victim = by_marker(pt, "deleteme")
    other = by_marker(pt, "deleteapi")
    keep = by_marker(pt, "keepme")
    with httpx.Client(base_url=pt.ui_url, timeout=30) as ui:
        page = Page(ui.get(f"/captures/{victim['id']}").text)
        token = next(a["value"] for a in page.attrs("input") if a.get("name") == "csrf_token")
        r = ui.post(f"/captures/{victim['id']}/delete", data={"csrf_token": token}, headers={"origin": pt.ui_url})
        assert r.status_code == 303 and r.headers["location"].startswith("/?deleted=")
        assert ui.get(f"/api/captures/{victim['id']}").status_code == 404
        assert ui.get(f"/captures/{victim['id']}").status_code == 404
        # Calls that look like a browser's (Origin) need the token; a cookie jar alone carries no credential.
        assert ui.delete(f"/api/captures/{other['id']}", headers={"origin": pt.ui_url}).status_code == 403
        csrf = {"x-csrf-token": token}
        assert ui.delete(f"/api/captures/{victim['id']}", headers=csrf).status_code == 404
        assert ui.delete(f"/api/captures/{other['id']}", headers=csrf).json()["deleted"] == other["id"]
        assert api(pt, "/captures", q="deleteme")["items"] == []
        assert [i["id"] for i in api(pt, "/captures")["items"]] == [keep["id"]]
    pt.stop()
    spans = [s[0] for s in query_store(pt.home, "SELECT SpanId FROM otel_traces")]
    assert keep["span_id"] in spans
    assert victim["span_id"] not in spans and other["span_id"] not in spans
    assert query_store(pt.home, "SELECT count() FROM captures")[0][0] == 1
