"""Thread inference: captures of one conversation share a thread id, others do not."""

from __future__ import annotations

import copy
import itertools
import json
import re
import uuid
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from prompttap.collector.apis.base import message
from prompttap.collector.apis.threads import (
    ThreadIndex,
    fingerprints,
    message_key,
    new_thread_id,
    output_message,
    session_thread_id,
)
from prompttap.schemas.templates import template_of

Msg = dict[str, Any]

ALLM_PROMPT = (
    "Given the following conversation, relevant context, and a follow up question, reply with an answer to "
    "the current question the user is asking. The current date and time is {datetime}. Return only your "
    "response to the question given the above information following the users instructions as needed."
)


def user(text: str) -> Msg:
    return message("user", text)


def assistant(text: str, calls: list[Msg] | None = None) -> Msg:
    return message("assistant", text, tool_calls=calls)


def tool(call_id: str, text: str, name: str | None = None) -> Msg:
    return message("tool", text, tool_call_id=call_id, name=name)


def call(call_id: str, name: str, args: dict[str, Any]) -> Msg:
    return {"id": call_id, "name": name, "arguments": json.dumps(args)}


def cid() -> str:
    return str(uuid.uuid4())


class Chat:
    """A client that re-sends its history, AnythingLLM style: the last ``window`` exchanges."""

    def __init__(self, index: ThreadIndex, route: str = "default", window: int | None = None) -> None:
        self.index, self.route, self.window = index, route, window
        self.history: list[Msg] = []
        self.threads: list[str] = []

    def request(self, text: str) -> list[Msg]:
        pairs = self.history
        if self.window is not None:
            pairs = pairs[max(0, len(pairs) - 2 * self.window) :]
        return [*copy.deepcopy(pairs), user(text)]

    def turn(self, text: str, answer: str, template_id: str = "tpl_a", session: str = "") -> str:
        out = assistant(answer)
        tid = self.index.assign(cid(), self.route, session, template_id, self.request(text), out)
        self.history += [user(text), assistant(answer.strip())]  # apps store the answer trimmed
        self.threads.append(tid)
        return tid


# --- AnythingLLM ----------------------------------------------------------------------------------


def allm_system(minute: int, contexts: list[str]) -> str:
    system = ALLM_PROMPT.replace("{datetime}", f"Friday, August 21, 2026 8:{minute:02d} PM")
    if contexts:
        system += "\nContext:\n" + "".join(
            f"[CONTEXT {i}]:\n{t}\n[END CONTEXT {i}]\n\n" for i, t in enumerate(contexts)
        )
    return system


def test_anythingllm_five_turns_with_sliding_history_are_one_thread() -> None:
    """Context changes every turn, history is cut to the last 2 exchanges from turn 4 on, the
    stored answer is re-sent without its trailing newline, and with its <think> block."""
    index = ThreadIndex()
    turns = [
        (
            "How many PTO days do I get?",
            "You get 25 days per year.\n",
            ["PTO: 25 days", "Carry-over: 5 days"],
        ),
        (
            "Can I carry them over?",
            "Yes, up to 5 days.\n\n",
            ["Carry-over: 5 days"],
        ),
        ("When is the office closed?", "On December 24 and 25.  ", ["Holidays: Dec 24-25", "PTO: 25 days"]),
        ("And expenses?", "Within 30 days.", ["Expenses: 30 days", "Travel: economy", "PTO", "Badges"]),
        ("Thanks!", "You're welcome.", []),
    ]
    history: list[Msg] = []
    threads, templates = [], []
    first_capture = ""
    for n, (question, answer, contexts) in enumerate(turns, start=1):
        kept = history if n < 4 else history[-4:]
        system = allm_system(40 + n, contexts)
        template = template_of(system).id
        capture = cid()
        first_capture = first_capture or capture
        messages = [message("system", system), *copy.deepcopy(kept), user(question)]
        threads.append(index.assign(capture, "anythingllm", "", template, messages, assistant(answer)))
        templates.append(template)
        # The API module reads reasoning_content apart from the answer; AnythingLLM re-sends it
        # inline as <think>...</think> (turn 2 reasoned).
        resent = ("<think>check the policy\n</think>" if n == 2 else "") + answer.strip()
        history += [user(question), assistant(resent)]
    assert len(set(templates)) == 1
    assert threads == [new_thread_id(first_capture)] * 5
    assert threads[0] == "thr_" + uuid.UUID(first_capture).hex


