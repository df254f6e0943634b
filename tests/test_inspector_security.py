"""Inspector security over a real prompttap process: captured data is rendered as text (an
XSS corpus in prompts, outputs, headers, tool definitions and arguments, model names, image
URLs), strict headers on every response, the UI token (login, cookie, bearer), CSRF and
cross-origin refusal, and the start-up checks."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import uuid
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_upstream import FakeUpstream
from tests.harness import ROOT, Prompttap, free_port

CSP = (
    "default-src 'self'; img-src 'self' data: https:; script-src 'self'; style-src 'self'; "
    "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
TOKEN = "ui-token-0123456789-secret"
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
    )
).decode()
PAYLOADS = [
    "<script>alert('x1')</script>",
    "<img src=x onerror=alert('x2')>",
    "<svg onload=alert('x3')><foreignObject><body onload=alert('x3b')>",
    "\"><script>alert('x4')</script>",
    "'><a href=\"javascript:alert('x5')\">click</a>",
    "</pre></textarea></title><script>alert('x6')</script>",
    "<iframe src=\"javascript:alert('x7')\"></iframe><object data=x></object>",
    '<style>body{display:none}</style><base href="https://evil.example/">',
    "<meta http-equiv=refresh content=\"0;url=javascript:alert('x8')\">",
    "{{ 7*7 }}{% for x in range(3) %}x{% endfor %}",
]
EVIL = " ".join(PAYLOADS)
UNSAFE_IMAGES = [
    "javascript:alert('img1')",
    "data:image/svg+xml;base64," + base64.b64encode(b"<svg onload=alert('img2')></svg>").decode(),
    "data:image/svg+xml,<svg onload=alert('img3')></svg>",
    "data:text/html;base64," + base64.b64encode(b"<script>alert('img4')</script>").decode(),
    "https://evil.example/x.png\" onerror=\"alert('img5')",
    "data:image/png;base64,AAAA\" onerror=\"alert('img6')",
    "vbscript:msgbox('img7')",
]
SAFE_SRC = re.compile(r"^(data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/]+={0,2}|https?://[^\s\"'<>`]+)$")
URL_ATTRS = ("href", "src", "action", "formaction", "xlink:href", "data", "poster", "background")


class Audit(HTMLParser):
    """Everything in a page that could run script or load something unexpected."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self.text: list[str] = []
        self.images: list[str] = []
        self._in_script = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        if tag == "script":
            self._in_script = True
            if a.get("src") != "/static/app.js":
                self.problems.append(f"script {a}")
        if tag in ("iframe", "object", "embed", "style", "base", "foreignobject", "frame", "applet"):
            self.problems.append(f"<{tag}>")
        if tag == "meta" and "http-equiv" in a:
            self.problems.append(f"meta {a}")
        if tag == "svg" and a.get("class") not in ("chart", "chart hbars", "timeline"):
            self.problems.append(f"svg {a}")
        for name, value in a.items():
            if name.startswith("on"):
                self.problems.append(f"<{tag} {name}=...>")
            if name in URL_ATTRS:
                v = value.strip().lower()
                if tag == "img" or (tag == "a" and "thumb" in a.get("class", "")):
                    if not SAFE_SRC.match(value):
                        self.problems.append(f"<{tag} {name}={value[:80]}>")
                elif v.startswith(("javascript:", "vbscript:", "data:")):
                    self.problems.append(f"<{tag} {name}={value[:80]}>")
        if tag == "img":
            self.images.append(a.get("src", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append(f"inline script {data[:80]!r}")
        self.text.append(data)


def audit(html: str) -> Audit:
    a = Audit(html)
    assert a.problems == [], a.problems
    assert "<script>alert" not in html and "<svg onload" not in html and "<img src=x" not in html
    return a


def send(
    pt: Prompttap, body: dict[str, Any], headers: dict[str, str] | None = None, path: str = "/v1/chat/completions"
):
    r = httpx.post(
        f"{pt.url}{path}", json=body, headers={"authorization": "Bearer sk-test-0000000000", **(headers or {})}
    )
    assert r.status_code == 200, r.text
    return r


@pytest.fixture(scope="module")
def xss(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("xss")
    with Prompttap(home, fake.base_url, "--route", f"app={fake.base_url}/v1") as p:
        evil_headers = {
            "x-evil": EVIL,
            "user-agent": PAYLOADS[1],
            "x-prompttap-session": PAYLOADS[0],
            "x-prompttap-user": PAYLOADS[3],
            "x-prompttap-tags": "<b>tag</b>,\"><script>alert('t')</script>",
        }
        tool = {
            "type": "function",
            "function": {
                "name": "get_<img src=x onerror=alert('tn')>",
                "description": EVIL,
                "parameters": {
                    "type": "object",
                    "properties": {"<svg onload=alert('prop')>": {"type": "string", "enum": [PAYLOADS[0]]}},
                },
            },
        }
        send(
            p,
            {
                "model": "<svg onload=alert('model')>",
                "messages": [
                    {"role": "system", "content": f"System: {EVIL}"},
                    {"role": "user", "content": f"first {EVIL}"},
                ],
            },
            evil_headers,
        )
        send(
            p,
            {
                "model": "gpt-4o",
                "tools": [tool],
                "messages": [
                    {"role": "user", "content": "call tool please xsstool"},
                ],
            },
        )
        send(
            p,
            {
                "model": "gpt-4o",
                "tools": [tool],
                "messages": [
                    {"role": "user", "content": "call tool please"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "call_<b>1</b>",
                                "type": "function",
                                "function": {
                                    "name": tool["function"]["name"],
                                    "arguments": '{"q": "' + EVIL.replace('"', '\\"') + '"}',
                                },
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": "call_<b>1</b>", "content": f"result {EVIL}"},
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "look xssimages"},
                            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                            *({"type": "image_url", "image_url": {"url": u}} for u in UNSAFE_IMAGES),
                        ],
                    },
                ],
            },
        )
        send(
            p,
            {
                "model": "claude-<b>x</b>",
                "max_tokens": 20,
                "system": EVIL,
                "messages": [{"role": "user", "content": f"anthropic {EVIL}"}],
            },
            {"anthropic-version": "2023-06-01"},
            path="/app/v1/messages",
        )
        p.wait_captures(4)
        p.drained()
        yield p


PAGES = ("/", "/templates", "/stats", "/captures/rows", "/?q=alert", "/stats?model=%3Csvg%20onload%3Dalert('model')%3E")


def test_captured_data_is_rendered_as_text_on_every_page(xss: Prompttap):
    items = httpx.get(f"{xss.ui_url}/api/captures", params={"limit": 100}).json()["items"]
    assert len(items) == 4
    urls = list(PAGES)
    for item in items:
        full = httpx.get(f"{xss.ui_url}/api/captures/{item['id']}").json()
        urls.append(f"/captures/{item['id']}")
        if full["thread_id"]:
            urls.append(f"/threads/{full['thread_id']}")
        if full["prompt_template_id"]:
            urls.append(f"/templates/{full['prompt_template_id']}")
    for url in urls:
        r = httpx.get(xss.ui_url + url)
        assert r.status_code == 200, (url, r.status_code)
        audit(r.text)


def test_the_payloads_are_there_escaped(xss: Prompttap):
    items = httpx.get(f"{xss.ui_url}/api/captures", params={"limit": 100}).json()["items"]
    first = next(i for i in items if i["model"].startswith("<svg"))
    html = httpx.get(f"{xss.ui_url}/captures/{first['id']}").text
    text = "".join(audit(html).text)
    for payload in PAYLOADS:
        assert payload in text  # shown verbatim, as text (system prompt, message, answer, header)
    assert "&lt;script&gt;alert(&#39;x1&#39;)&lt;/script&gt;" in html
    assert "{{ 7*7 }}" in text and "49" not in text.split("{{ 7*7 }}")[1][:5]  # not evaluated
    assert "<svg onload=alert('model')>" in text and PAYLOADS[1] in text  # model, user agent
    tagged = httpx.get(f"{xss.ui_url}/?tag=<b>tag</b>").text
    assert "&lt;b&gt;tag&lt;/b&gt;" in tagged and len(re.findall('data-testid="capture-row"', tagged)) == 1


def test_tool_definitions_and_arguments_are_text(xss: Prompttap):
    items = httpx.get(f"{xss.ui_url}/api/captures", params={"q": "xsstool"}).json()["items"]
    cap = httpx.get(f"{xss.ui_url}/api/captures/{items[0]['id']}").json()
    assert cap["output_tool_calls"], cap
    text = "".join(audit(httpx.get(f"{xss.ui_url}/captures/{cap['id']}").text).text)
    assert "get_<img src=x onerror=alert('tn')>" in text and "<svg onload=alert('prop')>" in text
    assert PAYLOADS[0] in text  # the enum value the fake chose as the call's argument


def test_only_safe_images_become_img_tags(xss: Prompttap):
    items = httpx.get(f"{xss.ui_url}/api/captures", params={"q": "xssimages"}).json()["items"]
    html = httpx.get(f"{xss.ui_url}/captures/{items[0]['id']}").text
    a = audit(html)
    assert a.images == [f"data:image/png;base64,{PNG}"]
    text = "".join(a.text)
    for url in UNSAFE_IMAGES:
        assert url[:40] in text  # shown as text
    assert html.count('data-testid="image-as-text"') == len(UNSAFE_IMAGES)
    assert "result <script>" in text and "call_<b>1</b>" in text  # tool result and call id, as text


def test_json_api_is_json_with_nosniff(xss: Prompttap):
    r = httpx.get(f"{xss.ui_url}/api/captures")
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["x-content-type-options"] == "nosniff"


# --- headers -----------------------------------------------------------------------------------


def test_security_headers_on_every_response(xss: Prompttap):
    cap = httpx.get(f"{xss.ui_url}/api/captures").json()["items"][0]["id"]
    for method, path in (
        ("GET", "/"),
        ("GET", f"/captures/{cap}"),
        ("GET", "/stats"),
        ("GET", "/api/captures"),
        ("GET", "/api/stats"),
        ("GET", "/static/style.css"),
        ("GET", "/static/app.js"),
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/no/such/page"),
        ("GET", f"/api/captures/{uuid.uuid4()}"),
        ("POST", "/api/captures/not-a-uuid/delete"),
        ("GET", "/login"),
    ):
        r = httpx.request(method, xss.ui_url + path)
        assert r.headers.get("content-security-policy") == CSP, (path, r.status_code)
        assert r.headers.get("x-content-type-options") == "nosniff", path
        assert r.headers.get("referrer-policy") == "same-origin", path
        assert r.headers.get("x-frame-options") == "DENY", path
    assert httpx.get(xss.ui_url + "/api/captures").headers["cache-control"] == "no-store"


def test_api_docs_get_only_their_own_script_allowed(xss: Prompttap):
    r = httpx.get(xss.ui_url + "/docs")
    csp = r.headers["content-security-policy"]
    script_src = next(d for d in csp.split(";") if d.strip().startswith("script-src"))
    assert "'sha256-" in script_src and "unsafe-inline" not in script_src and "unsafe-eval" not in script_src
    assert "object-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert int(r.headers["content-length"]) == len(r.content)


# --- CSRF without a token ------------------------------------------------------------------------


def test_cross_origin_posts_are_refused(xss: Prompttap):
    url = f"{xss.ui_url}/api/captures/{uuid.uuid4()}/delete"
    assert httpx.post(url, headers={"origin": "http://evil.example"}).status_code == 403
    assert httpx.post(url, headers={"origin": "null"}).status_code == 403
    assert httpx.post(url, headers={"sec-fetch-site": "cross-site"}).status_code == 403
    assert httpx.delete(url.removesuffix("/delete"), headers={"sec-fetch-site": "same-site"}).status_code == 403
    # A script with no cookies and no browser headers has no ambient credential to abuse.
    assert httpx.post(url).status_code == 404


def test_browser_posts_need_the_csrf_token(xss: Prompttap):
    cap = httpx.get(f"{xss.ui_url}/api/captures").json()["items"][0]["id"]
    with httpx.Client(base_url=xss.ui_url) as browser:
        page = browser.get(f"/captures/{cap}").text
        token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
        assert re.search(r'name="csrf_token" value="' + re.escape(token) + '"', page)
        cookie = browser.cookies.get("prompttap_csrf")
        assert cookie == token
        set_cookie = httpx.get(f"{xss.ui_url}/").headers["set-cookie"]
        assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
        same = {"origin": xss.ui_url, "sec-fetch-site": "same-origin"}
        missing = f"/api/captures/{uuid.uuid4()}/delete"
        assert browser.post(missing, headers=same).status_code == 403
        assert browser.post(missing, headers={**same, "x-csrf-token": "forged.0000"}).status_code == 403
        assert browser.post(missing, headers={**same, "x-csrf-token": token}).status_code == 404
        assert browser.post(missing, data={"csrf_token": token}, headers=same).status_code == 404
        assert browser.post(missing, data={"csrf_token": "nope"}, headers=same).status_code == 403
        # A forged cookie (not signed by this server) does not help a forger either.
        forged = httpx.post(
            xss.ui_url + missing, headers={**same, "x-csrf-token": "abc.def", "cookie": "prompttap_csrf=abc.def"}
        )
        assert forged.status_code == 403
        assert browser.get(f"/api/captures/{cap}").status_code == 200  # nothing was deleted


# --- DNS rebinding: the inspector answers only to its own names ---------------------------------


def _status_without_host(port: int) -> int:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /api/captures HTTP/1.0\r\n\r\n")
        head = sock.recv(4096)
    return int(head.split(b" ", 2)[1])


def test_a_rebound_name_gets_421_before_any_route(xss: Prompttap):
    """A page of rebind.example whose name now resolves to 127.0.0.1 is same-origin with
    http://rebind.example:PORT: nothing may answer it, however it asks."""
    port = xss.ui_port
    rebound = {"host": f"rebind.example:{port}"}
    for path in ("/api/captures", "/", "/api/stats", "/healthz", "/metrics", "/static/app.js", "/login", "/docs"):
        r = httpx.get(xss.ui_url + path, headers=rebound)
        assert r.status_code == 421, (path, r.status_code)
        assert "set-cookie" not in r.headers and "--ui-allowed-host rebind.example" in r.text, path
        assert "first " not in r.text and r.headers["x-content-type-options"] == "nosniff"
    for other in ("evil.example", "127.0.0.1.nip.io", f"10.0.0.1:{port}", "localhost.evil.example"):
        assert httpx.get(xss.ui_url + "/api/captures", headers={"host": other}).status_code == 421, other
    assert _status_without_host(port) in (400, 421)
    # The names it is reached by, however spelled.
    for name in (f"127.0.0.1:{port}", f"localhost:{port}", f"LocalHost.:{port}", f"[::1]:{port}", "localhost"):
        assert httpx.get(xss.ui_url + "/api/captures", headers={"host": name}).status_code == 200, name


def test_a_rebound_page_cannot_delete_with_a_scraped_csrf_token(xss: Prompttap):
    send(xss, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "rebindingvictim"}]})
    cap = xss.wait_captures(1, q="rebindingvictim")[0]["id"]
    port = xss.ui_port
    with httpx.Client(base_url=xss.ui_url) as browser:
        token = re.search(r'name="csrf-token" content="([^"]+)"', browser.get(f"/captures/{cap}").text).group(1)
        rebound = {"host": f"rebind.example:{port}", "origin": f"http://rebind.example:{port}"}
        for headers in (rebound, {**rebound, "sec-fetch-site": "same-origin"}):
            r = browser.post(f"/api/captures/{cap}/delete", headers={**headers, "x-csrf-token": token})
            assert r.status_code == 421, r.text
            r = browser.delete(f"/api/captures/{cap}", headers={**headers, "x-csrf-token": token})
            assert r.status_code == 421, r.text
        # The Origin is checked against the inspector's names, not against the Host header.
        evil = {"origin": f"http://rebind.example:{port}", "x-csrf-token": token}
        assert browser.post(f"/api/captures/{cap}/delete", headers=evil).status_code == 403
        other_port = {"origin": f"http://127.0.0.1:{free_port()}", "x-csrf-token": token}
        assert browser.post(f"/api/captures/{cap}/delete", headers=other_port).status_code == 403
        assert browser.get(f"/api/captures/{cap}").status_code == 200  # nothing was deleted
        # Its own names still work, with the token.
        missing = f"/api/captures/{uuid.uuid4()}/delete"
        for origin in (f"http://localhost:{port}", f"http://127.0.0.1:{port}", f"http://[::1]:{port}"):
            host = origin.removeprefix("http://")
            r = browser.post(missing, headers={"origin": origin, "host": host, "x-csrf-token": token})
            assert r.status_code == 404, (origin, r.text)


