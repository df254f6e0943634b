"""The inspector benchmark's captures: N synthetic captures generated inside ClickHouse
(``INSERT ... SELECT`` from ``numbers()``, in batches) into a fresh embedded store.

They spread over the last 30 days: six prompt templates (an AnythingLLM RAG prompt whose three context
blocks change every turn, a support bot with the date and plan, an IDE assistant with tools, an
Anthropic analyst with ``<documents>``, a summarizer, no system prompt) behind five routes and
eleven models; conversations of 1-6 turns whose history grows turn by turn (one thread each);
96% ok, the rest upstream errors, unreachable upstreams and cancelled clients; a third streamed
(SSE bodies and chunk timings). Text mixes common English with a Zipf-distributed 27,000-word
vocabulary, so the full-text index holds a realistic dictionary; three rare words are planted in
the last user message: ``quasarmint`` (1 in 100,000), ``zephyrlatch`` (1 in 10,000) and
``ochreventure`` (1 in 1,000).

``generate`` runs in a child process of ``inspector_bench.py`` (``--generate-into``).
"""

from __future__ import annotations

import json
import math
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from paths import REPO

RARE_WORDS = {"quasarmint": 100_000, "zephyrlatch": 10_000, "ochreventure": 1_000}
COMMON = (  # noqa: SIM905 - a word list reads better as text
    "the a to and of in is it you that for on with this be are not have can your please thanks order refund "
    "shipping delivery invoice account password login error payment card subscription plan upgrade cancel "
    "return package tracking address warehouse customer support ticket status update week today tomorrow "
    "report summary meeting budget forecast revenue market quarter product feature release bug crash test "
    "deploy server database query index table column cache latency timeout retry queue worker python java "
    "function class method variable import module file folder branch commit merge review document policy "
    "contract clause section paragraph source reference answer question explain describe compare list "
    "example detail reason because however therefore also only more less first last next previous"
).split()
SYLLABLES = (  # noqa: SIM905
    "ka lo mi ren tas vo zu pel dor fin gri hu jex kor lum nak ost pry qui ras sel tor ul vin wex yar zed bri cha dro"
).split()
VOCAB = len(SYLLABLES) ** 3
TEMPLATE_ROUTES = ["anythingllm", "default", "ide", "claude", "default", "ollama"]
TEMPLATE_APIS = ["openai.chat", "openai.chat", "openai.chat", "anthropic.messages", "openai.chat", "ollama.chat"]
TEMPLATE_PATHS = ["/v1/chat/completions"] * 3 + ["/v1/messages", "/v1/chat/completions", "/api/chat"]
TEMPLATE_MODELS = [
    ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini"],
    ["gpt-4o-mini", "gpt-4.1"],
    ["gpt-4.1", "o4-mini"],
    ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"],
    ["gpt-4o-mini"],
    ["llama3.2", "qwen2.5:7b"],
]
PRICES = {  # USD per million input / output tokens (ollama: local, no cost)
    "gpt-4o-mini": (0.15, 0.6),
    "gpt-4o": (2.5, 10.0),
    "gpt-4.1-mini": (0.4, 1.6),
    "gpt-4.1": (2.0, 8.0),
    "o4-mini": (1.1, 4.4),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-opus-4-1": (15.0, 75.0),
}
UPSTREAMS = [
    "http://litellm:4000/v1",
    "https://api.openai.com",
    "https://api.openai.com",
    "https://api.anthropic.com",
    "https://api.openai.com",
    "http://ollama:11434",
]
CLIENTS = ["AnythingLLM/1.8.4", "OpenAI/Python 1.54.0", "Continue/0.9.2", "Anthropic/Python 0.40.0"]
CLIENTS += ["OpenAI/Python 1.54.0", "ollama-python/0.4.4"]


def _lit(values: list[Any]) -> str:
    return "[" + ",".join(f"'{v}'" if isinstance(v, str) else _lit(v) for v in values) + "]"


def _hex(expr: str, width: int = 16) -> str:
    return f"lower(leftPad(hex({expr}), {width}, '0'))"


def _words(seed: str, salt: int, base: int, spread: int) -> str:
    """``base`` to ``base + spread`` words picked by hash of (seed, salt): a third common English,
    the rest Zipf-like from ``vocab`` (log-uniform rank), so a few words are everywhere and most rare."""
    word = (
        f"if(h % 3 = 0, common[1 + intDiv(h, 3) % {len(COMMON)}], "
        f"vocab[toUInt32(exp((intDiv(h, 3) % 1000003) / 1000003 * {math.log(VOCAB)}))])"
    )
    hashes = f"arrayMap(j -> cityHash64({seed}, {salt}, j), range({base} + cityHash64({seed}, {salt}) % {spread}))"
    return f"arrayStringConcat(arrayMap(h -> {word}, {hashes}), ' ')"


