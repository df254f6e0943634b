"""AnythingLLM (v1.16.0) on the wire: its headers, its RAG system prompt and how it fills it.

Its Generic OpenAI client is openai-node 4.95.1, which sends its own ``x-stainless-*`` headers and
pretty-prints JSON bodies (``JSON.stringify(body, null, 2)`` in ``buildRequest``); AnythingLLM stops
reading a stream at the first chunk with a finish_reason, so it hangs up before ``data: [DONE]``
(``handleDefaultStreamResponseV2``). The sources, at those versions:
https://github.com/Mintplex-Labs/anything-llm/blob/v1.16.0/server/utils/helpers/chat/responses.js
https://github.com/Mintplex-Labs/anything-llm/blob/v1.16.0/server/package.json
https://github.com/openai/openai-node/blob/v4.95.1/src/core.ts
"""

from __future__ import annotations

from datetime import datetime

from prompttap.collector.demo.content import CHUNKS

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


def anythingllm_datetime(when: datetime) -> str:
    """moment's ``LLLL`` in English, as AnythingLLM fills ``{datetime}``: Friday, August 21, 2026 8:50 PM."""
    return f"{when:%A, %B} {when.day}, {when.year} {when.hour % 12 or 12}:{when:%M %p}"


def chunk_text(key: str) -> str:
    (source, published), text = CHUNKS[key]
    return f"<document_metadata>\nsourceDocument: {source}\npublished: {published}\n</document_metadata>\n\n{text}"


def rag_system_prompt(when: datetime, context: list[str]) -> str:
    blocks = "".join(f"[CONTEXT {i}]:\n{chunk_text(k)}\n[END CONTEXT {i}]\n\n" for i, k in enumerate(context))
    return SYSTEM_PROMPT.replace("{datetime}", anythingllm_datetime(when)) + "\nContext:\n" + blocks