def test_ui_allowed_host_names_a_reverse_proxy(fake: FakeUpstream, tmp_path: Path):
    p = Prompttap(tmp_path / "pt", fake.base_url, "--ui-allowed-host", "Inspector.Example")
    with p:
        base = p.ui_url
        assert httpx.get(f"{base}/api/captures", headers={"host": "inspector.example"}).status_code == 200
        assert httpx.get(f"{base}/api/captures", headers={"host": "rebind.example"}).status_code == 421
        with httpx.Client(base_url=base) as browser:
            token = re.search(r'name="csrf-token" content="([^"]+)"', browser.get("/").text).group(1)
            missing = f"/api/captures/{uuid.uuid4()}/delete"
            # A TLS-terminating proxy that passes its own Host on, and one that does not.
            for host in ("inspector.example", f"127.0.0.1:{p.ui_port}"):
                ok = {"host": host, "origin": "https://inspector.example", "x-csrf-token": token}
                assert browser.post(missing, headers=ok).status_code == 404, host
                bad = {**ok, "origin": "https://rebind.example"}
                assert browser.post(missing, headers=bad).status_code == 403, host


def test_allowed_host_settings(tmp_path: Path):
    from prompttap.collector import config

    toml = tmp_path / "prompttap.toml"
    toml.write_text('ui-allowed-hosts = ["file.example"]\n')
    assert config.load({"config": str(toml)}, {}).ui_allowed_hosts == ("file.example",)

    assert config.load({"ui_allowed_hosts": ["a.example", "B.example"]}, {}).ui_allowed_hosts == (
        "a.example",
        "b.example",
    )
    env = {"PROMPTTAP_UI_ALLOWED_HOSTS": "prompttap, proxy.example,"}
    assert config.load({}, env).ui_allowed_hosts == ("prompttap", "proxy.example")
    assert config.load({"ui_allowed_hosts": ["flag.example"]}, env).ui_allowed_hosts == ("flag.example",)
    for bad in ("proxy.example:443", "https://proxy.example"):
        with pytest.raises(config.ConfigError, match="--ui-allowed-host"):
            config.load({"ui_allowed_hosts": [bad]}, {})