def test_reasoning_re_sent_inline_as_think_block() -> None:
    """The answer was read without its reasoning; the app re-sends "<think>...</think>answer"."""
    index = ThreadIndex()
    t1 = index.assign(cid(), "r", "", "tpl", [user("2+2?")], assistant("4"))
    resent = assistant("<think>\nadd the numbers\n</think>\n\n4")
    assert index.assign(cid(), "r", "", "tpl", [user("2+2?"), resent, user("3+3?")], assistant("6")) == t1


def test_anythingllm_compressed_history_joins_by_head_and_tail() -> None:
    """messageArrayCompressor cannonballs long messages: the middle is replaced by a marker."""
    index = ThreadIndex()
    long_answer = "Here is the full policy. " + " ".join(f"Clause {i} says something." for i in range(200))
    t1 = index.assign(cid(), "r", "", "tpl", [user("Summarize the policy")], assistant(long_answer))
    cut = long_answer[:300] + "\n\n--prompt truncated for brevity--\n\n" + long_answer[-300:]
    t2 = index.assign(
        cid(),
        "r",
        "",
        "tpl",
        [user("Summarize the policy"), assistant(cut), user("Shorter?")],
        assistant("Ok."),
    )
    assert t1 == t2


# --- separation ------------------------------------------------------------------------------------


def test_two_interleaved_conversations_same_route_and_template() -> None:
    index = ThreadIndex()
    a, b = Chat(index), Chat(index)
    for i in range(4):
        a.turn(f"alice question {i}", f"answer for alice {i}")
        b.turn(f"bob question {i}", f"answer for bob {i}")
    assert len(set(a.threads)) == 1 and len(set(b.threads)) == 1
    assert a.threads[0] != b.threads[0]


def test_same_user_messages_in_two_conversations_are_not_merged() -> None:
    index = ThreadIndex()
    a, b = Chat(index, window=1), Chat(index, window=1)
    a.turn("hi", "Hello! How can I help?")
    b.turn("hi", "Hi there, what do you need?")
    for question in ("what's the weather?", "and tomorrow?", "thanks"):
        a.turn(question, f"alice: {question} answered {uuid.uuid4()}")
        b.turn(question, f"bob: {question} answered {uuid.uuid4()}")
    assert len(set(a.threads)) == 1 and len(set(b.threads)) == 1
    assert a.threads[0] != b.threads[0]


def test_identical_first_turns_start_separate_threads() -> None:
    index = ThreadIndex()
    threads = {index.assign(cid(), "r", "", "tpl", [user("hi")], assistant("Hello!")) for _ in range(3)}
    assert len(threads) == 3


def test_shared_last_exchange_with_different_history_is_not_merged() -> None:
    index = ThreadIndex()
    a = [user("tell me a joke"), assistant("Why did the chicken..."), user("thanks")]
    b = [user("what is 2+2"), assistant("4"), user("thanks")]
    ta = index.assign(cid(), "r", "", "tpl", a, assistant("You're welcome!"))
    tb = index.assign(cid(), "r", "", "tpl", b, assistant("You're welcome!"))
    assert ta != tb
    # b continues: its history ends like a's, but disagrees one message earlier
    tb2 = index.assign(cid(), "r", "", "tpl", [*b, assistant("You're welcome!"), user("bye")], assistant("Bye"))
    assert tb2 == tb
    # a conversation we never saw, ending with the same exchange: only a's candidate is left,
    # and it disagrees one message before the shared exchange
    c = [user("weather?"), assistant("Sunny."), user("thanks"), assistant("You're welcome!"), user("bye")]
    assert index.assign(cid(), "r", "", "tpl", c, assistant("Bye")) not in (ta, tb)


