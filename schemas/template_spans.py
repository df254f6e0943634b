"""Prompt templates, the variable spans: where a system prompt holds retrieved context, the
user's memories or an inlined question (``schemas/threads-and-templates.md`` §2).

``variable_spans(text)`` finds them in a normalized prompt; ``schemas/templates.py`` puts a
placeholder in place of each and masks the scalars around them.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from dataclasses import dataclass

_LABEL_WORDS = (
    r"(?:(?:retrieved|relevant|additional|reference|background|supporting|provided)\s+)?"
    r"(?:context(?:s|\s+information)?|documents?|docs|sources?|knowledge(?:\s+base)?|search\s+results"
    r"|references|excerpts|passages|snippets)"
)
# A line that only names a context section: "Context:", "## Relevant documents", "**Sources:**".
# It opens a header section here, and the id drops it (``templates._skeleton``, §4).
LABEL_LINE = re.compile(rf"(?i)(?:#{{1,6}}\s*)?(?:\*\*|__)?{_LABEL_WORDS}\s*:?\s*(?:\*\*|__)?\s*:?")


@dataclass(slots=True)
class Span:
    """One variable span of the normalized prompt: ``text[start:end]`` becomes one placeholder."""

    start: int
    end: int
    kind: str  # "context" | "memory" | "question"
    values: list[str]


def variable_spans(text: str) -> list[Span]:
    """Non-overlapping variable spans, in order; adjacent context spans merged into one."""
    claims = _Claims()
    for finder in (_anythingllm_blocks, _xml_containers, _xml_item_runs, _memories, _header_sections):
        for span in finder(text, claims):
            if span.values and claims.free(span.start, span.end):
                claims.add(span)
    for m in _QUESTION_LINE.finditer(text):
        if claims.free(m.start("value"), m.end("value")):
            claims.add(Span(m.start("value"), m.end("value"), "question", [m.group("value")]))
    merged: list[Span] = []
    for span in claims.spans:
        prev = merged[-1] if merged else None
        if prev is not None and prev.kind == span.kind == "context" and _GAP.fullmatch(text[prev.end : span.start]):
            prev.end = span.end
            prev.values.extend(span.values)
        else:
            merged.append(span)
    return merged


class _Claims:
    """Accepted spans, kept sorted and non-overlapping (bisect keeps big prompts linear-ish)."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.spans: list[Span] = []

    def covers(self, pos: int) -> bool:
        i = bisect.bisect_right(self.starts, pos)
        return i > 0 and self.spans[i - 1].end > pos

    def free(self, start: int, end: int) -> bool:
        i = bisect.bisect_right(self.starts, start)
        return not (i > 0 and self.spans[i - 1].end > start) and not (i < len(self.spans) and self.spans[i].start < end)

    def add(self, span: Span) -> None:
        i = bisect.bisect_right(self.starts, span.start)
        self.starts.insert(i, span.start)
        self.spans.insert(i, span)


_GAP = re.compile(r"(?:\s|-{3,}|={3,}|\*{3,}|_{3,})*")

# AnythingLLM appendContext: "\nContext:\n" + "[CONTEXT i]:\n<text>\n[END CONTEXT i]\n\n" per snippet.
# Its compressor may cut the middle out of the section, losing markers: a start marker with
# no end runs to the next marker, or to the end of the prompt.
_ALLM_MARK = re.compile(r"\[(END )?CONTEXT (\d+)\]:?")


def _anythingllm_blocks(text: str, _claims: _Claims) -> list[Span]:
    marks = list(_ALLM_MARK.finditer(text))
    spans: list[Span] = []
    current: Span | None = None
    for i, m in enumerate(marks):
        nxt = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        if m.group(1):  # an END marker closes the block; a gap of prose closes the section
            if current is None:
                continue
            current.end = m.end()
            if text[m.end() : nxt].strip():
                spans.append(current)
                current = None
            continue
        if current is None:
            current = Span(m.start(), nxt, "context", [])
        current.end = nxt
        body = text[m.end() : nxt].strip()
        if body:
            current.values.append(body)
    if current is not None:
        spans.append(current)
    return [_trim(text, s) for s in spans]


