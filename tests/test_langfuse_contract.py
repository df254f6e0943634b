"""Contract: prompttap's span looks to Langfuse like one the official langfuse SDK sends.

The SDK (site-packages ``langfuse`` v5) records a generation with the same content as a
prompttap capture; both go through the same OTLP receiver on Langfuse's path, and the
attribute keys, value shapes (JSON object text vs JSON array text vs plain string vs list vs
number) and the decoded values must agree.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from prompttap.collector.sinks.otlp import langfuse_sink_from_env
from tests.otlp_receiver import LANGFUSE_PATH, OtlpReceiver
from tests.test_spans import ANTHROPIC, anthropic_body, capture_row

SK = "sk-lf-contract"
# SDK-only keys prompttap has no equivalent for (release/environment are unset in both).
SDK_ONLY = {"langfuse.internal.is_app_root", "langfuse.internal.as_root"}


def shape(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "list"
    try:
        decoded = json.loads(value)
    except ValueError:
        return "string"
    return {dict: "json-object", list: "json-array"}.get(type(decoded), "string")


def _sdk_span(rx: OtlpReceiver, row: dict[str, Any], error: bool) -> dict[str, Any]:
    """The generation the langfuse SDK sends for the same exchange."""
    from langfuse import Langfuse, propagate_attributes

    ours = _prompttap_span(rx, row)["attributes"]
    # The SDK keeps one client per public key for the process: a fresh key per receiver.
    lf = Langfuse(public_key=rx.public_key, secret_key=SK, host=rx.base_url, flush_at=1)
    try:
        with (
            lf.start_as_current_observation(name="request", as_type="span"),
            propagate_attributes(
                user_id=row["user_id"],
                session_id=row["session_id"],
                tags=list(row["tags"]),
                trace_name=row["route"],
                metadata={"route": row["route"], "thread_id": row["thread_id"]},
            ),
        ):
            ttft = datetime.fromtimestamp(row["started_at"] + row["ttft_ms"] / 1000, UTC)
            generation = lf.start_observation(
                name="chat claude-sonnet-4-5",
                as_type="generation",
                input=json.loads(ours["langfuse.observation.input"]),
                output=json.loads(ours["langfuse.observation.output"]),
                model=row["response_model"],
                model_parameters=json.loads(ours["langfuse.observation.model.parameters"]),
                usage_details=json.loads(ours["langfuse.observation.usage_details"]),
                cost_details=json.loads(ours["langfuse.observation.cost_details"]),
                completion_start_time=None if error else ttft,  # a failed call has no completion start
                metadata={
                    "capture_id": str(row["id"]),
                    "api": row["api"],
                    "outcome": row["outcome"],
                    "client": row["client"],
                    "prompt_template_id": row["prompt_template_id"],
                },
                level="ERROR" if error else None,
                status_message="upstream answered 500" if error else None,
            )
            generation.end()
        lf.flush()
    finally:
        lf.shutdown()
    assert rx.wait_until(lambda: any(s["scope"]["name"] == "langfuse-sdk" for s in rx.spans))
    sdk_spans = [s for s in rx.spans if s["scope"]["name"] == "langfuse-sdk"]
    [sdk] = [s for s in sdk_spans if s["attributes"].get("langfuse.observation.type") == "generation"]
    return sdk


def _prompttap_span(rx: OtlpReceiver, row: dict[str, Any]) -> dict[str, Any]:
    env = {"LANGFUSE_PUBLIC_KEY": rx.public_key, "LANGFUSE_SECRET_KEY": SK, "LANGFUSE_HOST": rx.base_url}
    sink = langfuse_sink_from_env(env)
    assert sink is not None
    try:
        sink.export([row])
    finally:
        sink.close()
    return rx.latest()[row["span_id"]]


@pytest.fixture(scope="module", params=["ok", "error"])
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[dict[str, Any], dict[str, Any], OtlpReceiver]]:
    error = request.param == "error"
    row = capture_row(
        "/v1/messages", anthropic_body(stream=True), upstream=ANTHROPIC, session_id="sess-1", user_id="user-1"
    )
    if error:  # same content, but the exchange failed: level ERROR, status message, OTel status ERROR
        row.update(outcome="upstream_error", status_code=500, error="upstream answered 500")
    with OtlpReceiver(public_key=f"pk-lf-contract-{request.param}", secret_key=SK) as rx:
        ours = _prompttap_span(rx, row)
        sdk = _sdk_span(rx, row, error)
        yield ours, sdk, rx


def test_every_sdk_generation_attribute_is_present_with_the_same_shape(pair: Any) -> None:
    ours, sdk, _ = pair
    missing = sorted(set(sdk["attributes"]) - SDK_ONLY - set(ours["attributes"]))
    assert not missing, f"prompttap's span lacks attributes the SDK sends: {missing}"
    shapes = {k: (shape(v), shape(ours["attributes"][k])) for k, v in sdk["attributes"].items() if k not in SDK_ONLY}
    assert {k: s for k, s in shapes.items() if s[0] != s[1]} == {}


def test_decoded_values_agree(pair: Any) -> None:
    ours, sdk, _ = pair
    a, b = ours["attributes"], sdk["attributes"]
    for key in (
        "langfuse.observation.input",
        "langfuse.observation.output",
        "langfuse.observation.usage_details",
        "langfuse.observation.cost_details",
        "langfuse.observation.model.parameters",
    ):
        assert json.loads(a[key]) == json.loads(b[key]), key
    for key in ("langfuse.observation.type", "langfuse.observation.model.name", "langfuse.trace.name"):
        assert a[key] == b[key], key
    for key in ("user.id", "session.id", "langfuse.trace.tags"):
        assert a[key] == b[key], key
    # The SDK JSON-encodes the time and metadata values; Langfuse accepts plain ISO and strings too.
    key = "langfuse.observation.completion_start_time"
    assert (key in a) == (key in b)
    if key in b:
        sdk_time = datetime.fromisoformat(json.loads(b[key]))
        our_time = datetime.fromisoformat(a[key].replace("Z", "+00:00"))
        assert abs((sdk_time - our_time).total_seconds()) < 1e-5
    for key, value in b.items():
        if key.startswith(("langfuse.observation.metadata.", "langfuse.trace.metadata.")):
            assert a[key] == json.loads(value), key


def test_status_level_and_delivery_match(pair: Any) -> None:
    ours, sdk, rx = pair
    assert ours["status"]["code"] == sdk["status"]["code"]
    assert ours["attributes"].get("langfuse.observation.level") == sdk["attributes"].get("langfuse.observation.level")
    assert ours["kind"] == "SPAN_KIND_CLIENT"
    assert len(ours["trace_id"]) == 32 and len(ours["span_id"]) == 16
    by_scope = {(e.path, e.headers.get("x-langfuse-ingestion-version"), e.gzip) for e in rx.exports}
    assert by_scope == {(LANGFUSE_PATH, "4", True)}  # same endpoint, ingestion version and compression
    assert all(e.headers["content-type"] == "application/x-protobuf" for e in rx.exports)
