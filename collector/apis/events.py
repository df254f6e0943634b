"""Split recorded response bodies into stream events (SSE and NDJSON).

Works on the whole recorded body (off the request path), so chunk boundaries are
already gone; a body cut off mid-event yields the complete events and reports the
torn tail, which callers use to mark a stream ``incomplete``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str  # '' when the stream sent no "event:" field
    data: str


def parse_sse(text: str) -> tuple[list[SSEEvent], bool]:
    """Events of an SSE body, and whether the body ended on an event boundary."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    blocks = text.split("\n\n")
    complete = text.endswith("\n\n") or text == ""
    if not complete:
        blocks, tail = blocks[:-1], blocks[-1]
        complete = tail.strip() == ""
    events: list[SSEEvent] = []
    for block in blocks:
        name, data = "", []
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)
        if name or data:
            events.append(SSEEvent(name, "\n".join(data)))
    return events, complete


def parse_ndjson_lines(text: str) -> tuple[list[str], bool]:
    """Non-empty lines of an NDJSON body, and whether the last line was terminated."""
    complete = text.endswith("\n") or text == ""
    lines = text.split("\n")
    if not complete:
        lines = lines[:-1]
    return [ln for ln in lines if ln.strip()], complete