_CONTAINER_TAG = re.compile(
    r"(?i)<(/?)(context|contexts|documents|docs|sources|search_results|knowledge|references"
    r"|retrieved_[a-z_]+|relevant_[a-z_]+|[a-z_]+_context|context_[a-z_]+|[a-z_]+_documents)(?:\s[^<>]*)?>"
)
_ITEM_TAG = re.compile(r"(?i)<(/?)(document|doc|passage|chunk|snippet|excerpt|search_result)\b[^<>]*>")


def _elements(tag: re.Pattern[str], text: str) -> list[tuple[int, int, int, int]]:
    """Outermost closed elements as (start, inner_start, inner_end, end), one pass over the tags
    (unclosed tags are skipped, never rescanned: prompts may hold thousands)."""
    opened: dict[str, list[re.Match[str]]] = {}
    found = []
    for m in tag.finditer(text):
        name = m.group(2).lower()
        if not m.group(1):
            opened.setdefault(name, []).append(m)
        elif opened.get(name):
            o = opened[name].pop()
            found.append((o.start(), o.end(), m.start(), m.end()))
    found.sort()
    outer: list[tuple[int, int, int, int]] = []
    for el in found:
        if not outer or el[0] >= outer[-1][3]:
            outer.append(el)
    return outer


def _xml_containers(text: str, _claims: _Claims) -> list[Span]:
    """``<context>...</context>``, ``<documents>...</documents>``: the inner text is the section."""
    return [
        _trim(text, Span(i, j, "context", _split_snippets(text[i:j]))) for _, i, j, _ in _elements(_CONTAINER_TAG, text)
    ]


def _items(text: str) -> list[tuple[int, int]]:
    return [(s, e) for s, i, j, e in _elements(_ITEM_TAG, text) if text[i:j].strip()]


def _xml_item_runs(text: str, _claims: _Claims) -> list[Span]:
    """Runs of ``<document>...</document>`` elements outside any container."""
    spans: list[Span] = []
    for start, end in _items(text):
        if spans and not text[spans[-1].end : start].strip():
            spans[-1].end = end
            spans[-1].values.append(text[start:end].strip())
        else:
            spans.append(Span(start, end, "context", [text[start:end].strip()]))
    return spans


# AnythingLLM promptWithMemories: "\n\n## Things I Remember About You\n- ...\n- ...".
_MEMORY_LIST = re.compile(r"(?im)^#{1,6}\s*Things I Remember About You[ \t]*\n((?:[ \t]*[-*] .*(?:\n|$))+)")


def _memories(text: str, _claims: _Claims) -> list[Span]:
    spans = []
    for m in _MEMORY_LIST.finditer(text):
        items = [line.strip()[2:].strip() for line in m.group(1).split("\n") if line.strip()]
        spans.append(_trim(text, Span(m.start(1), m.end(1), "memory", items)))
    return spans