def test_different_routes_are_never_merged() -> None:
    index = ThreadIndex()
    first = [user("hi")]
    t1 = index.assign(cid(), "route-a", "", "tpl", first, assistant("Hello"))
    t2 = index.assign(cid(), "route-b", "", "tpl", [*first, assistant("Hello"), user("more")], assistant("x"))
    t3 = index.assign(cid(), "route-a", "", "tpl", [*first, assistant("Hello"), user("more")], assistant("y"))
    assert t2 != t1
    assert t3 == t1


# --- regenerate, tools, formatting ---------------------------------------------------------------


def test_regenerate_joins_the_same_thread() -> None:
    index = ThreadIndex()
    chat = Chat(index)
    chat.turn("first", "first answer")
    request = chat.request("second")
    t1 = index.assign(cid(), "default", "", "tpl_a", request, assistant("second answer"))
    t2 = index.assign(cid(), "default", "", "tpl_a", copy.deepcopy(request), assistant("another second answer"))
    assert t1 == t2 == chat.threads[0]
    # the conversation continues from the regenerated answer
    t3 = index.assign(
        cid(),
        "default",
        "",
        "tpl_a",
        [*request, assistant("another second answer"), user("third")],
        assistant("3"),
    )
    assert t3 == t1


def test_tool_calling_agent_loop_is_one_thread() -> None:
    index = ThreadIndex()
    tools_out = [call("call_1", "rag-memory", {"action": "search", "content": "PTO"})]
    msgs = [message("system", "You are an agent."), user("How many PTO days?")]
    t1 = index.assign(cid(), "agent", "", "tpl", msgs, assistant("", tools_out))
    # openai-node re-sends the call with content null and compact JSON arguments
    resent = assistant("", [{**tools_out[0], "arguments": '{"action":"search","content":"PTO"}'}])
    resent["content"] = None
    msgs2 = [*msgs, resent, tool("call_1", "Additional context for query:\nPTO is 25 days.")]
    t2 = index.assign(cid(), "agent", "", "tpl", msgs2, assistant("You get 25 days."))
    msgs3 = [*msgs2, assistant("You get 25 days."), user("And sick days?")]
    more = [call("call_2", "rag-memory", {"action": "search", "content": "sick"})]
    t3 = index.assign(cid(), "agent", "", "tpl", msgs3, assistant("Let me check.", more))
    msgs4 = [*msgs3, assistant("Let me check.", more), tool("call_2", "10 sick days.")]
    t4 = index.assign(cid(), "agent", "", "tpl", msgs4, assistant("10 days."))
    assert t1 == t2 == t3 == t4


def test_agent_history_without_tool_traffic_still_joins() -> None:
    """AnythingLLM's agent stores only the question and the final answer; the next turn
    re-sends that, without the tool call and its result."""
    index = ThreadIndex()
    q = user("How many PTO days?")
    calls = [call("call_1", "rag-memory", {"action": "search", "content": "PTO"})]
    t1 = index.assign(cid(), "agent", "", "tpl", [q], assistant("", calls))
    msgs2 = [q, assistant("", calls), tool("call_1", "PTO is 25 days.")]
    t2 = index.assign(cid(), "agent", "", "tpl", msgs2, assistant("You get 25 days."))
    t3 = index.assign(
        cid(), "agent", "", "tpl", [q, assistant("You get 25 days."), user("And sick days?")], assistant("10.")
    )
    assert t1 == t2 == t3


def test_same_tool_call_in_two_conversations_is_told_apart_by_call_id() -> None:
    index = ThreadIndex()
    q = [user("weather in Paris?")]
    threads = []
    for call_id in ("call_a", "call_b"):
        out = assistant("", [call(call_id, "weather", {"city": "Paris"})])
        threads.append(index.assign(cid(), "r", "", "tpl", q, out))
    follow = [
        index.assign(
            cid(),
            "r",
            "",
            "tpl",
            [*q, assistant("", [call(call_id, "weather", {"city": "Paris"})]), tool(call_id, "sunny")],
            assistant("Sunny."),
        )
        for call_id in ("call_b", "call_a")
    ]
    assert follow == threads[::-1]


