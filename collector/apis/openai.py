"""OpenAI APIs. Each endpoint is read by its own module, all pure functions from an
``Exchange`` to an ``Understanding`` that never raise (a failure becomes ``parse_error``
and whatever was understood before it is kept):

- ``openai_chat``: chat completions and legacy completions (stream chunks rebuilt by
  ``openai_chunks``);
- ``openai_responses``: the Responses API;
- this module: embeddings and model listings, which have no conversation to normalize;
- shared: ``openai_content`` (message content, tool calls, tool definitions in the
  normalized shape) and ``openai_common`` (request fields, response kind, stream events,
  timing, price).
"""

from __future__ import annotations

import re
from typing import Any

from prompttap.collector.apis.base import Exchange, Understanding, as_dict, as_str, load_json
from prompttap.collector.apis.openai_common import PROVIDER, count, read_request, response_json, response_kind, run
from prompttap.collector.apis.openai_content import input_messages
from prompttap.collector.apis.pricing import cost_usd

EMBEDDINGS_PARAMS = ("encoding_format", "dimensions", "user")


def understand_embeddings(x: Exchange) -> Understanding:
    """``POST /v1/embeddings``: one user message per input text.

    ``response`` is the response JSON with the vectors dropped: each ``data`` item keeps
    its other fields and gains ``dimensions`` (float count; base64 vectors are float32).
    """
    return run("openai.embeddings", x, _embeddings)


def understand_models(x: Exchange) -> Understanding:
    """``GET /v1/models`` (and ``/v1/models/{id}``): ``response`` is the listing."""
    return run("openai.models", x, _models)


def _embeddings(x: Exchange, u: Understanding, notes: list[str]) -> None:
    req = read_request(x, u, notes, EMBEDDINGS_PARAMS)
    u.messages = input_messages(req.get("input"))
    kind = response_kind(x, u, notes)
    if kind == "sse":
        notes.append("response: unexpected event stream")
    elif kind == "json":
        resp = response_json(x, notes)
        if resp is not None:
            u.response = _slim_embeddings(resp)
            u.response_model = as_str(resp.get("model"))
            u.input_tokens = count(as_dict(resp.get("usage")).get("prompt_tokens"))
    # Embeddings produce no output tokens by definition: 0 here is a fact, not a guess.
    no_output = 0 if u.input_tokens is not None else None
    u.cost_usd = cost_usd(PROVIDER, u.response_model or u.model, u.input_tokens, no_output, None)


def _models(x: Exchange, u: Understanding, notes: list[str]) -> None:
    found = re.search(r"/models/(.+)$", x.path or "")
    if found:  # retrieve one model: the id is in the path
        u.model = found.group(1)
    kind = response_kind(x, u, notes)
    if kind == "sse":
        notes.append("response: unexpected event stream")
    elif kind == "json":
        try:
            u.response = load_json(x.response_body)
        except (ValueError, RecursionError) as exc:
            notes.append(f"response: {exc}")


def _slim_embeddings(resp: dict[str, Any]) -> dict[str, Any]:
    out = dict(resp)
    if isinstance(resp.get("data"), list):
        out["data"] = [_slim_vector(d) for d in resp["data"]]
    return out


def _slim_vector(d: Any) -> Any:
    if not isinstance(d, dict) or "embedding" not in d:
        return d
    vector = d["embedding"]
    slim = {k: v for k, v in d.items() if k != "embedding"}
    if isinstance(vector, list):
        slim["dimensions"] = len(vector)
    elif isinstance(vector, str):  # encoding_format=base64: packed float32
        slim["dimensions"] = len(vector.rstrip("=")) * 3 // 4 // 4
    return slim
