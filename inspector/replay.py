"""Replay: send a captured request again, through prompttap's own proxy, to its upstream.

The request goes to the proxy (``options["proxy_url"]``), so the replay is recorded like any
other exchange, with ``X-Prompttap-Replay-Of: <original id>`` (stored in ``replay_of``). The
credential is the route's configured key (``--upstream-key ROUTE=ENV_VAR``, resolved at
start-up into ``options["upstream_keys"]``); the capture holds only a redacted key and is
never the source of one.

The key of a route goes to that route's upstream only: the proxy picks the route from the
path's first segment, so a captured path that would land on another route (dot segments,
plain or percent-encoded, that climb above the route's prefix; or a route added since) is
refused rather than replayed.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

import httpx
import orjson
from fastapi import Request
from starlette.concurrency import run_in_threadpool

from prompttap.inspector import queries
from prompttap.inspector.web import store
from prompttap.schemas.credentials import SECRET_QUERY_KEYS

# Captured request headers worth sending again (API versions and betas); the rest are the
# client's own (user agent, SDK telemetry) or the proxy's to set.
FORWARD_HEADERS = ("content-type", "accept", "anthropic-version", "anthropic-beta", "openai-beta")
# Where each API family expects its key when the capture shows no credential header.
_CREDENTIAL_HEADERS = ("x-api-key", "x-goog-api-key", "api-key", "authorization")
_GEMINI_MODEL = re.compile(r"(/models/)([^/:]+)(:)")
REPLAY_TIMEOUT = httpx.Timeout(connect=10.0, read=600.0, write=60.0, pool=10.0)


class ReplayError(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def availability(options: Mapping[str, Any], capture: Mapping[str, Any]) -> str | None:
    """Why ``capture`` cannot be replayed, or None when it can."""
    route = capture.get("route") or "default"
    if not options.get("proxy_url"):
        return "Replay needs the proxy's address; it is only available when the inspector runs in `prompttap serve`."
    if not (options.get("upstream_keys") or {}).get(route):
        return (
            f"No upstream key is configured for route {route!r}. Start prompttap with "
            f"`--upstream-key {route}=ENV_VAR` and put the key in that environment variable "
            "(the key stored in a capture is redacted and never reused)."
        )
    try:
        _check_route(options, _clean_path(capture.get("path") or "/", route), route)
    except ReplayError as exc:
        return str(exc)
    return None


def apply_changes(api: str, path: str, body: Any, changes: dict[str, Any]) -> tuple[str, Any]:
    """The request body (and path: Gemini names the model there) with model, temperature and
    system prompt replaced the way ``api`` spells them."""
    body = copy.deepcopy(body)
    model = changes.get("model")
    temperature = changes.get("temperature")
    system = changes.get("system_prompt")
    if not isinstance(body, dict):
        raise ReplayError("the captured request body is not a JSON object: it can only be replayed unchanged")
    family = api.split(".")[0]
    if model is not None:
        if family == "gemini":
            if not _GEMINI_MODEL.search(path):
                raise ReplayError("cannot find the model in this Gemini request's path")
            path = _GEMINI_MODEL.sub(lambda m: f"{m.group(1)}{model}{m.group(3)}", path, count=1)
        else:
            body["model"] = model
    if temperature is not None:
        if family == "ollama":
            body.setdefault("options", {})["temperature"] = temperature
        elif family == "gemini":
            body.setdefault("generationConfig", {})["temperature"] = temperature
        else:
            body["temperature"] = temperature
    if system is not None:
        _set_system(api, body, system)
    return path, body


def _set_system(api: str, body: dict[str, Any], system: str) -> None:
    if api == "anthropic.messages":
        body["system"] = system
    elif api == "openai.responses":
        body["instructions"] = system
    elif api == "ollama.generate":
        body["system"] = system
    elif api == "gemini.generate":
        body["systemInstruction"] = {"parts": [{"text": system}]}
    elif api in ("openai.chat", "ollama.chat"):
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise ReplayError("the captured request has no messages list")
        for m in messages:
            if isinstance(m, dict) and m.get("role") in ("system", "developer"):
                m["content"] = system
                break
        else:
            messages.insert(0, {"role": "system", "content": system})
    else:
        raise ReplayError(f"cannot change the system prompt of a {api or 'unknown'} request")


def _auth_header(api: str, captured: dict[str, str], key: str) -> tuple[str, str]:
    """The key in the header the original request used for its credential, else the API's own."""
    for name in _CREDENTIAL_HEADERS:
        if name in captured:
            return (name, f"Bearer {key}") if name == "authorization" else (name, key)
    if api.startswith("anthropic."):
        return "x-api-key", key
    return "authorization", f"Bearer {key}"  # OpenAI, Ollama, Gemini (OpenAI-style gateways)


def _clean_path(path: str, route: str) -> str:
    """The captured path without (redacted) credential query parameters, with its route prefix."""
    base, _, query = path.partition("?")
    if route != "default" and base != f"/{route}" and not base.startswith(f"/{route}/"):
        base = f"/{route}{base}"
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k.lower() not in SECRET_QUERY_KEYS]
    return base + (f"?{urlencode(pairs)}" if pairs else "")


