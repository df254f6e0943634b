"""Prompt template fingerprints: per-request values masked, instructions kept."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prompttap.schemas.templates import NO_SYSTEM_PROMPT_ID, context_blocks, normalize, template_of

# --- AnythingLLM (see /work/shared/reference/anythingllm.md §2) -------------------------------

ALLM_DEFAULT = (
    "Given the following conversation, relevant context, and a follow up question, reply with an answer"
    " to the "
    "current question the user is asking. The current date and time is {datetime}. Return only your"
    " response to "
    "the question given the above information following the users instructions as needed."
)


def allm_chunk(doc: str, published: str, text: str, source: str = "") -> str:
    """A stored chunk as TextSplitter.stringifyHeader writes it."""
    src = f"source: {source}\n" if source else ""
    header = f"<document_metadata>\nsourceDocument: {doc}\npublished: {published}\n{src}</document_metadata>"
    return f"{header}\n\n{text}"


def allm_system(datetime: str, contexts: list[str], prompt: str = ALLM_DEFAULT, memories: list[str] = ()) -> str:
    """chatPrompt + promptWithMemories + appendContext, exactly as constructPrompt joins them."""
    system = prompt.replace("{datetime}", datetime)
    if memories:
        system += "\n\n## Things I Remember About You\n" + "\n".join(f"- {m}" for m in memories)
    if contexts:
        system += "\nContext:\n" + "".join(
            f"[CONTEXT {i}]:\n{t}\n[END CONTEXT {i}]\n\n" for i, t in enumerate(contexts)
        )
    return system


PTO = allm_chunk(
    "pto-policy-2026.docx",
    "1/5/2026, 4:03:09 PM",
    "Full-time employees accrue 25 days of paid time off per year.\n\nUp to 5 unused days carry over to 2027.",
)
HOLIDAYS = allm_chunk("holidays.pdf", "1/5/2026, 4:03:12 PM", "The office is closed on December 24 and 25.")
EXPENSES = allm_chunk(
    "expenses.md",
    "2/11/2026, 9:15:00 AM",
    "# Expenses\nSubmit receipts within 30 days at https://intranet.acme.example/expenses.",
    source="https://intranet.acme.example/docs/expenses",
)
TRAVEL = allm_chunk("travel.md", "2/11/2026, 9:15:01 AM", "Given the context of travel, book economy. Question: who?")


def test_anythingllm_context_date_and_snippet_count_do_not_change_the_id() -> None:
    prompts = [
        allm_system("Friday, August 21, 2026 8:50 PM", [PTO, HOLIDAYS]),
        allm_system("Friday, August 21, 2026 8:51 PM", [EXPENSES, PTO, TRAVEL, HOLIDAYS]),
        allm_system("Monday, November 2, 2026 11:05 AM", [TRAVEL]),
        allm_system("Monday, November 2, 2026 11:05 AM", []),  # chat mode, nothing found
    ]
    ids = {template_of(p).id for p in prompts}
    assert len(ids) == 1
    assert re.fullmatch(r"tpl_[0-9a-f]{16}", ids.pop())


def test_anythingllm_masked_text_and_variables() -> None:
    t = template_of(allm_system("Friday, August 21, 2026 8:50 PM", [PTO, HOLIDAYS]))
    assert t.masked == (
        ALLM_DEFAULT.replace("{datetime}", "{{date}} {{time}}") + "\nContext:\n{{context}}"
    )  # both snippets collapse into one placeholder
    assert t.variables == [
        ("date", "Friday, August 21, 2026"),
        ("time", "8:50 PM"),
        ("context", PTO),
        ("context", HOLIDAYS),
    ]


def test_anythingllm_context_blocks_in_order() -> None:
    blocks = [EXPENSES, PTO, TRAVEL, HOLIDAYS]
    assert context_blocks(allm_system("Friday, August 21, 2026 8:50 PM", blocks)) == blocks
    assert context_blocks(allm_system("Friday, August 21, 2026 8:50 PM", [])) == []


def test_anythingllm_changed_instruction_changes_the_id() -> None:
    base = template_of(allm_system("Friday, August 21, 2026 8:50 PM", [PTO]))
    custom = ALLM_DEFAULT + " Always answer in French."
    changed = template_of(allm_system("Friday, August 21, 2026 8:50 PM", [PTO], prompt=custom))
    assert changed.id != base.id
    assert "Always answer in French." in changed.masked
    edited = ALLM_DEFAULT.replace("Return only your response", "Return a short response")
    assert template_of(allm_system("Friday, August 21, 2026 8:50 PM", [PTO], prompt=edited)).id != base.id


def test_anythingllm_memories_are_a_variable() -> None:
    a = allm_system("Friday, August 21, 2026 8:50 PM", [PTO], memories=["Lives in Lyon", "Prefers short answers"])
    b = allm_system("Friday, August 21, 2026 8:52 PM", [HOLIDAYS], memories=["Prefers short answers"])
    c = allm_system("Friday, August 21, 2026 8:52 PM", [HOLIDAYS])
    assert template_of(a).id == template_of(b).id == template_of(c).id
    ta = template_of(a)
    assert "{{memories}}" in ta.masked
    assert [v for k, v in ta.variables if k == "memory"] == ["Lives in Lyon", "Prefers short answers"]
    assert context_blocks(a) == [PTO]


def test_anythingllm_compressed_context_with_lost_markers() -> None:
    """messageArrayCompressor re-joins as prompt + "\\nContext: " + cannonballed context, whose
    middle (and the markers in it) may be gone."""
    prompt = ALLM_DEFAULT.replace("{datetime}", "Friday, August 21, 2026 8:50 PM")
    context = (
        f"\n[CONTEXT 0]:\n{PTO}\n[END CONTEXT 0]\n\n[CONTEXT 1]:\nThe office is clo"
        "\n\n--prompt truncated for brevity--\n\n"
        "ses early.\n[END CONTEXT 2]\n\n[CONTEXT 3]:\nTail of the last snip"
    )
    compressed = prompt + "\n" + "\nContext: " + context
    t = template_of(compressed)
    assert t.id == template_of(allm_system("Friday, August 21, 2026 8:50 PM", [PTO, HOLIDAYS])).id
    blocks = context_blocks(compressed)
    assert blocks[0] == PTO
    assert blocks[-1] == "Tail of the last snip"
    assert "truncated" not in t.masked


# --- LangChain / LlamaIndex / hand-written RAG layouts ----------------------------------------

DOCS_A = [
    "Employees get 25 days of PTO per year. See https://hr.acme.example/pto for details.",
    "The Paris office (12 rue de Rivoli) opens at 9:00 AM and closes at 6 PM.",
]
DOCS_B = [
    "Expense reports are due within 30 days, i.e. by 2026-12-25.",
    "Travel must be booked 14 days ahead.\n\nEconomy class only for flights under 6 hours.",
    "Security badges are issued by facilities@acme.example on 3/4/2026.",
    "Laptops are replaced every 3 years.",
]


def _join(docs: list[str], sep: str = "\n\n") -> str:
    return sep.join(docs)


def _llamaindex_nodes(docs: list[str]) -> str:
    # LlamaIndex formats each node as "{metadata_str}\n\n{content}" and joins them with "\n\n".
    return "\n\n".join(f"file_path: /data/doc{i}.md\n\n{d}" for i, d in enumerate(docs))


def _anthropic_documents(docs: list[str]) -> str:
    return "\n".join(
        f'<document index="{i + 1}">\n<source>doc{i}.md</source>\n'
        f"<document_content>\n{d}\n</document_content>\n</document>"
        for i, d in enumerate(docs)
    )


LAYOUTS = {
    # langchain.chains.question_answering.stuff_prompt.prompt_template
    "langchain-stuff": (
        "Use the following pieces of context to answer the question at the end. If you don't know the"
        " answer, "
        "just say that you don't know, don't try to make up an answer.\n\n{context}\n\nQuestion: {question}\n"
        "Helpful Answer:",
        _join,
    ),
    # langchain stuff_prompt.system_template (chat models)
    "langchain-stuff-chat": (
        "Use the following pieces of context to answer the user's question. \nIf you don't know the"
        " answer, just "
        "say that you don't know, don't try to make up an answer.\n----------------\n{context}",
        _join,
    ),
    # create_retrieval_chain tutorial system prompt
    "langchain-retrieval-chain": (
        "You are an assistant for question-answering tasks. Use the following pieces of retrieved"
        " context to answer "
        "the question. If you don't know the answer, say that you don't know. Use three sentences"
        " maximum and keep "
        "the answer concise.\n\n{context}",
        _join,
    ),
    # hub rlm/rag-prompt
    "rlm-rag-prompt": (
        "You are an assistant for question-answering tasks. Use the following pieces of retrieved"
        " context to answer "
        "the question. If you don't know the answer, just say that you don't know. Use three sentences"
        " maximum and "
        "keep the answer concise.\nQuestion: {question} \nContext: {context} \nAnswer:",
        _join,
    ),
    "langchain-lcel-basic": (
        "Answer the question based only on the following context:\n{context}\n\nQuestion: {question}\n",
        _join,
    ),
    # llama_index DEFAULT_TEXT_QA_PROMPT_TMPL
    "llamaindex-text-qa": (
        "Context information is below.\n---------------------\n{context}\n---------------------\nGiven"
        " the context "
        "information and not prior knowledge, answer the query.\nQuery: {question}\nAnswer: ",
        _llamaindex_nodes,
    ),
    # llama_index ContextChatEngine DEFAULT_CONTEXT_TEMPLATE
    "llamaindex-context-chat": (
        "The following is a friendly conversation between a user and an AI assistant.\nThe assistant is"
        " talkative "
        "and provides lots of specific details from its context.\nIf the assistant does not know the"
        " answer to a "
        "question, it truthfully says it\ndoes not know.\n\nHere are the relevant documents for the"
        " context:\n\n"
        "{context}\n\nInstruction: Based on the above documents, provide a detailed answer for the user"
        " question "
        'below.\nAnswer "don\'t know" if not present in the document.',
        _llamaindex_nodes,
    ),
    # llama_index CondensePlusContextChatEngine (indented triple-quoted template)
    "llamaindex-condense-plus-context": (
        "\n  The following is a friendly conversation between a user and an AI assistant.\n  The"
        " assistant is "
        "talkative and provides lots of specific details from its context.\n  If the assistant does not"
        " know the "
        "answer to a question, it truthfully says it\n  does not know.\n\n  Here are the relevant"
        " documents for the "
        "context:\n\n  {context}\n\n  Instruction: Based on the above documents, provide a detailed"
        " answer for the "
        'user question below.\n  Answer "don\'t know" if not present in the document.\n  ',
        _llamaindex_nodes,
    ),
    "xml-documents": (
        "You are ACME's HR assistant.\n\n<documents>\n{context}\n</documents>\n\nAnswer only from the"
        " documents "
        "and quote them.",
        _anthropic_documents,
    ),
    "xml-bare-documents": (
        "You are ACME's HR assistant.\n\n{context}\n\nAnswer only from these.",
        _anthropic_documents,
    ),
    "xml-documents-with-rules": (
        "You are ACME's HR assistant.\n\n{context}\n\nAnswer only from these.",
        lambda docs: _anthropic_documents(docs).replace("</document>\n", "</document>\n---\n"),
    ),
    # a custom LlamaIndex QA template: only the closing rule line ends the context
    "llamaindex-custom-qa": (
        "We have provided context information below. \n---------------------\n{context}\n---------------------\n"
        "Given this information, please answer the question.\nRender the answer in Markdown.\n",
        _llamaindex_nodes,
    ),
    "context-tag": (
        "Answer the user. Use the context when it helps.\n<context>\n{context}\n</context>\nBe brief.",
        _join,
    ),
    "markdown-dash-list": (
        "You help ACME staff.\n\n## Context\n{context}\n\n## Rules\n- Cite the snippet you used.\n- Be brief.",
        lambda docs: _join(docs, "\n---\n"),
    ),
}


def _render(layout: str, docs: list[str], question: str = "How many PTO days do I get?") -> str:
    template, fmt = LAYOUTS[layout]
    return template.replace("{context}", fmt(docs)).replace("{question}", question)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_rag_layout_context_does_not_change_the_id(layout: str) -> None:
    a = template_of(_render(layout, DOCS_A))
    b = template_of(_render(layout, DOCS_B, question="When are expense reports due?"))
    empty = template_of(_render(layout, []))
    assert a.id == b.id == empty.id, (a.masked, b.masked)
    assert a.masked.count("{{context}}") == 1
    assert "25 days" not in a.masked and "PTO" not in a.masked


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_rag_layout_instructions_survive_masking(layout: str) -> None:
    masked = " ".join(template_of(_render(layout, DOCS_B)).masked.split())
    for line in LAYOUTS[layout][0].split("\n"):
        if line.strip() and "{" not in line:
            assert " ".join(line.split()) in masked


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_rag_layout_snippets_are_kept_separately(layout: str) -> None:
    blocks = context_blocks(_render(layout, DOCS_B))
    text = "\n".join(blocks)
    for doc in DOCS_B:
        for paragraph in doc.split("\n\n"):
            assert paragraph in text
    assert len(blocks) >= len(DOCS_B)
    assert len(context_blocks(_render(layout, DOCS_A))) >= len(DOCS_A)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_rag_layout_changed_instruction_changes_the_id(layout: str) -> None:
    template, fmt = LAYOUTS[layout]
    first_words = template.split()[:3]
    edited = template.replace(" ".join(first_words), " ".join(first_words) + " politely", 1)
    assert edited != template
    rendered = edited.replace("{context}", fmt(DOCS_A)).replace("{question}", "q")
    assert template_of(rendered).id != template_of(_render(layout, DOCS_A)).id


def test_llamaindex_nodes_split_on_their_metadata_header() -> None:
    blocks = context_blocks(_render("llamaindex-text-qa", DOCS_B))
    assert blocks == [f"file_path: /data/doc{i}.md\n\n{d}" for i, d in enumerate(DOCS_B)]


def test_xml_documents_keep_each_element() -> None:
    blocks = context_blocks(_render("xml-documents", DOCS_A))
    assert len(blocks) == 2
    assert blocks[0].startswith('<document index="1">') and DOCS_A[0] in blocks[0]


def test_inlined_question_is_masked() -> None:
    t = template_of(_render("llamaindex-text-qa", DOCS_A, question="How many PTO days in 2026?"))
    assert ("question", "How many PTO days in 2026?") in t.variables
    assert "Query: {{question}}" in t.masked


def test_trailing_instruction_after_context_is_kept() -> None:
    t = template_of(_render("llamaindex-context-chat", DOCS_A))
    assert t.masked.endswith(
        "{{context}}\n\nInstruction: Based on the above documents, provide a detailed answer for the"
        " user question "
        'below.\nAnswer "don\'t know" if not present in the document.'
    )


# --- scalar masks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("Today is 2026-11-25.", "Today is {{date}}."),
        ("Now: 2026-11-25T08:01:02Z.", "Now: {{datetime}}."),
        ("Now: 2026-11-25 08:01:02.123+01:00", "Now: {{datetime}}"),
        ("Date: November 25, 2026", "Date: {{date}}"),
        ("Date: Wednesday, November 25, 2026 at 8:01 AM", "Date: {{date}} at {{time}}"),
        ("Date: Wed, 25 Nov 2026 08:01 UTC", "Date: {{date}} {{time}}"),
        ("Date: 25th of November 2026", "Date: {{date}}"),
        ("Date: 25/11/2026 or 11/25/26 or 25.11.2026", "Date: {{date}} or {{date}} or {{date}}"),
        ("Cutoff: January 2025.", "Cutoff: {{date}}."),
        ("At 14:05:09 CET or 9 p.m. sharp", "At {{time}} or {{time}} sharp"),
        (
            "You have 1,250 credits and 3.5 GB left (42%).",
            "You have {{number}} credits and {{number}} GB left ({{number}}%).",
        ),
        ("Request 123e4567-e89b-12d3-a456-426614174000.", "Request {{uuid}}."),
        ("Trace 4bf92f3577b34da6a3ce929d0e0e4736 span 00f067aa0ba902b7", "Trace {{hex}} span {{hex}}"),
        ("Write to alice.smith+ai@example.co.uk.", "Write to {{email}}."),
        ("Docs: https://docs.example.com/a/b?x=1&y=2#top.", "Docs: {{url}}."),
        ("1. Be brief.\n2. Cite sources.", "1. Be brief.\n2. Cite sources."),
        ("Use gpt-4o or claude-3-5-sonnet.", "Use gpt-4o or claude-{{number}}-{{number}}-sonnet."),
    ],
)
def test_scalar_masks(text: str, masked: str) -> None:
    assert template_of(text).masked == masked


def test_variables_keep_order_and_original_text() -> None:
    t = template_of("User 42 (bob@example.com) joined on 2026-01-02 at 10:30 AM.")
    assert t.variables == [
        ("number", "42"),
        ("email", "bob@example.com"),
        ("date", "2026-01-02"),
        ("time", "10:30 AM"),
    ]


def test_words_that_look_like_months_or_hex_are_kept() -> None:
    text = "You may decide. Marketing in March is facade-free; the decade is deadbeef."
    assert template_of(text).masked == text


# --- whitespace and empty prompts --------------------------------------------------------------


def test_whitespace_does_not_change_the_id() -> None:
    base = "You are a helpful assistant.\nBe concise.\n\nToday is 2026-11-25."
    variants = [
        base.replace("\n", "\r\n"),
        base.replace("\n", "   \n") + "  \n\n",
        "\n\n" + base,
        base.replace("Be concise.", "Be  concise.").replace("\n\n", "\n\n\n"),
        base.replace("2026-11-25", "2027-01-01"),
    ]
    assert {template_of(v).id for v in variants} == {template_of(base).id}
    assert template_of(base.replace("\n", "\r\n") + "  ").masked == template_of(base).masked


def test_unicode_normalization() -> None:
    assert template_of("Réponds en français.").id == template_of("Re\u0301ponds en franc\u0327ais.").id


@pytest.mark.parametrize("empty", ["", "   ", "\r\n\n", "\t"])
def test_empty_system_prompt(empty: str) -> None:
    t = template_of(empty)
    assert t.id == NO_SYSTEM_PROMPT_ID
    assert t.masked == "" and t.variables == []
    assert context_blocks(empty) == []


def test_different_prompts_get_different_ids() -> None:
    ids = {template_of(p).id for p in ("You are a pirate.", "You are a poet.", "You are a pirate!", "")}
    assert len(ids) == 4


def test_non_rag_prompt_keeps_its_instructions() -> None:
    """An announcement-like sentence that is not followed by retrieved text masks nothing."""
    prompt = ALLM_DEFAULT.replace("{datetime}", "today") + "\n\nAlways answer in French."
    t = template_of(prompt)
    assert t.masked == prompt
    assert context_blocks(prompt) == []


# --- properties ----------------------------------------------------------------------------------

_snippet_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="[]\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"),
    min_size=1,
    max_size=60,
).filter(lambda s: s.strip())


@settings(max_examples=150, deadline=None)
@given(
    st.lists(_snippet_text, max_size=6),
    st.lists(_snippet_text, max_size=6),
    st.integers(0, 59),
    st.integers(1, 28),
)
def test_property_anythingllm_id_ignores_context_and_time(
    first: list[str], second: list[str], minute: int, day: int
) -> None:
    a = allm_system(f"Friday, August {day}, 2026 8:{minute:02d} PM", first)
    b = allm_system("Monday, March 2, 2026 11:05 AM", second)
    assert template_of(a).id == template_of(b).id
    assert context_blocks(a) == [normalize(s) for s in first]


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10**9), st.floats(0, 1e6, allow_nan=False), st.dates())
def test_property_numbers_and_dates_do_not_change_the_id(n: int, x: float, d: object) -> None:
    base = "You are a shop bot. Stock: 17 items, price 3.50 EUR. Today is 2026-11-25."
    other = base.replace("17", str(n)).replace("3.50", f"{x:.2f}").replace("2026-11-25", str(d))
    assert template_of(other).id == template_of(base).id
