"""The inspector in a real browser: headless Chromium (Debian's, driven by Playwright's sync API)
against a real ``prompttap serve`` whose store was filled through the proxy by the OpenAI and
Anthropic SDKs (fake upstream), XSS corpus included.

Every page visited is checked for script injection (``window.__xss`` trapped by an init script),
console errors, uncaught exceptions and CSP violations, and screenshotted to ``tests/artifacts/browser/``.
"""

from __future__ import annotations

import base64
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.fake_upstream import FakeUpstream
from tests.harness import ROOT, Prompttap

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "tests" / "artifacts" / "browser"
CLIENT_KEY = "sk-browser-client-key-CLNT"
REPLAY_KEY = "sk-browser-replay-key-RPLY"
TIMEOUT_MS = 15_000

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium")

PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
    )
).decode()
# Each payload sets window.__xss if a page ever lets it run; the init script traps that assignment.
XSS_SCRIPT = "<script>window.__xss=1</script>"
XSS_IMG = '<img src=x onerror="window.__xss=1">'
XSS_LINK = '<a href="javascript:window.__xss=1">open me</a> [md](javascript:window.__xss=1)'
XSS_SVG = "<svg onload=window.__xss=1>"
XSS_ALL = " ".join((XSS_SCRIPT, XSS_IMG, XSS_LINK, XSS_SVG))
SVG_URL = (
    "data:image/svg+xml;base64,"
    + base64.b64encode(
        b'<svg xmlns="http://www.w3.org/2000/svg" onload="window.__xss=1"><script>window.__xss=1</script></svg>'
    ).decode()
)
JS_URL = "javascript:window.__xss=1"

# A RAG prompt (AnythingLLM-style context blocks) long enough that the capture page folds it.
RAG_SYSTEM = (
    "You are the ACME support assistant. Answer from the context below only; when the answer is not "
    "there, say that you do not know and offer to open a ticket. "
    + "Keep answers short, friendly and factual; never invent order numbers, prices or delivery dates. " * 6
    + "\nContext:\n[CONTEXT 0]:\n{c0}\n[END CONTEXT 0]\n[CONTEXT 1]:\n{c1}\n[END CONTEXT 1]\nAnswer in English."
)
RAG_TURNS = [
    ("Orders ship from the Berlin warehouse.", "Parcels take 3 days.", "where is order 4411 browserturnone"),
    ("Refunds take 14 days.", "Cancelling is free before shipping.", "when will it arrive browserturntwo"),
    ("Cancelled orders are refunded to the card.", XSS_SCRIPT, "please cancel it browserturnthree"),
]

# Reports script injection (any assignment to window.__xss, even if undone) and CSP violations.
INIT_SCRIPT = """
(() => {
  let value;
  Object.defineProperty(window, "__xss", {
    configurable: false,
    get() { return value; },
    set(v) { value = v; window.__ptReport("xss", location.href); },
  });
  document.addEventListener("securitypolicyviolation", (e) => {
    window.__ptReport("csp", e.violatedDirective + " blocked " + e.blockedURI + " at " + location.href);
  });
})();
"""


# --- the store, filled through the proxy ---------------------------------------------------------


