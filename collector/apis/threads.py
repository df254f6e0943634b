"""Thread inference: which captures belong to one conversation.

Chat APIs are stateless, so a client re-sends the conversation every turn: turn n+1's
messages are turn n's messages (possibly with the oldest turns cut off) plus turn n's
answer plus the new user message or tool results. ``ThreadIndex`` remembers, for each
capture, a fingerprint of its last exchange (last request message + answer) and the tail
of its conversation; a later request whose history ends with that exchange and agrees with
that tail joins the capture's thread. The rules are in ``schemas/threads-and-templates.md``.

One drain worker calls ``assign`` sequentially, in capture order; the index is not
thread-safe and lives in memory (``warm`` rebuilds it from stored captures at startup).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prompttap.collector.apis.base import as_list

TAIL = 16
"""Messages of a capture's conversation kept for verification (and compared at most)."""
STRONG = 4
"""Agreeing trailing messages that are enough on their own: two full exchanges."""
_PER_KEY = 4  # captures kept per exchange key (identical exchanges in different conversations)

_SKIP_ROLES = frozenset({"system", "developer"})
_ROLE_ALIASES = {
    "model": "assistant",
    "ai": "assistant",
    "bot": "assistant",
    "human": "user",
    "function": "tool",
}
_UNTEXT_PARTS = frozenset({"text", "thinking", "reasoning", "redacted_thinking"})
# Keys that differ between an answer and the same message re-sent: ids, cache hints, detail.
_VOLATILE_KEYS = frozenset(
    {"id", "tool_call_id", "tool_use_id", "cache_control", "signature", "detail", "index", "citations"}
)
_NON_ALNUM = re.compile(r"[\W_]+")
_THINK = re.compile(r"<think(?:ing)?>.*?</think(?:ing)?>", re.S)


@dataclass(frozen=True, slots=True)
class _Fp:
    """One message's fingerprints: ``exact`` (normalized content) and ``loose`` (survives
    middle-truncation and formatting changes: role, head and tail of the alphanumerics)."""

    exact: int
    loose: int
    assistant: bool
    tooling: bool  # a tool call or a tool result: apps that store only final answers drop these


@dataclass(slots=True)
class _Ref:
    capture_id: str
    thread_id: str
    template_id: str
    tail: tuple[_Fp, ...]  # the capture's last TAIL messages, its answer last
    seq: int  # order of registration: later wins ties