# --- replay stays on its route ---------------------------------------------------------------------

APP_KEY = "sk-route-app-key-APPK"
PFX_KEY = "sk-route-pfx-key-PFXK"
ESCAPES = (
    "/app/../pfx/v1/chat/completions",
    "/app/%2e%2e/pfx/v1/chat/completions",
    "/app/%2E%2e%2Fpfx/v1/chat/completions",
    "/app/v1/../../pfx/v1/chat/completions",
)


def _seed_copies(home: Path, capture_id: str, paths: tuple[str, ...]) -> list[str]:
    """Copies of a stored capture with other paths, written into the (stopped) server's store:
    captures the proxy itself may no longer record, as older versions did."""
    ids = [str(uuid.uuid4()) for _ in paths]
    code = (
        "import json, sys, uuid\n"
        "from prompttap.schemas.store import open_store\n"
        "c = open_store(sys.argv[1])\n"
        "r = c.query('SELECT * FROM captures FINAL WHERE id = {id:UUID}', parameters={'id': sys.argv[2]})\n"
        "cols, (row,) = r.column_names, r.result_rows\n"
        "for new, path in json.loads(sys.argv[3]):\n"
        "    row = list(row)\n"
        "    row[cols.index('id')], row[cols.index('path')] = uuid.UUID(new), path\n"
        "    c.insert('captures', [row], column_names=cols)\n"
    )
    pairs = json.dumps(list(zip(ids, paths, strict=True)))
    store = f"chdb://{(home / 'store').resolve()}"
    subprocess.run([sys.executable, "-c", code, store, capture_id, pairs], cwd=ROOT, check=True, timeout=120)
    return ids