def _seed(pt: Prompttap) -> dict[str, Any]:
    oa = openai.OpenAI(base_url=f"{pt.url}/v1", api_key=CLIENT_KEY, max_retries=0)
    sent = 0

    # 1. A three-turn RAG conversation: one session (thread), one template, changing context.
    history: list[dict[str, Any]] = []
    for c0, c1, question in RAG_TURNS:
        history.append({"role": "user", "content": question})
        reply = oa.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "system", "content": RAG_SYSTEM.format(c0=c0, c1=c1)}, *history],
            temperature=0.2,
            extra_headers={"x-prompttap-session": "browser-conv", "x-prompttap-user": "ada"},
        )
        history.append({"role": "assistant", "content": reply.choices[0].message.content})
        sent += 1

    # 2. Tool calling, with a PNG data URL in the prompt: the model calls the tool, then answers.
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
    ask = {
        "role": "user",
        "content": [
            {"type": "text", "text": "call tool please for the city in this picture browserimage"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        ],
    }
    first = oa.chat.completions.create(model="gpt-4o", messages=[ask], tools=tools)
    calls = first.choices[0].message.tool_calls
    oa.chat.completions.create(
        model="gpt-4o",
        messages=[
            ask,
            {"role": "assistant", "content": None, "tool_calls": [c.model_dump() for c in calls]},
            *({"role": "tool", "tool_call_id": c.id, "content": f"sunny, 21 C ({c.id})"} for c in calls),
            {"role": "user", "content": "summarise the weather browsertoolfollowup"},
        ],
        tools=tools,
    )
    sent += 2

    # 3. A streamed answer.
    stream = oa.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "tell me a story browserstream"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-fake-chunk-delay-ms": "10"},
    )
    for _ in stream:
        pass
    sent += 1

    # 4. A failed request.
    with pytest.raises(openai.InternalServerError):
        oa.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "this one fails browsererror"}],
            extra_headers={"x-fake-status": "500"},
        )
    sent += 1

    # 5. Anthropic through a route, and the XSS corpus everywhere a captured value is shown:
    # prompt, system prompt, output (the fake echoes the prompt), model name, labels, headers,
    # tool arguments (the fake picks enum values) and image URLs.
    an = anthropic.Anthropic(base_url=f"{pt.url}/app", api_key="sk-ant-browser-ANTH", max_retries=0)
    an.messages.create(
        model="claude-haiku-4-5",
        max_tokens=200,
        system=f"Be terse. {XSS_ALL}",
        messages=[{"role": "user", "content": f"anthropic browserroute {XSS_ALL}"}],
    )
    evil_headers = {
        "x-prompttap-tags": f"{XSS_SCRIPT},xss",
        "x-prompttap-user": XSS_IMG,
        "x-prompttap-session": XSS_SVG,
        "x-evil": XSS_ALL,
    }
    oa.chat.completions.create(
        model=XSS_SVG,
        messages=[
            {"role": "system", "content": f"System {XSS_ALL}"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_xss", "type": "function", "function": {"name": XSS_IMG, "arguments": XSS_ALL}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_xss", "content": XSS_ALL},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": f"browserxss {XSS_ALL}"},
                    {"type": "image_url", "image_url": {"url": JS_URL}},
                    {"type": "image_url", "image_url": {"url": SVG_URL}},
                ],
            },
        ],
        extra_headers=evil_headers,
    )
    evil_tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": XSS_ALL,
            "parameters": {"type": "object", "properties": {"q": {"type": "string", "enum": [XSS_ALL]}}},
        },
    }
    oa.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "call tool please browserenumtool"}],
        tools=[evil_tool],
        extra_headers=evil_headers,
    )
    oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "browserdeleteme"}])
    sent += 4
    pt.wait_captures(sent)
    pt.drained()
    return {"sent": sent}


@pytest.fixture(scope="module")
def tap(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prompttap]:
    home = tmp_path_factory.mktemp("browser")
    flags = ("--route", f"app={fake.base_url}/v1", "--upstream-key", "default=PT_BROWSER_REPLAY_KEY")
    with Prompttap(home, fake.base_url, *flags, env={"PT_BROWSER_REPLAY_KEY": REPLAY_KEY}) as p:
        p.seeded = _seed(p)  # type: ignore[attr-defined]
        yield p


def api(pt: Prompttap, path: str, **params: Any) -> Any:
    r = httpx.get(f"{pt.ui_url}/api{path}", params=params or None, timeout=30)
    r.raise_for_status()
    return r.json()


def by_marker(pt: Prompttap, marker: str) -> dict[str, Any]:
    items = [i for i in api(pt, "/captures", q=marker, limit=50)["items"] if marker in i["last_user_message"]]
    items = [i for i in items if not i["replay_of"]]
    assert len(items) == 1, (marker, items)
    return items[0]


