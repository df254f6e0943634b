"""The demo's scripted traffic, sent through the prompttap proxy like real apps would send it.

AnythingLLM (v1.16.0) is imitated on the wire. Its Generic OpenAI client is openai-node 4.95.1, which
sends its own ``x-stainless-*`` headers and pretty-prints JSON bodies (``JSON.stringify(body, null, 2)``
in ``buildRequest``); AnythingLLM stops reading a stream at the first chunk with a finish_reason, so it
hangs up before ``data: [DONE]`` (``handleDefaultStreamResponseV2``). The sources, at those versions:
https://github.com/Mintplex-Labs/anything-llm/blob/v1.16.0/server/utils/helpers/chat/responses.js
https://github.com/Mintplex-Labs/anything-llm/blob/v1.16.0/server/package.json
https://github.com/openai/openai-node/blob/v4.95.1/src/core.ts
The agent and the Anthropic chat use the official ``openai``/``anthropic`` SDKs when installed, and the
same wire shapes over httpx when not (they are dev extras; the demo works with the base install).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

RAG_MODEL = "gpt-4o-mini"
AGENT_MODEL = "gpt-4o"
CLAUDE_MODEL = "claude-sonnet-4-5"
FAILING_MODEL = "gpt-4.5-preview"  # the simulator answers 429 (quota) for it
REPLAY_CHANGES = {"model": "gpt-4.1-mini", "temperature": 0.2}
HISTORY_WINDOW = 3  # the workspace's "Chat History" (default 20), low so old turns visibly drop off
TOP_N = 4  # AnythingLLM's default number of retrieved snippets

# AnythingLLM's Generic OpenAI client (openai-node 4.95.1 on Node 18), header for header.
_STAINLESS = {
    "accept": "application/json",
    "content-type": "application/json",
    "x-stainless-lang": "js",
    "x-stainless-package-version": "4.95.1",
    "x-stainless-os": "Linux",
    "x-stainless-arch": "x64",
    "x-stainless-runtime": "node",
    "x-stainless-runtime-version": "v18.20.8",
    "authorization": "Bearer null",  # no key configured: openai-node sends the literal "null"
    "x-stainless-retry-count": "2",
    "x-stainless-timeout": "600",
    "accept-encoding": "gzip,deflate",
}
ANYTHINGLLM_CHAT_HEADERS = {**_STAINLESS, "user-agent": "AnythingLLM/1.16.0"}
ANYTHINGLLM_EMBED_HEADERS = {**_STAINLESS, "user-agent": "OpenAI/JS 4.95.1"}
SYSTEM_PROMPT = (
    "Given the following conversation, relevant context, and a follow up question, reply with an answer to the "
    "current question the user is asking. The current date and time is {datetime}. Return only your response to "
    "the question given the above information following the users instructions as needed."
)

PTO = ("pto-policy-2026.docx", "1/5/2026, 4:03:09 PM")
REMOTE = ("remote-work-guidelines.pdf", "3/2/2026, 9:12:44 AM")
EXPENSES = ("expense-policy.md", "2/17/2026, 11:40:21 AM")
CHUNKS = {
    "pto": (
        PTO,
        "Full-time employees accrue paid time off from their first day. In the first year you earn 20 vacation "
        "days, prorated by start month. From the third year on the allowance rises to 25 days.",
    ),
    "pto-2": (  # the same document after it was edited and re-ingested
        ("pto-policy-2026.docx", "8/14/2026, 10:27:53 AM"),
        "Full-time employees accrue paid time off from their first day. As of September 2026 the first year "
        "brings 25 vacation days, prorated by start month. From the third year on the allowance rises to 28 days.",
    ),
    "carryover": (
        PTO,
        "Unused vacation days can be carried over into the next year, up to a maximum of 5 days. Carried-over "
        "days expire on March 31. Days above the limit are forfeited unless your manager approved an exception.",
    ),
    "requests": (
        PTO,
        "Vacation requests go through the HR portal at least two weeks in advance. Requests longer than ten "
        "working days need approval from your manager and from People Ops.",
    ),
    "benefits": (
        ("benefits-overview-2026.pdf", "1/5/2026, 4:05:30 PM"),
        "Health, dental and vision coverage start on the first day of employment. Parental leave is 16 weeks at "
        "full pay. Public holidays follow the local office calendar and do not count against vacation days.",
    ),
    "onboarding": (
        ("onboarding-checklist.md", "12/1/2025, 2:18:07 PM"),
        "In your first week, set up the HR portal, book the security training and meet your onboarding buddy. "
        "Your vacation balance appears in the HR portal after your first payroll run.",
    ),
    "abroad": (
        REMOTE,
        "You may work remotely from another country for up to 30 days per calendar year. Longer stays create "
        "tax and payroll obligations and are not allowed.",
    ),
    "abroad-approval": (
        REMOTE,
        "Working abroad needs written approval from your manager and a check by People Ops at least three weeks "
        "before you travel. Use the Work From Abroad form in the HR portal.",
    ),
    "core-hours": (
        REMOTE,
        "While working remotely you must be reachable during core hours, 10:00 to 15:00 in your home office's "
        "time zone, and use the company VPN on every network.",
    ),
    "coworking": (
        EXPENSES,
        "Coworking spaces are reimbursable only when no Acme office is within 50 km. Day passes up to 35 EUR can "
        "be claimed without pre-approval; monthly memberships need your manager's approval first.",
    ),
    "receipts": (
        EXPENSES,
        "Submit expenses in the finance tool within 30 days with an itemized receipt. Costs incurred while "
        "working abroad are reimbursed in EUR at the exchange rate of the receipt date.",
    ),
}
# (question, new search hits); AnythingLLM back-fills up to TOP_N from the previous turn's sources.
RAG_TURNS = [
    ("How many vacation days do I get in my first year?", ["pto", "onboarding", "benefits", "requests"]),
    ("Can I carry unused days over into next year?", ["carryover"]),
    ("What about working remotely from another country for a few weeks?", ["abroad", "core-hours"]),
    ("Whose approval do I need for that, and how far in advance?", ["abroad-approval", "requests"]),
    ("Can I expense a coworking space while I'm working abroad?", ["coworking", "receipts"]),
]
RERUN_HITS = ["pto-2", "onboarding", "benefits", "requests"]

AGENT_SYSTEM = (
    "You are Acme's customer support agent. Look orders and shipments up with the tools before answering; "
    "never guess a delivery date. Be brief and friendly."
)
AGENT_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {p: {"type": "string"} for p in params},
                "required": params,
                "additionalProperties": False,
            },
        },
    }
    for name, description, params in (
        ("lookup_order", "Find an order by its number, e.g. A-10423.", ["order_id"]),
        ("track_shipment", "Current status of a parcel from the carrier.", ["tracking_number"]),
        ("create_return", "Open a return for an order.", ["order_id", "reason"]),
    )
]
TOOL_RESULTS = {
    "lookup_order": {
        "order_id": "A-10423",
        "status": "shipped",
        "carrier": "UPS",
        "tracking_number": "1Z999AA10123456784",
    },
    "track_shipment": {"status": "in transit", "last_scan": "Louisville, KY", "estimated_delivery": "Thursday"},
}
CLAUDE_SYSTEM = "You are a concise technical writing assistant."


def anythingllm_datetime(when: datetime) -> str:
    """moment's ``LLLL`` in English, as AnythingLLM fills ``{datetime}``: Friday, August 21, 2026 8:50 PM."""
    return f"{when:%A, %B} {when.day}, {when.year} {when.hour % 12 or 12}:{when:%M %p}"