# Header-introduced sections (LangChain, LlamaIndex and hand-written RAG prompts).
_INLINE_LABEL = re.compile(
    r"(?i)[ \t]*(?:#{1,6}\s*)?(?:\*\*)?(?:retrieved |relevant |provided )?context(?:\*\*)?\s*:"
    r"(?:\*\*)?[ \t]*(?=\S)"
)
_NOUNS = (
    r"(?:context(?:s)?|documents?|docs|passages|excerpts|snippets|search results|sources|knowledge base"
    r"|articles|(?:pieces of|retrieved|context) information)"
)
# A sentence announcing that retrieved text follows. At most three plain words between the
# announcing word and the noun, so "the following conversation, relevant context" is not one.
_ANNOUNCE = re.compile(
    rf"(?i)\b(?:following|below|provided|retrieved|here (?:is|are))\s+(?:[a-z-]+\s+){{0,3}}?{_NOUNS}\b"
    rf"|\bcontext information\b|\b{_NOUNS}\s+(?:is|are)\s+(?:below|as follows|provided below)"
)
_SEPARATOR = re.compile(r"[ \t]*(?:-{3,}|={3,}|\*{3,}|_{3,}|~{3,}|#{3,})[ \t]*")
# Lines that end a context section: a "Question:"-style label, or an instruction that
# refers back to the context ("Given the context information...", "Based on the above documents").
_TRAILER_WORDS = (
    r"(?:question|query|user question|user query|user input|input|answer|helpful answer|final"
    r" answer|instructions?"
    r"|task|rules|guidelines|constraints|chat history|conversation history|history|response|output"
    r"|(?:output|response|answer) format|format|style|tone|notes|examples?)"
)
_TRAILER_LABEL = re.compile(
    rf"(?i)[ \t]*(?:#{{1,6}}[ \t]*(?:\*\*)?{_TRAILER_WORDS}\b|(?:\*\*)?{_TRAILER_WORDS}(?:\*\*)?\s*:)"
)
_TRAILER_SENTENCE = re.compile(
    r"(?i)[ \t]*(?:given|based on|using|use|remember|now|answer|do not|don't|never|please|you must"
    r"|important|only|according to)\b.*\b(?:context|(?:above|provided|retrieved) (?:documents?|information"
    r"|sources|passages)|(?:documents?|information|sources|passages) (?:above|provided))\b"
)
_FORWARD = re.compile(r"(?i)\b(?:following|below)\b")


def _is_trailer(line: str) -> bool:
    return bool(_TRAILER_LABEL.match(line) or (_TRAILER_SENTENCE.match(line) and not _FORWARD.search(line)))


def _header_sections(text: str, claims: _Claims) -> list[Span]:
    lines = _lines(text)
    offsets = [off for off, _ in lines]
    spans: list[Span] = []
    i = 0
    while i < len(lines):
        start, line = lines[i]
        span = None
        if LABEL_LINE.fullmatch(line.strip()):
            span = _section_after(text, lines, i + 1)
        elif m := _INLINE_LABEL.match(line):
            span = _section_from(text, lines, i, start + m.end())
        elif _ANNOUNCE.search(line) and not _is_trailer(line):
            body_line = _body_line_after_sentence(lines, i)
            if body_line is not None:
                span = _section_after(text, lines, body_line)
        if span is not None and not claims.covers(span.start):
            spans.append(span)
            i = bisect.bisect_left(offsets, span.end)
            continue
        i += 1
    return spans


def _body_line_after_sentence(lines: list[tuple[int, str]], i: int) -> int | None:
    """Where the context starts after an announcing sentence: the next line if it ends with
    ':', else after the first blank or separator line among the next few."""
    if lines[i][1].rstrip().endswith(":"):
        return i + 1
    for k in range(i + 1, min(i + 4, len(lines))):
        line = lines[k][1]
        if not line.strip() or _SEPARATOR.fullmatch(line):
            return k
        if _is_trailer(line) or _INLINE_LABEL.match(line) or LABEL_LINE.fullmatch(line.strip()):
            return None  # a labelled layout follows; its own label introduces the context
    return None


def _section_after(text: str, lines: list[tuple[int, str]], k: int) -> Span | None:
    """A section whose body starts at line ``k`` (blank lines skipped; a separator opens a fence)."""
    while k < len(lines) and not lines[k][1].strip():
        k += 1
    if k >= len(lines) or _is_trailer(lines[k][1]):  # nothing was retrieved
        return None
    if _SEPARATOR.fullmatch(lines[k][1]):
        fence = lines[k][1].strip()
        if len(fence) >= 10:  # LlamaIndex: a long rule line opens the context and the same one closes it
            for j in range(k + 1, len(lines)):
                if lines[j][1].strip() == fence:
                    return _make_section(text, lines[k + 1][0], lines[j][0])
        # a short rule ("---") separates snippets; it does not close the section
        k += 1
        if k >= len(lines):
            return None
    return _section_from(text, lines, k, lines[k][0])