# --- the browser ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    with sync_api.sync_playwright() as pw:
        # Playwright gives each launch a fresh temporary profile (user data dir) of its own.
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


class Web:
    """One browser tab with everything that would show a problem recorded."""

    def __init__(self, browser: Any, base_url: str, init_script: str = "") -> None:
        self.base_url = base_url
        self.problems: list[str] = []
        self.context = browser.new_context(base_url=base_url, viewport={"width": 1400, "height": 900})
        self.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base_url)
        self.context.expose_binding(
            "__ptReport", lambda _source, kind, detail: self.problems.append(f"{kind}: {detail}")
        )
        self.context.add_init_script(INIT_SCRIPT + init_script)
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.problems.append(f"pageerror: {exc}"))

    def _console(self, message: Any) -> None:
        url = message.location.get("url") or ""
        if message.type in ("error", "assert"):
            self.problems.append(f"console.{message.type}: {message.text} ({url})")

    def visit(self, path: str, shot: str | None = None) -> Any:
        response = self.page.goto(path)
        assert response is not None and response.status == 200, (path, response and response.status)
        self.check(shot)
        return self.page

    def check(self, shot: str | None = None) -> None:
        """Nothing ran that should not have; the page is saved as an artifact."""
        self.page.wait_for_load_state("load")
        assert self.page.evaluate("typeof window.__xss") == "undefined", self.page.url
        assert not self.problems, self.problems
        if shot:
            self.page.screenshot(path=str(ARTIFACTS / f"{shot}.png"), full_page=True)

    def rows(self) -> Any:
        return self.page.locator('#capture-rows tr[data-testid="capture-row"]')

    def row_ids(self) -> list[str]:
        return self.rows().evaluate_all("rows => rows.map(r => r.dataset.id)")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def web(browser: Any, tap: Prompttap) -> Iterator[Web]:
    w = Web(browser, tap.ui_url)
    yield w
    try:
        w.check()
    finally:
        w.close()


# --- tests ---------------------------------------------------------------------------------------


def test_captures_list_filters_and_search(web: Web, tap: Prompttap):
    page = web.visit("/", "captures")
    everything = api(tap, "/captures")["items"]
    assert web.row_ids() == [i["id"] for i in everything]
    # The XSS corpus is shown as text (and the check above saw that it did not run).
    xss_row = web.rows().filter(has_text="browserxss")
    expect(xss_row).to_have_count(1)
    expect(xss_row.locator('[data-testid="last-user"]')).to_contain_text(XSS_SCRIPT)
    expect(xss_row.locator("td.model")).to_have_text(XSS_SVG)

    # Route picker.
    page.select_option("#f-route", "app")
    page.click('[data-testid="apply-filters"]')
    page.wait_for_url(re.compile(r"route=app"))
    web.check("captures-route-app")
    expect(web.rows()).to_have_count(1)
    expect(web.rows().first).to_contain_text("browserroute")
    expect(web.rows().first.locator("td.api")).to_have_text("anthropic.messages")

    # Outcome picker (route back to any).
    page.select_option("#f-route", "")
    page.select_option("#f-outcome", "upstream_error")
    page.click('[data-testid="apply-filters"]')
    page.wait_for_url(re.compile(r"outcome=upstream_error"))
    web.check()
    errors = api(tap, "/captures", outcome="upstream_error")["items"]
    assert errors and web.row_ids() == [i["id"] for i in errors]
    for text in web.rows().locator('[data-testid="last-user"]').all_inner_texts():
        assert "browsererror" in text
    expect(web.rows().first.locator(".outcome")).to_have_text("upstream_error")

    # Model picker, including the XSS model name offered as an option.
    page.select_option("#f-outcome", "")
    assert XSS_SVG in page.locator("#f-model option").all_inner_texts()
    page.select_option("#f-model", "gpt-4o")
    page.click('[data-testid="apply-filters"]')
    page.wait_for_url(re.compile(r"model=gpt-4o(&|$)"))
    web.check()
    models = set(web.rows().locator("td.model").all_inner_texts())
    assert models == {"gpt-4o"} and web.rows().count() == len(api(tap, "/captures", model="gpt-4o")["items"])

    # Full-text search box (all words, prompts and outputs), alone and with a picker.
    page.goto("/")
    page.fill("#f-q", "BrowserTurnTwo")
    page.press("#f-q", "Enter")
    page.wait_for_url(re.compile(r"q=BrowserTurnTwo"))
    web.check("captures-search")
    expect(web.rows()).to_have_count(2)  # turn two, and turn three whose history repeats it
    expect(page.locator("#f-q")).to_have_value("BrowserTurnTwo")
    page.fill("#f-q", "browserturnone")
    page.select_option("#f-route", "app")
    page.click('[data-testid="apply-filters"]')
    page.wait_for_url(re.compile(r"route=app"))
    web.check()
    expect(web.rows()).to_have_count(0)
    expect(page.locator('[data-testid="no-captures"]')).to_be_visible()
    page.fill("#f-q", "sunny")  # a tool result, in the history of the follow-up
    page.select_option("#f-route", "")
    page.click('[data-testid="apply-filters"]')
    page.wait_for_url(re.compile(r"q=sunny"))
    expect(web.rows()).to_have_count(1)
    expect(web.rows().first).to_contain_text("browsertoolfollowup")