def chunk_text(key: str) -> str:
    (source, published), text = CHUNKS[key]
    return f"<document_metadata>\nsourceDocument: {source}\npublished: {published}\n</document_metadata>\n\n{text}"


def rag_system_prompt(when: datetime, context: list[str]) -> str:
    blocks = "".join(f"[CONTEXT {i}]:\n{chunk_text(k)}\n[END CONTEXT {i}]\n\n" for i, k in enumerate(context))
    return SYSTEM_PROMPT.replace("{datetime}", anythingllm_datetime(when)) + "\nContext:\n" + blocks


def merge_chunks(chunks: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The assistant message of a chat completions stream (content and tool-call deltas merged by index)."""
    message: dict[str, Any] = {"role": "assistant", "content": "", "tool_calls": []}
    for chunk in chunks:
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            message["content"] += delta.get("content") or ""
            for call in delta.get("tool_calls") or []:
                while len(message["tool_calls"]) <= call["index"]:
                    message["tool_calls"].append(
                        {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
                    )
                merged = message["tool_calls"][call["index"]]
                merged["id"] = call.get("id") or merged["id"]
                for k in ("name", "arguments"):
                    merged["function"][k] += (call.get("function") or {}).get(k) or ""
    return message


def sse_data(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if line.startswith("data:") and line[5:].strip() != "[DONE]":
            yield json.loads(line[5:])


class OpenAIChat:
    """``chat.completions.create`` -> (status, assistant message), with the SDK or over httpx."""

    def __init__(self, base_url: str, key: str, http: httpx.Client) -> None:
        self.base_url, self.key, self.http = base_url, key, http
        try:
            import openai

            own = openai.DefaultHttpxClient(trust_env=False, timeout=60)  # the SDK's own httpx flavour
            self.sdk: Any = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, http_client=own)
            self.errors: tuple[type[Exception], ...] = (openai.APIStatusError,)
        except ImportError:
            self.sdk, self.errors = None, ()

    def create(self, **body: Any) -> tuple[int, dict[str, Any]]:
        if self.sdk is not None:
            try:
                if body.get("stream"):
                    return 200, merge_chunks(c.model_dump() for c in self.sdk.chat.completions.create(**body))
                return 200, self.sdk.chat.completions.create(**body).model_dump()["choices"][0]["message"]
            except self.errors as exc:
                return exc.status_code, {}  # type: ignore[attr-defined]
        headers = {"authorization": f"Bearer {self.key}"}
        with self.http.stream("POST", f"{self.base_url}/chat/completions", json=body, headers=headers) as resp:
            if resp.status_code >= 400 or not body.get("stream"):
                resp.read()
                return resp.status_code, {} if resp.status_code >= 400 else resp.json()["choices"][0]["message"]
            return 200, merge_chunks(sse_data(resp.iter_lines()))


class AnthropicChat:
    """``messages.create`` -> (status, answer text), with the SDK or over httpx."""

    def __init__(self, base_url: str, key: str, http: httpx.Client) -> None:
        self.base_url, self.key, self.http = base_url, key, http
        try:
            import anthropic

            own = anthropic.DefaultHttpxClient(trust_env=False, timeout=60)  # the SDK's own httpx flavour
            self.sdk: Any = anthropic.Anthropic(base_url=base_url, api_key=key, max_retries=0, http_client=own)
        except ImportError:
            self.sdk = None

    def create(self, **body: Any) -> tuple[int, str]:
        if self.sdk is not None:
            if body.get("stream"):
                return 200, _anthropic_text(e.model_dump() for e in self.sdk.messages.create(**body))
            return 200, _anthropic_text([self.sdk.messages.create(**body).model_dump()])
        headers = {"x-api-key": self.key, "anthropic-version": "2023-06-01"}
        with self.http.stream("POST", f"{self.base_url}/v1/messages", json=body, headers=headers) as resp:
            if resp.status_code >= 400 or not body.get("stream"):
                resp.read()
                return resp.status_code, "" if resp.status_code >= 400 else _anthropic_text([resp.json()])
            return 200, _anthropic_text(sse_data(resp.iter_lines()))


def _anthropic_text(events: Iterable[dict[str, Any]]) -> str:
    """The text of a message, or of a stream's text deltas."""
    out = []
    for e in events:
        if e.get("type") == "message":
            out += [b.get("text", "") for b in e.get("content") or [] if b.get("type") == "text"]
        elif e.get("type") == "content_block_delta" and (e.get("delta") or {}).get("type") == "text_delta":
            out.append(e["delta"]["text"])
    return "".join(out)


@dataclass
class Script:
    """One run of the demo traffic against a running prompttap (``proxy`` and ``ui`` base URLs)."""

    proxy: str
    ui: str
    key: str
    http: httpx.Client = field(default_factory=lambda: httpx.Client(trust_env=False, timeout=60))
    since: str = field(default_factory=lambda: (datetime.now(UTC) - timedelta(seconds=0.5)).isoformat())
    sent: int = 0  # requests sent through the proxy, so we know when all are stored
    ids: dict[str, str] = field(default_factory=dict)
    rag: list[dict[str, Any]] = field(default_factory=list)  # AnythingLLM request bodies, in order
    when: datetime = field(default_factory=datetime.now)
    agent_messages: list[dict[str, Any]] = field(default_factory=list)  # the agent's conversation, for the failure

    # -- AnythingLLM -----------------------------------------------------------------------------------------
    def anythingllm_chat(self, body: dict[str, Any]) -> str:
        base = f"{self.proxy}/anythingllm/v1"
        question = body["messages"][-1]["content"]
        embed = {"model": "text-embedding-3-small", "input": [question], "encoding_format": "base64"}
        self._post(f"{base}/embeddings", embed, ANYTHINGLLM_EMBED_HEADERS).raise_for_status()  # vector search
        self.sent += 2
        self.rag.append(body)
        text = ""
        data = json.dumps(body, indent=2, ensure_ascii=False).encode()  # openai-node pretty-prints bodies
        with self.http.stream("POST", f"{base}/chat/completions", content=data, headers=ANYTHINGLLM_CHAT_HEADERS) as r:
            r.raise_for_status()
            for chunk in sse_data(r.iter_lines()):
                choice = (chunk.get("choices") or [{}])[0]
                text += (choice.get("delta") or {}).get("content") or ""
                if choice.get("finish_reason"):
                    break  # AnythingLLM stops reading here: it never sees the usage chunk or [DONE]
        return text

    def _post(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        return self.http.post(url, content=json.dumps(body, indent=2).encode(), headers=headers)

    @staticmethod
    def rag_body(system: str, history: list[dict[str, str]], question: str) -> dict[str, Any]:
        messages = [{"role": "system", "content": system}, *history, {"role": "user", "content": question}]
        # AnythingLLM's key order; stream_options because GENERIC_OPEN_AI_REPORT_USAGE=true.
        body = {"model": RAG_MODEL, "stream": True, "messages": messages, "temperature": 0.7, "max_tokens": 1024}
        return body | {"stream_options": {"include_usage": True}}

    def step_rag_chat(self) -> str:
        history: list[dict[str, str]] = []
        context: list[str] = []
        for question, hits in RAG_TURNS:
            context = (hits + [k for k in context if k not in hits])[:TOP_N]  # fillSourceWindow back-fill
            body = self.rag_body(rag_system_prompt(self.when, context), history[-2 * HISTORY_WINDOW :], question)
            answer = self.anythingllm_chat(body)
            history += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        return f"{len(RAG_TURNS)} turns, last answer: {answer[:60]}..."

    def step_regenerate(self) -> str:
        self.anythingllm_chat(self.rag[-1])  # "regenerate": the identical request again
        return "same prompt, new answer"

    def step_rerun(self) -> str:
        question = RAG_TURNS[0][0]
        when = self.when + timedelta(days=1)  # the next day, after the policy was edited and re-ingested
        answer = self.anythingllm_chat(self.rag_body(rag_system_prompt(when, RERUN_HITS), [], question))
        return f"answer now: {answer[:60]}..."

    # -- agent, failure, Anthropic ---------------------------------------------------------------------------
    def step_agent(self) -> str:
        client = OpenAIChat(f"{self.proxy}/agent/v1", self.key, self.http)
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": AGENT_SYSTEM},
            {"role": "user", "content": "Hi! Where is my order A-10423? It was supposed to arrive on Monday."},
        ]
        calls = []
        for turn in range(4):
            stream = turn > 0  # first call plain JSON, the rest streamed with usage
            extra = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
            status, message = client.create(model=AGENT_MODEL, messages=messages, tools=AGENT_TOOLS, **extra)
            self.sent += 1
            if status != 200:
                raise RuntimeError(f"agent call answered HTTP {status}")
            tool_calls = message.get("tool_calls") or []
            if not tool_calls:
                break
            messages.append({"role": "assistant", "content": None, "tool_calls": tool_calls})
            for call in tool_calls:
                calls.append(call["function"]["name"])
                result = TOOL_RESULTS.get(call["function"]["name"], {"error": "unknown tool"})
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": json.dumps(result)})
        self.agent_messages = [*messages, {"role": "assistant", "content": message.get("content") or ""}]
        return f"tools called: {', '.join(calls) or 'none'}"

    def step_failure(self) -> str:
        client = OpenAIChat(f"{self.proxy}/agent/v1", self.key, self.http)
        follow_up = {"role": "user", "content": "Thanks! Could you also check whether order A-10424 has shipped?"}
        messages = [*(self.agent_messages or [{"role": "system", "content": AGENT_SYSTEM}]), follow_up]
        status, _ = client.create(model=FAILING_MODEL, messages=messages, tools=AGENT_TOOLS)
        self.sent += 1
        if status < 400:
            raise RuntimeError(f"expected an error from {FAILING_MODEL}, got HTTP {status}")
        return f"HTTP {status} from the upstream, as intended"

    def step_claude(self) -> str:
        client = AnthropicChat(f"{self.proxy}/claude", self.key, self.http)
        first = "In two sentences: what does a reverse proxy do, and why put one in front of an LLM API?"
        messages: list[dict[str, Any]] = [{"role": "user", "content": first}]
        _, answer = client.create(model=CLAUDE_MODEL, max_tokens=400, system=CLAUDE_SYSTEM, messages=messages)
        messages += [
            {"role": "assistant", "content": answer},
            {"role": "user", "content": "Now explain it like I'm five."},
        ]
        status, text = client.create(
            model=CLAUDE_MODEL, max_tokens=400, system=CLAUDE_SYSTEM, messages=messages, stream=True
        )
        self.sent += 2
        if status != 200 or not text:
            raise RuntimeError(f"the streamed Anthropic call answered HTTP {status}")
        return "plain and streamed"

    # -- the inspector ---------------------------------------------------------------------------------------
    def captures(self, **params: Any) -> list[dict[str, Any]]:
        resp = self.http.get(f"{self.ui}/api/captures", params={"since": self.since, "limit": 1000, **params})
        resp.raise_for_status()
        return sorted(resp.json()["items"], key=lambda c: (c["started_at"], c["id"]))

    def wait_stored(self, n: int, timeout: float = 30.0, **params: Any) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(items := self.captures(**params)) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(items)} of {n} captures were stored after {timeout:.0f}s")
            time.sleep(0.2)
        return items

    def step_replay(self) -> str:
        rag = [c for c in self.wait_stored(len(self.rag), route="anythingllm", api="openai.chat") if not c["replay_of"]]
        # Order of sending: the 5 turns, the regenerate, the re-run.
        turns = rag[: len(RAG_TURNS)]
        self.ids |= {"turn1": turns[0]["id"], "turn2": turns[1]["id"], "turn5": turns[-1]["id"]}
        self.ids |= {"regenerate": rag[len(RAG_TURNS)]["id"], "rerun": rag[len(RAG_TURNS) + 1]["id"]}
        self.ids |= {"rag_thread": turns[0]["thread_id"], "template": turns[0]["prompt_template_id"]}
        # No cookies: the inspector treats a request carrying its cookies as a browser's and wants a CSRF token.
        self.http.cookies.clear()
        resp = self.http.post(f"{self.ui}/api/captures/{turns[1]['id']}/replay", json=REPLAY_CHANGES, timeout=60)
        if resp.status_code != 200:
            raise RuntimeError(f"replay API answered {resp.status_code}: {resp.text[:300]}")
        self.sent += 1
        self.ids["replay"] = resp.json()["id"]
        return f"turn 2 again with {', '.join(f'{k}={v}' for k, v in REPLAY_CHANGES.items())}"

    def links(self) -> list[tuple[str, str]]:
        """(label, URL) of the pages worth opening, once every capture is stored."""
        items = self.wait_stored(self.sent)
        ui = self.ui
        out = [("captures", f"{ui}/")]
        if "rag_thread" in self.ids:
            out.append(("AnythingLLM conversation (thread)", f"{ui}/threads/{self.ids['rag_thread']}"))
        agent = [c for c in items if c["route"] == "agent" and c["thread_id"]]
        if agent:
            out.append(("tool-calling agent (thread)", f"{ui}/threads/{agent[0]['thread_id']}"))
        failed = [c for c in items if c["outcome"] != "ok"]
        if failed:
            out.append(("failed request", f"{ui}/captures/{failed[0]['id']}"))
        claude = [c for c in items if c["route"] == "claude"]
        if claude:
            out.append(("Anthropic chat", f"{ui}/captures/{claude[-1]['id']}"))
        pairs = (
            ("turn2", "replay", "replay"),
            ("turn1", "rerun", "context changed"),
            ("turn5", "regenerate", "regenerated"),
        )
        for a, b, label in pairs:
            if a in self.ids and b in self.ids:
                out.append((f"diff: {label}", f"{ui}/diff?a={self.ids[a]}&b={self.ids[b]}"))
        if "template" in self.ids:
            out.append(("prompt template", f"{ui}/templates/{self.ids['template']}"))
        return [*out, ("templates", f"{ui}/templates"), ("stats", f"{ui}/stats")]

    def blame(self, diff_url: str) -> str:
        """The diff's headline, from the diff's JSON twin."""
        resp = self.http.get(diff_url.replace("/diff?", "/api/diff?"))
        return f"blame: {resp.json().get('blame')}" if resp.status_code == 200 else f"HTTP {resp.status_code}"

    def broken_pages(self, urls: Iterable[str]) -> list[str]:
        """Pages that do not answer 200: the demo doubles as a smoke test of the inspector."""
        out = []
        for url in urls:
            resp = self.http.get(url, headers={"accept": "text/html"})
            if resp.status_code != 200:
                out.append(f"{url} answered HTTP {resp.status_code}")
        return out

    def steps(self) -> list[tuple[str, Callable[[], str]]]:
        return [
            ("AnythingLLM RAG chat, 5 turns, streamed (route anythingllm)", self.step_rag_chat),
            ("AnythingLLM regenerates the last answer", self.step_regenerate),
            ("tool-calling agent (route agent)", self.step_agent),
            ("failed request", self.step_failure),
            ("Anthropic chat (route claude)", self.step_claude),
            ("same RAG question after the policy was re-ingested", self.step_rerun),
            ("replay through the inspector's API", self.step_replay),
        ]
