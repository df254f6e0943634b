"""A finished span as prompttap builds it, independent of any exporter's types."""

from __future__ import annotations

from dataclasses import dataclass, field

AttrValue = str | int | float | bool | list[str] | list[int] | list[float]

SCOPE_NAME = "prompttap"


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("prompttap")
    except Exception:  # running from a source tree without an install
        return "0.0.0"


SCOPE_VERSION = _package_version()


@dataclass(frozen=True, slots=True)
class SpanEvent:
    name: str
    time_ns: int
    attributes: dict[str, AttrValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CaptureSpan:
    """A finished span, independent of any exporter's types."""

    name: str
    trace_id: str  # 32 lowercase hex
    span_id: str  # 16 lowercase hex
    parent_span_id: str  # 16 lowercase hex or ""
    trace_state: str
    start_ns: int
    end_ns: int
    status_code: str  # "OK" | "ERROR" | "UNSET"
    status_message: str
    attributes: dict[str, AttrValue]
    events: tuple[SpanEvent, ...] = ()
    kind: str = "CLIENT"


def resource_attributes(service_name: str = "prompttap") -> dict[str, str]:
    """The resource every prompttap span is exported with."""
    return {"service.name": service_name}