def test_capture_page_system_prompt_copy_image_and_tools(web: Web, tap: Prompttap):
    turn3 = by_marker(tap, "browserturnthree")
    page = web.visit(f"/captures/{turn3['id']}", "capture-rag")
    # The long RAG system prompt starts folded; a click unfolds it.
    system = page.locator('[data-testid="system-prompt"]')
    body = system.locator("pre.text")
    expect(body).to_be_hidden()
    system.locator("summary").click()
    expect(body).to_be_visible()
    expect(body).to_contain_text("Cancelled orders are refunded to the card.")
    expect(body).to_contain_text(XSS_SCRIPT)  # retrieved context carrying markup is text too
    roles = page.locator('[data-testid="message"]').evaluate_all("ms => ms.map(m => m.dataset.role)")
    assert roles == ["user", "assistant", "user", "assistant", "user"]
    expect(page.locator('[data-testid="answer-text"]')).to_contain_text("Echo: please cancel it browserturnthree")
    web.check("capture-rag-unfolded")

    # Copy: the button copies the raw request, says so, and nothing errors.
    page.locator("#raw-request-box summary").click()
    button = page.locator('[data-testid="copy-request"]')
    button.click()
    expect(button).to_have_text("Copied")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == page.locator("#raw-request").text_content()
    assert '"browser-conv"' not in copied and "please cancel it browserturnthree" in copied
    expect(button).to_have_text("Copy", timeout=5000)
    web.check()

    # The tool exchange with an image: the PNG thumbnail loads; the tool calls are pretty JSON.
    image = by_marker(tap, "browserimage")
    page = web.visit(f"/captures/{image['id']}", "capture-tool-image")
    thumb = page.locator('[data-testid="image-thumb"]')
    expect(thumb).to_have_count(1)
    assert thumb.evaluate("img => img.complete && img.naturalWidth") == 1
    calls = page.locator('[data-testid="answer-tool-call"]')
    expect(calls).to_have_count(2)
    expect(calls.first.locator(".tool-name")).to_have_text("get_weather")
    page.locator('[data-testid="tools"] summary').click()
    expect(page.locator('[data-testid="tool-def"]')).to_contain_text("Weather for a city")

    # The streamed answer draws its chunk timeline; the failed request shows its outcome.
    stream = by_marker(tap, "browserstream")
    page = web.visit(f"/captures/{stream['id']}", "capture-stream")
    expect(page.locator('[data-testid="stream-timeline"] rect.chunk').first).to_be_visible()
    error = api(tap, "/captures", outcome="upstream_error")["items"][0]
    page = web.visit(f"/captures/{error['id']}", "capture-error")
    expect(page.locator('[data-testid="capture-status"]')).to_have_text("500 upstream_error")