def test_a_replay_goes_to_its_own_routes_upstream_only(fake: FakeUpstream, make_pt, tmp_path: Path):
    """A capture made through /app/../pfx/... must not replay to route pfx's upstream with route
    app's key: it is refused, with a reason; a capture on its route replays there, with its key."""
    other = FakeUpstream()
    other.start()
    try:
        pt = make_pt(
            "--route", f"app={fake.base_url}/v1", "--route", f"pfx={other.base_url}/v1",
            "--upstream-key", "app=PT_TEST_APP_KEY", "--upstream-key", "pfx=PT_TEST_PFX_KEY",
            env={"PT_TEST_APP_KEY": APP_KEY, "PT_TEST_PFX_KEY": PFX_KEY},
        )  # fmt: skip
        send(
            pt,
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "routeconfine"}]},
            path="/app/v1/chat/completions",
        )
        original = pt.wait_captures(1)[0]
        pt.drained()
        pt.stop()
        escaped = _seed_copies(pt.home, original["id"], ESCAPES)
        pt.start()
        to_app, to_pfx = len(fake.requests), len(other.requests)
        for cap, path in zip(escaped, ESCAPES, strict=True):
            assert pt.capture(cap)["path"] == path
            r = httpx.post(f"{pt.ui_url}/api/captures/{cap}/replay", json={}, timeout=60)
            assert r.status_code == 409, (path, r.status_code, r.text)
            assert "climbs out of route 'app'" in r.json()["detail"], r.text
            page = httpx.get(f"{pt.ui_url}/captures/{cap}").text
            assert 'data-testid="replay-unavailable"' in page and "climbs out of route" in page
            assert 'id="replay-form"' not in page
        assert len(other.requests) == to_pfx and len(fake.requests) == to_app  # nothing was sent anywhere
        # The capture made on its route replays to that route's upstream, with that route's key.
        r = httpx.post(f"{pt.ui_url}/api/captures/{original['id']}/replay", json={}, timeout=60)
        assert r.status_code == 200, r.text
        assert len(other.requests) == to_pfx and len(fake.requests) == to_app + 1
        assert fake.requests[-1].header("authorization") == f"Bearer {APP_KEY}"
        assert pt.capture(r.json()["id"])["route"] == "app"
    finally:
        other.stop()