def _check_route(options: Mapping[str, Any], path: str, route: str) -> str:
    """The proxy URL a replay of ``path`` (cleaned) on ``route`` is sent to; ReplayError if the
    proxy would take it to another route's upstream (with this route's key)."""
    target = options["proxy_url"].rstrip("/") + path
    url = httpx.URL(target)  # what is sent: httpx removes plain dot segments, as most servers do
    base = path.partition("?")[0]
    if _climbs(base, 0 if route == "default" else 1):
        raise ReplayError(
            f"This capture's path ({base}) climbs out of route {route!r} with dot segments ('..', plain or "
            f"percent-encoded): sent again, it would reach another upstream with the key of route {route!r}, so "
            "it is not replayed.",
            409,
        )
    routes = {*(options.get("routes") or ()), route} - {"default"}
    first = url.raw_path.decode("ascii").partition("?")[0].split("/")[1]
    landed = {r if r in routes else "default" for r in (first, unquote(first))}  # raw and decoded alike
    if landed != {route}:
        other = ", ".join(sorted(landed - {route}))
        raise ReplayError(
            f"This capture was made on route {route!r}, but its path ({base}) now leads to route {other!r}: "
            f"it is not replayed, so the key of route {route!r} goes to no other upstream.",
            409,
        )
    return target


def _climbs(path: str, fixed: int) -> bool:
    """Whether ``path``'s dot segments (percent-decoded once, as the upstream reads them) climb
    above its first ``fixed`` segments (the route's own prefix)."""
    depth = 0
    for segment in re.split(r"[/\\]", unquote(path))[1 + fixed :]:
        if segment == "..":
            depth -= 1
            if depth < 0:
                return True
        elif segment != ".":
            depth += 1
    return False


def _validated(changes: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    unknown = set(changes) - {"model", "temperature", "system_prompt"}
    if unknown:
        allowed = "model, temperature, system_prompt"
        raise ReplayError(f"unknown change(s): {', '.join(sorted(unknown))}; allowed: {allowed}")
    if changes.get("model") not in (None, ""):
        model = str(changes["model"]).strip()
        if not re.fullmatch(r"[\w.:/@+-]{1,200}", model):
            raise ReplayError(f"not a model name: {model!r}")
        out["model"] = model
    if changes.get("temperature") not in (None, ""):
        try:
            temperature = float(changes["temperature"])
        except (TypeError, ValueError):
            raise ReplayError("temperature must be a number") from None
        if not 0.0 <= temperature <= 2.0:
            raise ReplayError("temperature must be between 0 and 2")
        out["temperature"] = temperature
    if changes.get("system_prompt") is not None:
        if not isinstance(changes["system_prompt"], str):
            raise ReplayError("system_prompt must be text")
        out["system_prompt"] = changes["system_prompt"]
    return out


def build(original: dict[str, Any], options: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """The replay request: method, url, headers, body bytes."""
    route = original.get("route") or "default"
    problem = availability(options, original)
    if problem:
        raise ReplayError(problem, 409)
    if original.get("truncated"):
        raise ReplayError("the stored request body was cut at the size limit, so it cannot be sent again", 409)
    changes = _validated(changes)
    raw = original.get("request_body") or ""
    body = base64.b64decode(raw) if original.get("request_body_encoding") == "base64" else raw.encode()
    path = _clean_path(original.get("path") or "/", route)
    api = original.get("api") or "unknown"
    if changes:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ReplayError("the captured request body is not JSON: it can only be replayed unchanged") from None
        path, parsed = apply_changes(api, path, parsed, changes)
        body = orjson.dumps(parsed)
    captured = {k.lower(): v for k, v in (original.get("request_headers") or {}).items()}
    headers = {k: captured[k] for k in FORWARD_HEADERS if k in captured}
    if api.startswith("anthropic.") and "anthropic-version" not in headers:
        headers["anthropic-version"] = "2023-06-01"
    name, value = _auth_header(api, captured, options["upstream_keys"][route])
    headers[name] = value
    headers["user-agent"] = "prompttap-replay"
    headers["x-prompttap-replay-of"] = original["id"]
    if original.get("session_id"):
        headers["x-prompttap-session"] = original["session_id"]
    if original.get("user_id"):
        headers["x-prompttap-user"] = original["user_id"]
    headers["x-prompttap-tags"] = ",".join([*(t for t in original.get("tags") or [] if t != "replay"), "replay"])
    return {
        "method": original.get("method") or "POST",
        "url": _check_route(options, path, route),  # again: a changed model can change a Gemini path
        "headers": headers,
        "body": body,
        "changes": changes,
    }


async def replay(request: Request, original: dict[str, Any], changes: dict[str, Any], wait: float) -> dict[str, Any]:
    """Send the replay, then wait up to ``wait`` seconds for its capture to be stored."""
    options = request.app.state.options or {}
    plan = build(original, options, changes)
    sha = hashlib.sha256(plan["body"]).hexdigest()
    sent_at = datetime.now(UTC) - timedelta(seconds=1)
    try:
        async with (
            httpx.AsyncClient(timeout=REPLAY_TIMEOUT, follow_redirects=False) as client,
            client.stream(plan["method"], plan["url"], headers=plan["headers"], content=plan["body"] or None) as resp,
        ):
            async for _ in resp.aiter_raw():  # read to the end: the proxy records when it is done
                pass
            status = resp.status_code
    except httpx.HTTPError as exc:
        raise ReplayError(f"could not reach the proxy at {options.get('proxy_url')}: {exc!r}", 502) from None
    result: dict[str, Any] = {
        "replay_of": original["id"],
        "status_code": status,
        "changes": plan["changes"],
        "request_sha256": sha,
        "id": None,
    }
    deadline = time.monotonic() + wait
    while True:
        new_id = await run_in_threadpool(queries.find_replay, store(request), original["id"], sha, sent_at)
        if new_id or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.1)
    if new_id:
        result.update(id=new_id, capture_url=f"/captures/{new_id}", diff_url=f"/diff?a={original['id']}&b={new_id}")
    else:
        result.update(pending=True, poll_url=f"/api/captures/{original['id']}/replays")
    return result