def test_copy_without_the_clipboard_api(browser: Any, tap: Prompttap):
    """http://host:8788 is not a secure context: no navigator.clipboard, so the button falls back."""
    w = Web(browser, tap.ui_url, "Object.defineProperty(Navigator.prototype, 'clipboard', {get: () => undefined});")
    try:
        page = w.visit(f"/captures/{by_marker(tap, 'browserstream')['id']}")
        assert page.evaluate("navigator.clipboard === undefined")
        page.locator("#raw-response-box summary").click()
        button = page.locator('[data-testid="copy-response"]')
        button.click()
        expect(button).to_have_text("Copied")
        expect(button).to_have_text("Copy", timeout=5000)
        w.check()
    finally:
        w.close()


def test_the_checks_see_an_injection(browser: Any, tap: Prompttap):
    """The XSS and CSP assertions are not vacuous: markup that did get in would be reported."""
    w = Web(browser, tap.ui_url)
    try:
        w.visit("/stats")
        w.page.evaluate(
            """() => {
              const s = document.createElement("script"); s.textContent = "window.__xss = 1"; document.body.append(s);
              document.body.insertAdjacentHTML("beforeend", '<img src="data:," onerror="window.__xss = 1">');
            }"""
        )
        w.page.wait_for_timeout(300)
        assert w.page.evaluate("typeof window.__xss") == "undefined"  # CSP stopped both...
        assert sum(p.startswith("csp: script-src") for p in w.problems) == 2, w.problems  # ...and said so
        assert any("Content Security Policy" in p for p in w.problems if p.startswith("console.error"))
        w.page.evaluate("window.__xss = 1")  # what a script that got past CSP would do
        assert any(p.startswith("xss: ") for p in w.problems)
        with pytest.raises(AssertionError):
            w.check()
    finally:
        w.close()


def test_xss_corpus_is_text_on_every_page(web: Web, tap: Prompttap):
    xss = by_marker(tap, "browserxss")
    page = web.visit(f"/captures/{xss['id']}", "capture-xss")
    expect(page.locator('[data-testid="capture-model"]')).to_have_text(XSS_SVG)
    expect(page.locator('[data-testid="system-prompt"] pre')).to_contain_text(XSS_IMG)
    # Unsafe image URLs are shown as text, never loaded.
    as_text = page.locator('[data-testid="image-as-text"]')
    expect(as_text).to_have_count(2)
    expect(as_text.nth(0)).to_contain_text(JS_URL)
    expect(as_text.nth(1)).to_contain_text("data:image/svg+xml;base64,")
    expect(page.locator('[data-testid="image-thumb"]')).to_have_count(0)
    expect(page.locator('[data-testid="tool-arguments"]').first).to_contain_text(XSS_SCRIPT)
    page.locator("#request-headers summary").click()
    expect(page.locator('[data-testid="request-headers"]')).to_contain_text(XSS_IMG)
    expect(page.locator('[data-testid="answer-text"]')).to_contain_text(f"Echo: browserxss {XSS_SCRIPT}")
    # No element came out of captured text: the chat holds no script, image or link of its own.
    injected = "#chat script, #chat svg, #chat a[href^='javascript'], #chat [onerror], #chat [onload]"
    assert page.locator(injected).count() == 0
    assert page.locator("#side-panel a[href^='javascript']").count() == 0

    tool = by_marker(tap, "browserenumtool")
    page = web.visit(f"/captures/{tool['id']}", "capture-xss-tool")
    expect(page.locator('[data-testid="answer-tool-call"]').first.locator("pre")).to_contain_text(XSS_SVG)
    for path, shot in (
        (f"/threads/{xss['thread_id']}", "thread-xss"),
        (f"/?tag={XSS_SCRIPT}", "captures-xss-tag"),
        (f"/?user={XSS_IMG}&q=browserxss", None),
        (f"/templates/{xss['prompt_template_id']}", "template-xss"),
        (f"/diff?a={tool['id']}&b={xss['id']}", "diff-xss"),
    ):
        web.visit(path, shot)
    expect(web.page.locator(".verdict")).to_be_visible()