# --- the UI token ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secured(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("secured")
    with Prompttap(home, fake.base_url, env={"PROMPTTAP_UI_TOKEN": TOKEN}) as p:
        send(p, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "secret stuff"}]})
        _wait_bearer(p, 1)
        yield p


def _wait_bearer(pt: Prompttap, n: int) -> None:
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = httpx.get(f"{pt.ui_url}/api/captures", headers={"authorization": f"Bearer {TOKEN}"})
        if len(r.json()["items"]) >= n:
            return
        time.sleep(0.1)
    raise TimeoutError


def test_without_the_token_nothing_but_health_metrics_and_static(secured: Prompttap):
    base = secured.ui_url
    r = httpx.get(f"{base}/?q=secret", headers={"accept": "text/html"})
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2F%3Fq%3Dsecret"
    for path in ("/api/captures", "/api/stats", "/openapi.json"):
        r = httpx.get(base + path)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer"), path
        assert "secret stuff" not in r.text
    assert httpx.get(f"{base}/docs", headers={"accept": "text/html"}).status_code == 303
    assert httpx.post(f"{base}/api/captures/{uuid.uuid4()}/replay").status_code == 401
    assert httpx.get(f"{base}/healthz").status_code in (200, 503)
    assert httpx.get(f"{base}/metrics").status_code == 200
    assert httpx.get(f"{base}/static/style.css").status_code == 200
    assert httpx.get(f"{base}/login").status_code == 200