def test_rewritten_tool_call_ids_still_join() -> None:
    """Some clients (and Ollama, which has no ids) re-send calls under new ids."""
    index = ThreadIndex()
    q = [user("weather in Paris?")]
    t1 = index.assign(cid(), "r", "", "tpl", q, assistant("", [call("call_x", "weather", {"city": "Paris"})]))
    resent = assistant("", [call("tool_0", "weather", {"city": "Paris"})])
    t2 = index.assign(cid(), "r", "", "tpl", [*q, resent, tool("tool_0", "sunny")], assistant("Sunny."))
    assert t1 == t2


def test_content_as_parts_and_whitespace_differences() -> None:
    index = ThreadIndex()
    t1 = index.assign(cid(), "r", "", "tpl", [user("Describe  this\r\nimage")], assistant("A cat.\n\n"))
    as_parts = message("assistant", "", parts=[{"type": "text", "text": " A cat."}])
    user_parts = message("user", "Describe this image", parts=[{"type": "text", "text": "Describe this image"}])
    t2 = index.assign(cid(), "r", "", "tpl", [user_parts, as_parts, user("Its color?")], assistant("Orange."))
    assert t1 == t2


def test_images_are_part_of_the_message_identity() -> None:
    index = ThreadIndex()
    img = {"type": "image", "url": "data:image/png;base64,AAAA", "detail": "auto"}
    first = [message("user", "What is this?", parts=[img])]
    t1 = index.assign(cid(), "r", "", "tpl", first, assistant("A cat."))
    resent = [message("user", "What is this?", parts=[{**img, "detail": "high"}])]  # AnythingLLM: detail high
    t2 = index.assign(cid(), "r", "", "tpl", [*resent, assistant("A cat."), user("sure?")], assistant("Yes."))
    other = [message("user", "What is this?", parts=[{"type": "image", "url": "data:image/png;base64,BBBB"}])]
    t3 = index.assign(cid(), "r", "", "tpl", [*other, assistant("A cat."), user("sure?")], assistant("Yes."))
    assert t1 == t2
    assert t3 != t1


# --- templates -------------------------------------------------------------------------------------


def test_changed_template_needs_two_agreeing_exchanges() -> None:
    index = ThreadIndex()
    chat = Chat(index)
    chat.turn("q1", "a1", template_id="tpl_a")
    assert chat.turn("q2", "a2", template_id="tpl_b") != chat.threads[0]  # one exchange: not enough
    index = ThreadIndex()
    chat = Chat(index)
    chat.turn("q1", "a1", template_id="tpl_a")
    chat.turn("q2", "a2", template_id="tpl_a")
    assert chat.turn("q3", "a3", template_id="tpl_b") == chat.threads[0]  # user edited the system prompt


# --- sessions, response ids, missing captures ------------------------------------------------------


def test_session_header_wins() -> None:
    index = ThreadIndex()
    chat = Chat(index)
    t1 = chat.turn("hi", "hello", session="s-1")
    assert t1 == session_thread_id("default", "s-1")
    assert re.fullmatch(r"sess_[0-9a-f]{24}", t1)
    # a new session on the same history still gets its own thread
    t2 = index.assign(cid(), "default", "s-2", "tpl_a", chat.request("again"), assistant("x"))
    assert t2 == session_thread_id("default", "s-2") != t1
    # a later turn without the header continues the session's thread
    assert chat.turn("more", "sure") == t1
    assert session_thread_id("other-route", "s-1") != t1


def test_previous_response_id_chains_stateful_requests() -> None:
    index = ThreadIndex()
    t1 = index.assign(cid(), "r", "", "tpl", [user("hi")], assistant("hello"), response_id="resp_1")
    t2 = index.assign(cid(), "r", "", "tpl", [user("tell me more")], assistant("ok"), previous_response_id="resp_1")
    assert t1 == t2