def _json_text(expr: str) -> str:
    """``expr`` as the inside of a JSON string (the generated text has quotes and newlines only)."""
    return f"replaceAll(replaceAll({expr}, '\"', '\\\\\"'), '\\n', '\\\\n')"


def generate_sql(start: int, count: int, rows: int, t0: datetime) -> str:
    step_us = max(1, int(30 * 86400 * 1e6 / rows))
    snippet_seed = "cseed * 8 + turn"  # RAG context changes every turn
    message = (
        """concat('{"role":"', if(i % 2 = 0, 'user', 'assistant'), '","content":"', """
        f"if(i % 2 = 0, {_words('cseed', 'i + 100', 6, 25)}, {_words('cseed', 'i + 100', 20, 40)}), "
        """if(i = 2 * turn - 2, rare, ''), '","parts":[],"tool_calls":[],"tool_call_id":null,"name":null}')"""
    )
    system = f"""multiIf(
        tpl = 0, concat('Given the following conversation, relevant context, and a follow up question, reply with an ',
            'answer to the current question the user is asking. Return only your response to the question given the ',
            'above information following the users instructions as needed.\\n\\nContext:\\n[CONTEXT 0]:\\n',
            {_words(snippet_seed, 11, 25, 40)}, '\\n[END CONTEXT 0]\\n\\n[CONTEXT 1]:\\n',
            {_words(snippet_seed, 12, 25, 40)}, '\\n[END CONTEXT 1]\\n\\n[CONTEXT 2]:\\n',
            {_words(snippet_seed, 13, 25, 40)}, '\\n[END CONTEXT 2]\\n'),
        tpl = 1, concat('You are the ACME support assistant. Today is ', toString(toDate(started_at)),
            '. The customer is on ',
            'the ', ['free', 'pro', 'enterprise'][1 + cseed % 3], ' plan. Be brief and polite; never promise refunds ',
            'above 500 EUR; escalate legal questions to a human.'),
        tpl = 2, concat('You are a coding assistant inside the editor. The open file is src/',
            vocab[1 + cseed % 2000], '/', vocab[1 + cseed % 3000], '.py (', toString(50 + cseed % 900), ' lines). ',
            'Prefer small diffs and explain each change in one sentence.'),
        tpl = 3, concat('You are a careful analyst. Use only the documents below and cite them by index.',
            '\\n<documents>\\n',
            '<document index="1">', {_words(snippet_seed, 21, 25, 40)}, '</document>\\n<document index="2">',
            {_words(snippet_seed, 22, 25, 40)}, '</document>\\n</documents>'),
        tpl = 4, concat('Summarize the following document in ', toString(3 + cseed % 5), ' bullet points for a busy ',
            'executive.'),
        '')"""
    tools = (
        '[{"name":"read_file","description":"Read a file of the workspace","parameters":{"type":"object",'
        '"properties":{"path":{"type":"string"}},"required":["path"]}}]'
    )
    models = _lit(TEMPLATE_MODELS)
    priced = list(PRICES)
    return f"""
INSERT INTO captures (id, trace_id, span_id, started_at, duration_ms, ttft_ms, route, method, path, upstream_url,
    status_code, outcome, error, request_headers, response_headers, request_body, response_body,
    request_body_encoding, response_body_encoding, request_size, response_size, request_sha256, response_sha256,
    stream_timing, client, session_id, user_id, tags, api, model, response_model, stream, params, system_prompt,
    messages, tools, output_text, output_tool_calls, finish_reason, response, response_id, input_tokens,
    output_tokens, cached_tokens, tokens_per_second, cost_usd, chunk_count, incomplete, thread_id,
    prompt_template_id, recorded_at)
WITH
    {_lit(COMMON)} AS common,
    {_lit(SYLLABLES)} AS syl,
    arrayMap(w -> concat(syl[1 + w % 30], syl[1 + intDiv(w, 30) % 30], syl[1 + intDiv(w, 900) % 30]),
        range({VOCAB})) AS vocab
SELECT
    toUUID(concat(substring(ms, 1, 8), '-', substring(ms, 9, 4), '-7', substring(r1, 1, 3), '-',
        ['8', '9', 'a', 'b'][1 + n % 4], substring(r1, 4, 3), '-', substring(r2, 1, 12))) AS id,
    concat({_hex("cityHash64(n, 11)")}, {_hex("cityHash64(n, 12)")}), {_hex("cityHash64(n, 13)")},
    started_at, duration_ms, ttft_ms, route, 'POST', path, concat(upstream, path), status_code, outcome, error,
    map('content-type', 'application/json', 'authorization', concat('Bearer ...', substring(r1, 5, 4)),
        'user-agent', client, 'accept', if(stream, 'text/event-stream', 'application/json')),
    map('content-type', if(stream, 'text/event-stream', 'application/json'), 'x-request-id', concat('req_', r2)),
    request_body, response_body, 'utf-8', 'utf-8', length(request_body), length(response_body),
    lower(hex(SHA256(request_body))), lower(hex(SHA256(response_body))),
    if(stream AND ok, arrayMap(i -> (toFloat32(ttft_ms + i * 24), toUInt32(80 + i % 40)), range(least(out_words, 400))),
        []),
    client, if(tpl = 1, concat('sess-', toString(cseed)), ''), concat('user', toString(cityHash64(cseed, 8) % 500)),
    multiIf(tpl = 0, ['rag'], tpl = 1, ['support', 'prod'], []), api, model, model, stream, params, system_prompt,
    messages, if(tpl = 2, '{tools}', '[]'), output_text, output_tool_calls,
    multiIf(NOT ok, '', output_tool_calls != '[]', 'tool_calls', 'stop'),
    if(ok, response_json, ''), if(ok, concat('chatcmpl-', r2), ''),
    if(ok, input_tokens, NULL), if(ok, output_tokens, NULL),
    if(ok AND tpl = 0 AND turn > 1, intDiv(input_tokens, 2), NULL),
    if(ok AND output_tokens > 0, output_tokens / (duration_ms / 1000), NULL),
    if(ok AND has({_lit(priced)}, model),
        (input_tokens * transform(model, {_lit(priced)}, {[p[0] for p in PRICES.values()]}, 0.0)
         + output_tokens * transform(model, {_lit(priced)}, {[p[1] for p in PRICES.values()]}, 0.0)) / 1e6, NULL),
    length(stream_timing_len), outcome = 'client_cancelled', thread_id, prompt_template_id,
    started_at + toIntervalMillisecond(toUInt64(duration_ms) + 40)
FROM (
    SELECT *,
        {_hex("toUInt64(toUnixTimestamp64Milli(started_at))", 12)} AS ms,
        if(stream AND ok, range(least(out_words, 400)), []) AS stream_timing_len,
        concat('{{"model":"', model, '",', if(stream, '"stream":true,', ''), '"temperature":0.2,"messages":[',
            if(system_prompt = '', '', concat('{{"role":"system","content":"', {_json_text("system_prompt")}, '"}},')),
            substring(messages, 2), '}}') AS request_body,
        concat('{{"id":"chatcmpl-', r2, '","object":"chat.completion","model":"', model, '","choices":[{{"index":0,',
            '"message":{{"role":"assistant","content":"', output_text, '"}},"finish_reason":"stop"}}],"usage":{{',
            '"prompt_tokens":', toString(input_tokens), ',"completion_tokens":', toString(output_tokens), '}}}}')
            AS response_json,
        multiIf(NOT ok, concat('{{"error":{{"message":"', error, '","type":"server_error"}}}}'),
            stream, concat(arrayStringConcat(arrayMap(w -> concat('data: {{"id":"chatcmpl-', r2,
                '","object":"chat.completion.chunk","choices":[{{"index":0,"delta":{{"content":"', w,
                ' "}}}}]}}\\n\\n'),
                splitByChar(' ', output_text))), 'data: [DONE]\\n\\n'),
            response_json) AS response_body
    FROM (
        SELECT *,
            concat('[', arrayStringConcat(arrayMap(i -> {message}, range(2 * turn - 1)), ','), ']') AS messages,
            {system} AS system_prompt,
            if(ok AND NOT (tpl = 2 AND h % 4 = 0), {_words("n", 200, 20, 90)}, '') AS output_text,
            if(ok AND tpl = 2 AND h % 4 = 0, concat('[{{"id":"call_', substring(r2, 1, 12), '","name":"read_file",',
                '"arguments":"{{\\\\"path\\\\":\\\\"src/', vocab[1 + cseed % 3000], '.py\\\\"}}"}}]'), '[]')
                AS output_tool_calls,
            length(splitByChar(' ', output_text)) AS out_words,
            toUInt32(60 + length(system_prompt) / 4 + length(messages) / 6) AS input_tokens,
            toUInt32(if(output_tool_calls != '[]', 18, out_words * 1.3)) AS output_tokens,
            concat('{{"temperature":', toString(round(0.1 * (cseed % 8), 1)), ',"max_tokens":1024',
                if(stream, ',"stream":true', ''), '}}') AS params
        FROM (
            SELECT *,
                {_lit(TEMPLATE_ROUTES)}[tpl + 1] AS route,
                {_lit(TEMPLATE_APIS)}[tpl + 1] AS api,
                {_lit(TEMPLATE_PATHS)}[tpl + 1] AS path,
                {_lit(UPSTREAMS)}[tpl + 1] AS upstream,
                {_lit(CLIENTS)}[tpl + 1] AS client,
                {models}[tpl + 1][1 + cityHash64(cseed, 4) % length({models}[tpl + 1])] AS model,
                tpl IN (0, 2) OR h % 3 = 0 AS stream,
                h % 1000 AS oc,
                multiIf(oc < 962, 'ok', oc < 985, 'upstream_error', oc < 995, 'upstream_unreachable',
                    'client_cancelled') AS outcome,
                outcome IN ('ok', 'client_cancelled') AS ok,
                multiIf(outcome = 'upstream_error', [429, 500, 400, 503][1 + intDiv(h, 1000) % 4],
                    outcome = 'upstream_unreachable', 502, 200) AS status_code,
                multiIf(outcome = 'upstream_error', concat('upstream answered ', toString(status_code)),
                    outcome = 'upstream_unreachable', 'ConnectError: [Errno 111] Connection refused',
                    outcome = 'client_cancelled', 'client disconnected before the response finished', '') AS error,
                round(180 + exp((intDiv(h, 7) % 10007) / 10007 * 9), 1) AS duration_ms,
                if(outcome = 'upstream_unreachable', NULL,
                    if(stream, round(90 + intDiv(h, 11) % 900 + duration_ms * 0.04, 1), duration_ms)) AS ttft_ms,
                toDateTime64('{t0:%Y-%m-%d %H:%M:%S}', 6, 'UTC')
                    + toIntervalMicrosecond(n * {step_us} + cityHash64(n, 5) % {step_us}) AS started_at,
                {_hex("cityHash64(n, 14)")} AS r1,
                {_hex("cityHash64(n, 15)")} AS r2,
                concat(if(cityHash64(n, 91) % {RARE_WORDS["quasarmint"]} = 0, ' quasarmint', ''),
                    if(cityHash64(n, 92) % {RARE_WORDS["zephyrlatch"]} = 0, ' zephyrlatch', ''),
                    if(cityHash64(n, 93) % {RARE_WORDS["ochreventure"]} = 0, ' ochreventure', '')) AS rare,
                if(in_conv, concat('thr_', {_hex("cityHash64(conv, 9)")}), concat('thr_', {_hex("cityHash64(n, 10)")}))
                    AS thread_id,
                if(tpl = 5, 'tpl_0000000000000000', concat('tpl_', {_hex("cityHash64('bench-template', tpl)")}))
                    AS prompt_template_id
            FROM (
                SELECT number AS n, intDiv(n, 6) AS conv, n % 6 AS pos, pos < 1 + cityHash64(conv, 1) % 6 AS in_conv,
                    if(in_conv, pos + 1, 1) AS turn, if(in_conv, conv, 1000000000 + n) AS cseed,
                    multiIf(cityHash64(conv, 2) % 10 < 4, 0, cityHash64(conv, 2) % 10 < 6, 1,
                        1 + cityHash64(conv, 2) % 10 - 5) AS tpl,
                    cityHash64(n, 3) AS h
                FROM numbers({start}, {count})
            )
        )
    )
)
"""


def generate(home: Path, rows: int, batch: int, optimize: bool) -> None:
    """Runs in a child process: the embedded store belongs to one process at a time."""
    sys.path.insert(0, str(REPO))
    from prompttap.schemas.store import migrate, open_store

    client = open_store(f"chdb://{(home / 'store').resolve()}")
    migrate(client)
    t0 = (datetime.now(UTC) - timedelta(days=30)).replace(microsecond=0, tzinfo=None)
    for start in range(0, rows, batch):
        client.command(generate_sql(start, min(batch, rows - start), rows, t0))
        print(json.dumps({"progress": min(start + batch, rows)}), flush=True)
    if optimize:
        client.command("OPTIMIZE TABLE captures FINAL")
    facts = {
        "rows": int(client.command("SELECT count() FROM captures")),
        "compressed_bytes": int(
            client.command("SELECT sum(data_compressed_bytes) FROM system.parts WHERE table = 'captures' AND active")
        ),
        "parts": int(client.command("SELECT count() FROM system.parts WHERE table = 'captures' AND active")),
        "rare": {
            w: int(client.command(f"SELECT countIf(hasToken(messages, '{w}')) FROM captures")) for w in RARE_WORDS
        },
    }
    print(json.dumps(facts), flush=True)