def test_bearer_token(secured: Prompttap):
    base = secured.ui_url
    assert httpx.get(f"{base}/api/captures", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert httpx.get(f"{base}/", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
    for wrong in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer", f"Basic {TOKEN}", TOKEN):
        assert httpx.get(f"{base}/api/captures", headers={"authorization": wrong}).status_code == 401, wrong
    r = httpx.get(f"{base}/", headers={"authorization": "Bearer wrong", "accept": "text/html"})
    assert r.status_code == 401
    # Bearer requests carry no ambient credential: no CSRF token needed.
    r = httpx.post(f"{base}/api/captures/{uuid.uuid4()}/delete", headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 404


def test_login_sets_a_strict_httponly_cookie_then_logout(secured: Prompttap):
    base = secured.ui_url
    with httpx.Client(base_url=base) as browser:
        page = browser.get("/login?next=/stats").text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        same = {"origin": base}
        bad = browser.post("/login", data={"token": "nope", "next": "/stats", "csrf_token": csrf}, headers=same)
        assert bad.status_code == 401 and "Wrong token" in bad.text and "prompttap_session" not in browser.cookies
        assert browser.post("/login", data={"token": TOKEN, "next": "/stats"}, headers=same).status_code == 403
        ok = browser.post("/login", data={"token": TOKEN, "next": "/stats", "csrf_token": csrf}, headers=same)
        assert ok.status_code == 303 and ok.headers["location"] == "/stats"
        cookie = next(c for c in ok.headers.get_list("set-cookie") if c.startswith("prompttap_session="))
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        assert TOKEN not in cookie
        assert browser.get("/stats").status_code == 200
        assert browser.get("/api/captures").status_code == 200
        r = browser.post(f"/api/captures/{uuid.uuid4()}/delete", headers=same)
        assert r.status_code == 403  # a cookie session needs the CSRF token
        r = browser.post(f"/api/captures/{uuid.uuid4()}/delete", headers={**same, "x-csrf-token": csrf})
        assert r.status_code == 404
        evil = {"origin": "http://evil.example", "x-csrf-token": csrf}
        assert browser.post(f"/api/captures/{uuid.uuid4()}/delete", headers=evil).status_code == 403
        assert browser.post("/logout", data={"csrf_token": csrf}, headers=same).status_code == 303
        assert browser.get("/stats", headers={"accept": "text/html"}).status_code == 303
    forged = httpx.get(f"{base}/api/captures", headers={"cookie": f"prompttap_session={TOKEN}"})
    assert forged.status_code == 401


@pytest.mark.parametrize(
    "target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"]
)
def test_login_never_redirects_off_site(secured: Prompttap, target: str):
    with httpx.Client(base_url=secured.ui_url) as browser:
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', browser.get("/login").text).group(1)
        r = browser.post(
            "/login", data={"token": TOKEN, "next": target, "csrf_token": csrf}, headers={"origin": secured.ui_url}
        )
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_the_token_is_never_logged(secured: Prompttap):
    assert TOKEN not in secured.log()


# --- start-up checks ---------------------------------------------------------------------------


def _serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTTAP_")}
    environ.update({"PYTHONPATH": str(ROOT), **(env or {})})
    cmd = [
        sys.executable,
        "-m",
        "prompttap",
        "serve",
        "--home",
        str(tmp_path / "h"),
        "--listen",
        f"127.0.0.1:{free_port()}",
        *args,
    ]
    return subprocess.run(cmd, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120)


def test_a_non_loopback_ui_needs_a_token(tmp_path: Path):
    r = _serve(tmp_path, "--ui", f"0.0.0.0:{free_port()}")
    assert r.returncode == 2
    assert "PROMPTTAP_UI_TOKEN" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_non_loopback_ui_with_a_token_starts(fake: FakeUpstream, tmp_path: Path):
    p = Prompttap(tmp_path / "pt", fake.base_url, env={"PROMPTTAP_UI_TOKEN": TOKEN})
    p.extra += ["--ui", f"0.0.0.0:{p.ui_port}"]
    with p:
        assert httpx.get(f"{p.ui_url}/api/captures").status_code == 401
        assert httpx.get(f"{p.ui_url}/api/captures", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
        # On every address, any of this machine's IP addresses reaches it; a DNS name must be allowed.
        bearer = {"authorization": f"Bearer {TOKEN}"}
        assert httpx.get(f"{p.ui_url}/api/captures", headers={**bearer, "host": "10.1.2.3"}).status_code == 200
        assert httpx.get(f"{p.ui_url}/api/captures", headers={**bearer, "host": "rebind.example"}).status_code == 421


def test_upstream_key_settings_are_checked_at_start_up(tmp_path: Path):
    r = _serve(tmp_path, "--no-ui", "--upstream-key", "default=PT_TEST_SURELY_UNSET")
    assert r.returncode == 1 and "PT_TEST_SURELY_UNSET" in r.stderr and "not set" in r.stderr
    r = _serve(tmp_path, "--no-ui", "--upstream-key", "nosuch=HOME")
    assert r.returncode == 2 and "route 'nosuch'" in r.stderr
    r = _serve(tmp_path, "--no-ui", "--upstream-key", "default")
    assert r.returncode == 2 and "ROUTE=ENV_VAR" in r.stderr