class ThreadIndex:
    """In-memory, bounded (LRU) index from conversation fingerprints to threads."""

    def __init__(self, max_keys: int = 40_000) -> None:
        self.max_keys = max_keys
        self._keys: OrderedDict[int, list[_Ref]] = OrderedDict()
        self._captures: OrderedDict[str, str] = OrderedDict()  # capture id -> thread id (idempotence)
        self._responses: OrderedDict[str, str] = OrderedDict()  # upstream response id -> thread id
        self._seq = 0

    def assign(
        self,
        capture_id: str,
        route: str,
        session_id: str,
        template_id: str,
        messages: list[dict[str, Any]],
        output_message: dict[str, Any] | None,
        *,
        response_id: str = "",
        previous_response_id: str = "",
    ) -> str:
        """The thread of one capture; remembers the capture so later turns can join it.

        Calling it again for a capture id already assigned returns the same thread.
        """
        if capture_id in self._captures:
            self._captures.move_to_end(capture_id)
            return self._captures[capture_id]
        history = fingerprints(messages)
        thread_id = (
            session_thread_id(route, session_id)
            if session_id
            else self._responses.get(previous_response_id or "\0")
            or self._match(route, template_id, history)
            or new_thread_id(capture_id)
        )
        self._remember(capture_id, route, template_id, history, output_message, thread_id, response_id)
        return thread_id

    def remember(
        self,
        capture_id: str,
        route: str,
        template_id: str,
        messages: list[dict[str, Any]],
        output_message: dict[str, Any] | None,
        thread_id: str,
        response_id: str = "",
    ) -> None:
        """Index a capture whose thread is already known (used by ``warm``)."""
        if capture_id not in self._captures:
            self._remember(
                capture_id, route, template_id, fingerprints(messages), output_message, thread_id, response_id
            )

    def warm(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Rebuild from stored captures, oldest first. Each row has ``id``, ``route``,
        ``session_id``, ``prompt_template_id``, ``messages`` (list or JSON text),
        ``thread_id`` and either ``output_message`` or ``output_text`` +
        ``output_tool_calls``; optional ``response_id``. Rows without a thread id are
        assigned one. Returns the number of rows indexed."""
        count = 0
        for row in rows:
            messages = _json_list(row.get("messages"))
            out = row.get("output_message")
            if not isinstance(out, dict):
                out = output_message(str(row.get("output_text") or ""), _json_list(row.get("output_tool_calls")))
            args = (str(row.get("id") or ""), str(row.get("route") or ""))
            template_id = str(row.get("prompt_template_id") or "")
            if row.get("thread_id"):
                self.remember(
                    *args,
                    template_id,
                    messages,
                    out,
                    str(row["thread_id"]),
                    str(row.get("response_id") or ""),
                )
            else:
                self.assign(
                    *args,
                    str(row.get("session_id") or ""),
                    template_id,
                    messages,
                    out,
                    response_id=str(row.get("response_id") or ""),
                )
            count += 1
        return count

    def __len__(self) -> int:
        return len(self._keys)

    # --- internals ---------------------------------------------------------------------------

    def _match(self, route: str, template_id: str, history: list[_Fp]) -> str | None:
        """The thread of the most recent earlier answer this history continues, if any.

        Boundaries are tried from the newest assistant message backwards, so a request
        whose latest answer we never saw still joins through an earlier one.
        """
        for b in range(len(history), 0, -1):
            if not history[b - 1].assistant:
                continue
            for loose in (False, True):
                best: tuple[int, bool, int] | None = None
                thread = None
                for ref in self._keys_get(_exchange_key(route, history[max(0, b - 2) : b], loose)):
                    agreed = _agreement(history, b, ref.tail, loose)
                    same_template = ref.template_id == template_id
                    complete = agreed >= min(b, len(ref.tail))  # one is a suffix of the other
                    if not (complete or agreed >= STRONG) or not (same_template or agreed >= STRONG):
                        continue
                    score = (agreed, same_template, ref.seq)
                    if best is None or score > best:
                        best, thread = score, ref.thread_id
                if thread is not None:
                    return thread
        return None

    def _remember(
        self,
        capture_id: str,
        route: str,
        template_id: str,
        history: list[_Fp],
        out: dict[str, Any] | None,
        thread_id: str,
        response_id: str,
    ) -> None:
        _put(self._captures, capture_id, thread_id, self.max_keys)
        if response_id:
            _put(self._responses, response_id, thread_id, self.max_keys)
        if out is None:
            return  # no answer: nothing can continue this capture (a retry matches its predecessor)
        full = (*history, _fingerprint(out))
        tails = [full[-TAIL:]]
        if not full[-1].tooling and any(f.tooling for f in full):
            # Agents (AnythingLLM's among them) keep only the user's question and the final
            # answer in their history: the next turn re-sends the conversation without tool traffic.
            tails.append(tuple(f for f in full if not f.tooling)[-TAIL:])
        self._seq += 1
        for tail in tails:
            ref = _Ref(capture_id, thread_id, template_id, tail, self._seq)
            for loose in (False, True):
                key = _exchange_key(route, tail, loose)
                refs = [r for r in self._keys.pop(key, []) if r.thread_id != thread_id or r.tail != tail]
                self._keys[key] = [ref, *refs][:_PER_KEY]
                while len(self._keys) > self.max_keys:
                    self._keys.popitem(last=False)

    def _keys_get(self, key: int) -> list[_Ref]:
        refs = self._keys.get(key)
        if refs is None:
            return []
        self._keys.move_to_end(key)
        return refs


def session_thread_id(route: str, session_id: str) -> str:
    """Thread of an explicit session (X-Prompttap-Session): per route, so two apps that both
    send session "1" stay apart; query ``session_id`` to follow one across routes."""
    return "sess_" + hashlib.sha256(f"{route}\0{session_id}".encode()).hexdigest()[:24]


def new_thread_id(capture_id: str) -> str:
    """Thread started by a capture: its UUID's hex, or a hash of a non-UUID id."""
    try:
        return "thr_" + uuid.UUID(capture_id).hex
    except ValueError:
        return "thr_" + hashlib.sha256(capture_id.encode()).hexdigest()[:32]


def output_message(output_text: str, output_tool_calls: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """The answer as a normalized assistant message, None when there is no answer."""
    if not output_text and not output_tool_calls:
        return None
    return {
        "role": "assistant",
        "content": output_text,
        "parts": [],
        "tool_calls": list(output_tool_calls or []),
        "tool_call_id": None,
        "name": None,
    }


def fingerprints(messages: Iterable[Any]) -> list[_Fp]:
    """Fingerprints of the conversation messages (system/developer messages left out: they
    carry per-turn context and are the template's business)."""
    out = []
    for m in messages or ():
        if isinstance(m, Mapping) and _role(m) not in _SKIP_ROLES:
            out.append(_fingerprint(m))
    return out


def message_key(message: Mapping[str, Any]) -> str:
    """A message's exact fingerprint as hex (for callers that want to compare messages)."""
    return f"{_fingerprint(message).exact:016x}"


# --- fingerprints ----------------------------------------------------------------------------


def _fingerprint(m: Mapping[str, Any]) -> _Fp:
    role = _role(m)
    text = _text(m, role)
    parts = [
        _canon(p) for p in as_list(m.get("parts")) if isinstance(p, Mapping) and p.get("type") not in _UNTEXT_PARTS
    ]
    calls = [_call(c) for c in as_list(m.get("tool_calls")) if isinstance(c, Mapping)]
    # Exact: call ids included (unique per answer, so two conversations making the same call
    # stay apart); loose: names only, for clients that rewrite ids or reformat arguments.
    call_id = str(m.get("tool_call_id") or "")
    exact = _hash(role, text, *parts, "|", *(f"{i}:{n}({a})" for i, n, a in calls), "|", call_id)
    alnum = _NON_ALNUM.sub("", text.lower())
    if len(alnum) > 80:
        alnum = alnum[:40] + "…" + alnum[-40:]
    loose = _hash(role, alnum, *parts, "|", *(n for _, n, _ in calls))
    return _Fp(exact, loose, role == "assistant", role == "tool" or bool(calls))


def _role(m: Mapping[str, Any]) -> str:
    role = str(m.get("role") or "").strip().lower()
    return _ROLE_ALIASES.get(role, role)


def _text(m: Mapping[str, Any], role: str) -> str:
    content = m.get("content")
    if isinstance(content, list):  # raw provider parts slipped through: take their text
        content = "\n".join(str(p.get("text") or "") for p in content if isinstance(p, Mapping))
    text = content if isinstance(content, str) else ""
    if not text.strip():
        text = "\n".join(
            str(p.get("text") or "")
            for p in as_list(m.get("parts"))
            if isinstance(p, Mapping) and p.get("type") == "text"
        )
    if role == "assistant":  # apps re-send answers with the reasoning inlined (AnythingLLM: <think>)
        text = _THINK.sub(" ", text)
    return " ".join(unicodedata.normalize("NFC", text).split())


def _call(c: Mapping[str, Any]) -> tuple[str, str, str]:
    """(id, name, canonical arguments) of a tool call, raw OpenAI shape accepted too."""
    fn = c.get("function") if isinstance(c.get("function"), Mapping) else c
    name = str(fn.get("name") or "")
    args: Any = fn.get("arguments", fn.get("input", ""))
    if isinstance(args, str):
        s = args.strip()
        try:
            args = json.loads(s) if s else {}
        except ValueError:
            return str(c.get("id") or ""), name, " ".join(s.split())
    return (
        str(c.get("id") or ""),
        name,
        json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
    )


def _canon(part: Mapping[str, Any]) -> str:
    return json.dumps(
        {k: v for k, v in part.items() if k not in _VOLATILE_KEYS},
        sort_keys=True,
        ensure_ascii=False,
        default=str,
    )


def _exchange_key(route: str, seq: tuple[_Fp, ...] | list[_Fp], loose: bool) -> int:
    """Key of a conversation's last exchange: the last request message and the answer."""
    pick = (lambda f: f.loose) if loose else (lambda f: f.exact)
    before = str(pick(seq[-2])) if len(seq) >= 2 else ""
    return _hash("~" if loose else "=", route, before, str(pick(seq[-1])))


def _agreement(history: list[_Fp], end: int, tail: tuple[_Fp, ...], loose: bool) -> int:
    """How many trailing messages ``history[:end]`` and ``tail`` share."""
    n = 0
    while n < end and n < len(tail):
        a, b = history[end - 1 - n], tail[-1 - n]
        if a.exact != b.exact and not (loose and a.loose == b.loose):
            break
        n += 1
    return n


def _hash(*parts: str) -> int:
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        h.update(p.encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return int.from_bytes(h.digest(), "big")


def _json_list(v: Any) -> list[Any]:
    if isinstance(v, str):
        try:
            v = json.loads(v) if v else []
        except ValueError:
            return []
    return v if isinstance(v, list) else []


def _put(d: OrderedDict[str, str], key: str, value: str, limit: int) -> None:
    d[key] = value
    d.move_to_end(key)
    while len(d) > limit:
        d.popitem(last=False)
