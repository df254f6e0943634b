"""Prompt templates: fingerprint a system prompt with its per-request values masked.

Two captures share a ``prompt_template_id`` when their system prompts differ only in
values an app fills in per request: retrieved context, memories, dates, times, numbers,
ids, emails, URLs, an inlined question. The rules are written down in
``schemas/threads-and-templates.md``; change them there and bump ``RULES_VERSION``
(every id changes with it).

This module is the entry point: ``template_of``, ``context_blocks``, ``normalize`` and the id.
Finding the variable spans is ``schemas/template_spans.py``; masking the scalars around them
is ``schemas/template_scalars.py``.

Pure and deterministic: the same text gives the same ``Template`` on every machine.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field

from prompttap.schemas.template_scalars import mask_scalars
from prompttap.schemas.template_spans import LABEL_LINE, variable_spans

RULES_VERSION = 1
"""Hashed into every id, so a change of masking rules cannot silently mix old and new ids."""

NO_SYSTEM_PROMPT_ID = "tpl_" + "0" * 16
"""The id of an empty (or whitespace-only) system prompt."""

# Kinds whose spans are dropped from the id: whether retrieval found 0, 2 or 4 snippets
# (or the user has memories) must not change the template.
_OPTIONAL_KINDS = ("context", "memory")
_PLACEHOLDER = {"context": "{{context}}", "memory": "{{memories}}", "question": "{{question}}"}


@dataclass(frozen=True, slots=True)
class Template:
    """A system prompt with its variable spans replaced by ``{{kind}}`` placeholders."""

    id: str  # "tpl_" + 16 hex of sha256 over the masked skeleton
    masked: str
    variables: list[tuple[str, str]] = field(default_factory=list)  # (kind, original text), in order


def template_of(system_prompt: str) -> Template:
    """Mask ``system_prompt`` and fingerprint what is left (see the module docstring)."""
    text = normalize(system_prompt or "")
    if not text:
        return Template(NO_SYSTEM_PROMPT_ID, "", [])
    masked_parts: list[str] = []
    variables: list[tuple[str, str]] = []
    pos = 0
    for span in variable_spans(text):
        masked_parts.append(mask_scalars(text[pos : span.start], variables))
        masked_parts.append(_PLACEHOLDER[span.kind])
        variables.extend((span.kind, s) for s in span.values)
        pos = span.end
    masked_parts.append(mask_scalars(text[pos:], variables))
    masked = "".join(masked_parts)
    digest = hashlib.sha256(
        f"v{RULES_VERSION}\n{_skeleton(masked)}".encode("utf-8", "surrogatepass")
    ).hexdigest()  # lone surrogates too
    return Template("tpl_" + digest[:16], masked, variables)


def context_blocks(system_prompt: str) -> list[str]:
    """The retrieved snippets found in ``system_prompt``, in order."""
    return [v for kind, v in template_of(system_prompt).variables if kind == "context"]


def normalize(text: str) -> str:
    """LF line ends, no trailing spaces on any line, no leading/trailing blank space. Unicode
    normalization is left to the id (``_skeleton``) so variables keep the original characters."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip()


# --- the id -------------------------------------------------------------------------------

_MEMORY_HEADER = re.compile(r"(?i)#{1,6}\s*Things I Remember About You")


def _skeleton(masked: str) -> str:
    """What the id hashes: optional sections and their bare labels gone, whitespace collapsed."""
    for kind in _OPTIONAL_KINDS:
        masked = masked.replace(_PLACEHOLDER[kind], "")
    kept = [
        line
        for line in masked.split("\n")
        if not (LABEL_LINE.fullmatch(line.strip()) or _MEMORY_HEADER.fullmatch(line.strip()))
    ]
    return unicodedata.normalize("NFC", " ".join(" ".join(kept).split()))