def test_thread_templates_and_stats_pages(web: Web, tap: Prompttap):
    turn3 = by_marker(tap, "browserturnthree")
    page = web.visit(f"/threads/{turn3['thread_id']}", "thread")
    turns = page.locator('[data-testid="turn"]')
    expect(turns).to_have_count(3)
    expect(turns.nth(2).locator('[data-testid="turn-summary"]')).to_contain_text("added 2")
    expect(turns.nth(1).locator('[data-testid="turn-summary"]')).to_contain_text("system prompt changed")
    turns.nth(1).locator('[data-testid="system-diff"] summary').click()
    expect(turns.nth(1).locator('[data-testid="system-diff"] ins').first).to_be_visible()

    page = web.visit("/templates", "templates")
    row = page.locator(f'[data-testid="template-row"][data-id="{turn3["prompt_template_id"]}"]')
    expect(row.locator("td.preview")).to_contain_text("You are the ACME support assistant.")
    expect(row.locator("td.num").first).to_have_text("3")
    row.locator('[data-testid="template-link"]').click()
    page.wait_for_url(f"**/templates/{turn3['prompt_template_id']}")
    web.check("template")
    expect(page.locator("#template-text mark.var")).to_have_count(1)
    expect(page.locator('[data-testid="template-member"]')).to_have_count(3)
    expect(page.locator("#template-members")).to_contain_text("Refunds take 14 days.")
    page.click('[data-testid="template-diff-submit"]')  # newest two members are preselected
    page.wait_for_url(re.compile(r"/diff\?.*a=.*b=|/diff\?.*b=.*a="))
    web.check("diff-template")
    expect(page.locator(".verdict .verdict-text")).to_be_visible()

    page = web.visit("/stats", "stats")
    stats = api(tap, "/stats")
    expect(page.locator('[data-testid="total-requests"]')).to_have_text(f"{stats['requests']:,}")
    for chart in ("chart-requests", "chart-latency", "chart-tokens-model", "chart-cost-route"):
        expect(page.locator(f'[data-testid="{chart}"]')).to_be_visible()
    expect(page.locator('[data-testid="by-route"] tr[data-name="app"]')).to_be_visible()
    page.select_option('#stats-filters select[name="route"]', "app")
    page.click('#stats-filters button[type="submit"]')
    page.wait_for_url(re.compile(r"route=app"))
    web.check()
    expect(page.locator('[data-testid="total-requests"]')).to_have_text("1")


def test_compare_picker_opens_the_diff(web: Web, tap: Prompttap):
    turn2, turn3 = by_marker(tap, "browserturntwo"), by_marker(tap, "browserturnthree")
    page = web.visit(f"/captures/{turn3['id']}")
    picker = page.locator('[data-testid="compare-picker"]')
    expect(picker).to_be_visible()
    expect(picker).to_be_enabled()
    option = picker.locator(f'option[value="{turn2["id"]}"]')
    expect(option).to_contain_text("thread")
    picker.select_option(turn2["id"])
    expect(page.locator('[data-testid="compare-id"]')).to_have_value(turn2["id"])
    web.check("capture-compare-picked")
    page.locator('#compare-form button[type="submit"]').click()
    page.wait_for_url(re.compile(r"/diff\?"))
    web.check("diff")
    assert page.url.endswith(f"/diff?a={turn2['id']}&b={turn3['id']}")  # older capture as A
    verdict = page.locator(".verdict .verdict-text")
    expect(verdict).to_be_visible()
    expect(verdict).to_contain_text("Context: 2 of 2 snippets replaced.")
    expect(verdict).not_to_contain_text("A is a later turn")
    expect(page.locator(".verdict .headline")).to_be_visible()