def test_failed_turn_then_retry_joins_through_the_earlier_answer() -> None:
    index = ThreadIndex()
    chat = Chat(index)
    chat.turn("q1", "a1")
    request = chat.request("q2")
    t_err = index.assign(cid(), "default", "", "tpl_a", request, None)  # upstream error: no answer
    t_ok = index.assign(cid(), "default", "", "tpl_a", request, assistant("a2"))
    assert t_err == t_ok == chat.threads[0]


def test_unseen_previous_turn_joins_through_an_older_answer() -> None:
    index = ThreadIndex()
    chat = Chat(index)
    chat.turn("q1", "a1")
    chat.history += [user("q2"), assistant("a2 (capture lost)")]
    assert chat.turn("q3", "a3") == chat.threads[0]


def test_assign_is_idempotent_per_capture() -> None:
    index = ThreadIndex()
    capture = cid()
    t1 = index.assign(capture, "r", "", "tpl", [user("hi")], assistant("hello"))
    assert index.assign(capture, "r", "", "tpl", [user("hi")], assistant("hello")) == t1
    assert index.assign(capture, "r", "s", "tpl", [], None) == t1


def test_non_uuid_capture_id() -> None:
    assert re.fullmatch(r"thr_[0-9a-f]{32}", new_thread_id("not-a-uuid"))
    assert new_thread_id("a") != new_thread_id("b")


# --- restart -----------------------------------------------------------------------------------------


def test_warm_then_continue_after_restart() -> None:
    index = ThreadIndex()
    rows = []
    history: list[Msg] = []
    for i in range(3):
        messages = [message("system", "sys"), *history, user(f"q{i}")]
        capture = cid()
        answer = f"answer {i}"
        thread = index.assign(capture, "r", "", "tpl", messages, assistant(answer))
        rows.append(
            {
                "id": capture,
                "route": "r",
                "session_id": "",
                "prompt_template_id": "tpl",
                "messages": json.dumps(messages),  # as stored: JSON text
                "output_text": answer,
                "output_tool_calls": "[]",
                "thread_id": thread,
            }
        )
        history += [user(f"q{i}"), assistant(answer)]
    restarted = ThreadIndex()
    assert restarted.warm(rows) == 3
    t = restarted.assign(cid(), "r", "", "tpl", [*history, user("q3")], assistant("a3"))
    assert t == rows[0]["thread_id"]


def test_warm_assigns_rows_without_thread_id() -> None:
    rows = [
        {"id": cid(), "route": "r", "messages": [user("hi")], "output_message": assistant("hello")},
        {
            "id": cid(),
            "route": "r",
            "messages": [user("hi"), assistant("hello"), user("x")],
            "output_text": "y",
            "output_tool_calls": None,
        },
    ]
    index = ThreadIndex()
    index.warm(rows)
    t = index.assign(cid(), "r", "", "", [user("hi"), assistant("hello"), user("x"), assistant("y"), user("z")], None)
    assert t == new_thread_id(rows[0]["id"])


def test_index_is_bounded() -> None:
    index = ThreadIndex(max_keys=50)
    for i in range(200):
        index.assign(cid(), "r", "", "tpl", [user(f"q{i}")], assistant(f"a{i}"))
    assert len(index) <= 50


# --- helpers -----------------------------------------------------------------------------------------


def test_output_message_and_fingerprints() -> None:
    assert output_message("", []) is None
    out = output_message("hi", [{"id": "c", "name": "f", "arguments": "{}"}])
    assert out is not None and out["role"] == "assistant" and out["tool_calls"][0]["name"] == "f"
    assert len(fingerprints([message("system", "s"), user("a"), message("developer", "d")])) == 1
    assert message_key(assistant("x \n")) == message_key({"role": "model", "content": " x"})
    assert message_key(user("x")) != message_key(assistant("x"))


