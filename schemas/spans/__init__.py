"""One capture, one OpenTelemetry span: the mapping, defined once.

``span_of(row)`` turns a capture row (``collector.enrich.Enricher`` output: the columns of
``schemas.capture``, JSON columns as Python objects) into a ``CaptureSpan`` carrying

- the OTel GenAI semantic conventions (v1.41.1 names; content as JSON strings in the
  conventions' message shape), read by Phoenix, Langfuse and any OTLP backend, and
- Langfuse's own attributes (names and value shapes of the langfuse SDK 5), so Langfuse shows
  a generation with input, output, model, parameters, usage, cost and time to first token.

The span and trace ids are the capture's own, so a replayed capture is the same span and
receivers dedup it. Headers never enter a span (they may carry credentials even redacted), nor
do bodies the proxy did not understand. Every string attribute is bounded to
``MAX_ATTR_BYTES``; JSON content is shortened so it stays valid JSON where possible.

``otel_row(span)`` gives one row of the OTel Collector clickhouseexporter's ``otel_traces``
(``otel_json`` the same as a JSONEachRow object).

This package is the public entry point; its modules, one job each:

- ``mapping``: ``span_of``, assembling the parts below
- ``facts``: what the mapping reads from a row, parsed once; the span's ids
- ``genai``: the GenAI semantic conventions' attributes (and the server/HTTP ones beside them)
- ``langfuse``: Langfuse's attributes (its content in OpenAI's chat shape: ``schemas.openai_chat``)
- ``otel_rows``: ``otel_traces`` rows
- ``bounds``: attribute values that say something, within size limits
- ``model``: ``CaptureSpan`` and the scope/resource it is exported with
"""

from prompttap.schemas.spans.bounds import MAX_ATTR_BYTES, MAX_ITEM_BYTES, MAX_LIST_ITEMS, TRUNCATION_MARK
from prompttap.schemas.spans.mapping import span_of
from prompttap.schemas.spans.model import (
    SCOPE_NAME,
    SCOPE_VERSION,
    AttrValue,
    CaptureSpan,
    SpanEvent,
    resource_attributes,
)
from prompttap.schemas.spans.otel_rows import OTEL_COLUMNS, attr_text, otel_json, otel_row

__all__ = [
    "MAX_ATTR_BYTES",
    "MAX_ITEM_BYTES",
    "MAX_LIST_ITEMS",
    "OTEL_COLUMNS",
    "SCOPE_NAME",
    "SCOPE_VERSION",
    "TRUNCATION_MARK",
    "AttrValue",
    "CaptureSpan",
    "SpanEvent",
    "attr_text",
    "otel_json",
    "otel_row",
    "resource_attributes",
    "span_of",
]