def test_live_tail_shows_a_new_capture_without_reload(web: Web, tap: Prompttap):
    page = web.visit("/")
    expect(page.locator('[data-testid="live-tail"]')).to_be_checked()
    page.evaluate("window.__sameDocument = true")
    before = web.rows().count()
    openai.OpenAI(base_url=f"{tap.url}/v1", api_key=CLIENT_KEY, max_retries=0).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "browsertailmarker arrives live"}]
    )
    row = web.rows().filter(has_text="browsertailmarker")
    expect(row).to_have_count(1, timeout=20_000)
    expect(row).to_have_class(re.compile(r"\bnew\b"))
    assert page.evaluate("window.__sameDocument") is True  # no reload
    assert web.rows().count() == before + 1
    assert web.row_ids()[0] == row.get_attribute("data-id")  # newest first
    web.check("captures-live-tail")


def test_replay_with_a_changed_temperature_lands_on_the_diff(web: Web, tap: Prompttap, fake: FakeUpstream):
    turn1 = by_marker(tap, "browserturnone")
    page = web.visit(f"/captures/{turn1['id']}")
    page.fill("#replay-temperature", "0.9")
    page.click('[data-testid="replay-submit"]')
    page.wait_for_url(re.compile(r"/diff\?a=.+&b=.+"), timeout=60_000)
    web.check("diff-replay")
    new_id = re.search(r"[?&]b=([0-9a-f-]{36})", page.url).group(1)
    assert f"a={turn1['id']}" in page.url
    new = api(tap, f"/captures/{new_id}")
    assert new["replay_of"] == turn1["id"] and new["params"]["temperature"] == 0.9
    assert fake.requests[-1].header("authorization") == f"Bearer {REPLAY_KEY}"
    expect(page.locator(".verdict .verdict-text")).to_be_visible()
    expect(page.locator(".verdict")).to_contain_text("temperature")
    page = web.visit(f"/captures/{new_id}", "capture-replay")
    expect(page.locator('[data-testid="replay-of"]')).to_contain_text(turn1["id"])


def test_delete_a_capture(web: Web, tap: Prompttap):
    victim = by_marker(tap, "browserdeleteme")
    page = web.visit(f"/captures/{victim['id']}")
    dialogs: list[str] = []

    def accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    page.click('[data-testid="delete-submit"]')
    page.wait_for_url(re.compile(r"/\?deleted="))
    web.check("captures-after-delete")
    assert dialogs == ["Delete this capture for good?"]
    expect(page.locator('[data-testid="deleted-notice"]')).to_contain_text(victim["id"])
    assert victim["id"] not in web.row_ids()
    assert httpx.get(f"{tap.ui_url}/api/captures/{victim['id']}", timeout=10).status_code == 404
    assert api(tap, "/captures", q="browserdeleteme")["items"] == []


def test_token_login(browser: Any, make_pt: Any):
    token = "browser-ui-token-1234"
    pt = make_pt("--ui-token", token)
    w = Web(browser, pt.ui_url)
    try:
        page = w.page
        page.goto("/")
        page.wait_for_url(re.compile(r"/login\?next=%2F$"))
        w.check("login")
        page.fill("#login-token", token)
        page.click('[data-testid="login-submit"]')
        page.wait_for_url(f"{pt.ui_url}/")
        w.check("captures-logged-in")
        expect(page.locator('[data-testid="captures-table"]')).to_be_visible()
        expect(page.locator('[data-testid="logout"]')).to_be_visible()
        cookies = {c["name"]: c for c in w.context.cookies()}
        assert cookies["prompttap_session"]["httpOnly"] and token not in cookies["prompttap_session"]["value"]
        w.visit("/stats")  # the session cookie carries on to other pages
        page.click('[data-testid="logout"]')
        page.wait_for_url(re.compile(r"/login"))
        w.check()
        assert "prompttap_session" not in {c["name"] for c in w.context.cookies()}
    finally:
        w.close()