def _section_from(text: str, lines: list[tuple[int, str]], k: int, body_start: int) -> Span | None:
    """Body from ``body_start`` (inside line ``k``) up to a trailer line or the end."""
    end = len(text)
    for j in range(k + 1, len(lines)):
        if _is_trailer(lines[j][1]) or LABEL_LINE.fullmatch(lines[j][1].strip()):
            end = lines[j][0]
            break
    return _make_section(text, body_start, end)


def _make_section(text: str, start: int, end: int) -> Span | None:
    body = text[start:end]
    stripped = body.strip()
    while _SEPARATOR.fullmatch(stripped.rsplit("\n", 1)[-1]) and stripped:  # a closing rule is layout
        stripped = stripped.rsplit("\n", 1)[0].strip() if "\n" in stripped else ""
    if not stripped:
        return None
    start += body.index(stripped)
    return Span(start, start + len(stripped), "context", _split_snippets(stripped))


_ITEM_START = re.compile(
    r"(?im)^[ \t]*(?:\[\d+\]|\[?(?:doc(?:ument)?|source|chunk|context|passage|excerpt|snippet|result)"
    r"\s*#?\s*\d+\]?\s*[:.)\]-])"
)
_KEY_LINE = re.compile(r"([A-Za-z_][\w .-]{0,30}):[ \t]*\S")


def _split_snippets(body: str) -> list[str]:
    """One section's snippets: XML items, else rule-separated, else numbered, else keyed
    (LlamaIndex's "file_path: ..." header per node), else blank-line paragraphs."""
    body = body.strip()
    if not body:
        return []
    items = [body[s:e].strip() for s, e in _items(body)]
    if items:
        return items
    lines = body.split("\n")
    if any(_SEPARATOR.fullmatch(line) for line in lines):
        return _chunks(lines, lambda i: _SEPARATOR.fullmatch(lines[i]) is not None, drop_boundary=True)
    starts = [i for i, line in enumerate(lines) if _ITEM_START.match(line)]
    if len(starts) >= 2 or starts == [0]:
        return _chunks(lines, lambda i: i in starts and i > 0, drop_boundary=False)
    key = _KEY_LINE.match(lines[0])
    if key:
        prefix = key.group(1) + ":"
        keyed = [i for i in range(1, len(lines)) if lines[i].startswith(prefix) and not lines[i - 1].strip()]
        return _chunks(lines, lambda i: i in keyed, drop_boundary=False)
    return [p.strip() for p in re.split(r"\n[ \t]*\n", body) if p.strip()]


def _chunks(lines: list[str], boundary: Callable[[int], bool], drop_boundary: bool) -> list[str]:
    out: list[str] = []
    cur: list[str] = []
    for i, line in enumerate(lines):
        if boundary(i):
            out.append("\n".join(cur).strip())
            cur = [] if drop_boundary else [line]
        else:
            cur.append(line)
    out.append("\n".join(cur).strip())
    return [c for c in out if c]


def _lines(text: str) -> list[tuple[int, str]]:
    out, pos = [], 0
    for line in text.split("\n"):
        out.append((pos, line))
        pos += len(line) + 1
    return out


def _trim(text: str, span: Span) -> Span:
    """Shrink a span to its non-blank core, so placeholders keep the layout around them."""
    seg = text[span.start : span.end]
    lead = len(seg) - len(seg.lstrip())
    span.end = span.start + len(seg.rstrip())
    span.start += lead
    return span


# "Question: ..." / "Query: ..." lines: the user's question inlined into the prompt.
_QUESTION_LINE = re.compile(r"(?im)^[ \t]*(?:question|query|user question|user query)[ \t]*:[ \t]*(?P<value>\S.*)$")
