"""The demo's scripted traffic, sent through the prompttap proxy like real apps would send it.

``Script`` runs the steps (an AnythingLLM RAG chat, a tool-calling agent, a failed request, an
Anthropic chat, a re-run and a replay) and then checks the inspector's pages. What the apps say is
in ``content.py``; AnythingLLM's wire shape in ``anythingllm.py``; the OpenAI and Anthropic clients
in ``clients.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from prompttap.collector.demo.anythingllm import (
    ANYTHINGLLM_CHAT_HEADERS,
    ANYTHINGLLM_EMBED_HEADERS,
    HISTORY_WINDOW,
    TOP_N,
    rag_system_prompt,
)
from prompttap.collector.demo.clients import AnthropicChat, OpenAIChat, sse_data
from prompttap.collector.demo.content import (
    AGENT_MODEL,
    AGENT_SYSTEM,
    AGENT_TOOLS,
    CLAUDE_MODEL,
    CLAUDE_SYSTEM,
    FAILING_MODEL,
    RAG_MODEL,
    RAG_TURNS,
    REPLAY_CHANGES,
    RERUN_HITS,
    TOOL_RESULTS,
)


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