# --- property: random interleaved conversations ------------------------------------------------------

_USER_POOL = ["hi", "thanks", "what about tomorrow?", "and in Paris?", "ok", "why?"]


@st.composite
def conversations(draw: st.DrawFn) -> list[list[tuple[list[Msg], Msg | None]]]:
    """Per conversation, its requests in order, as (messages, output). Answers are unique (real
    model outputs practically are); user messages repeat across conversations on purpose."""
    uid = itertools.count()
    convs = []
    for _ in range(draw(st.integers(1, 5))):
        window = draw(st.sampled_from([None, 1, 2, 3]))
        style = draw(st.sampled_from(["plain", "trailing-space", "parts"]))
        keep_tools = draw(st.booleans())  # False: the app stores only questions and final answers
        history: list[Msg] = []
        requests: list[tuple[list[Msg], Msg | None]] = []

        def resend(m: Msg, style: str = style) -> Msg:
            m = copy.deepcopy(m)
            if style == "trailing-space" and m["content"]:
                m["content"] += "\n "
            elif style == "parts" and m["content"]:
                m["parts"] = [{"type": "text", "text": m["content"]}]
            return m

        def windowed(history: list[Msg] = history, window: int | None = window) -> list[Msg]:
            if window is None:
                return copy.deepcopy(history)
            starts = [i for i, m in enumerate(history) if m["role"] == "user"]
            return copy.deepcopy(history[starts[-window] :] if len(starts) > window else history)

        for _turn in range(draw(st.integers(1, 5))):
            kind = draw(st.sampled_from(["chat", "chat", "tool", "regen", "error"]))
            q = user(draw(st.sampled_from(_USER_POOL)))
            base = [message("system", f"ctx {next(uid)}"), *windowed(), q]
            if kind == "tool":
                c = call(f"call_{next(uid)}", draw(st.sampled_from(["search", "calc"])), {"q": q["content"]})
                first = assistant("", [c])
                result = tool(c["id"], f"result {draw(st.integers(0, 3))}")
                answer = assistant(f"answer {next(uid)}")
                requests += [(base, first), ([*base, resend(first), result], answer)]
                history += [q, resend(first), result, resend(answer)] if keep_tools else [q, resend(answer)]
                continue
            if kind == "regen" and history:
                requests.append((base, assistant(f"draft {next(uid)}")))
            elif kind == "error" and history:
                requests.append((base, None))
            answer = assistant(f"answer {next(uid)} {draw(st.sampled_from(['', 'ok', 'sure']))}")
            requests.append((base, answer))
            history += [q, resend(answer)]
        convs.append(requests)
    return convs


@settings(max_examples=300, deadline=None)
@given(conversations(), st.data())
def test_property_inference_recovers_the_true_threads(
    convs: list[list[tuple[list[Msg], Msg | None]]], data: st.DataObject
) -> None:
    labels = [c for c, reqs in enumerate(convs) for _ in reqs]
    order = data.draw(st.permutations(labels))
    restart_at = data.draw(st.integers(0, len(order)))
    index = ThreadIndex()
    rows: list[dict[str, Any]] = []
    seen: dict[int, int] = {}
    got: dict[int, set[str]] = {}
    for step, conv in enumerate(order):
        if step == restart_at:  # the drain restarts: rebuild from what was stored
            index = ThreadIndex()
            index.warm(rows)
        messages, out = convs[conv][seen.get(conv, 0)]
        seen[conv] = seen.get(conv, 0) + 1
        capture = cid()
        thread = index.assign(capture, "route", "", "tpl_same", messages, out)
        rows.append(
            {
                "id": capture,
                "route": "route",
                "session_id": "",
                "prompt_template_id": "tpl_same",
                "messages": messages,
                "output_message": out,
                "thread_id": thread,
            }
        )
        got.setdefault(conv, set()).add(thread)
    assert all(len(threads) == 1 for threads in got.values()), got
    assert len({next(iter(t)) for t in got.values()}) == len(got)
