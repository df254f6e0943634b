"""The system-prompt and retrieved-context segments. An app such as AnythingLLM embeds the
retrieved context in its system prompt, so the two are told apart first (``split_context``):
the instructions are line-diffed with each context region replaced by ``{{context}}``, and the
snippets are matched across sides on their own (same / changed / added / removed)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from prompttap.inspector.diff.model import ContextDiff, RunStatus, SnippetChange, SystemPromptDiff, SystemPromptStatus
from prompttap.inspector.diff.text import line_diff, similarity, word_ops
from prompttap.inspector.diff.values import plural
from prompttap.schemas.templates import context_blocks, normalize, template_of

SNIPPET_SIMILARITY = 0.6  # a context snippet this close to one on the other side is "changed", not replaced


_SCAFFOLD = re.compile(r"(?:\s|\[(?:END )?CONTEXT \d+\]:?|-{3,}|={3,}|\*{3,}|_{3,}|~{3,})*")
_LEAD_MARK = re.compile(r"\[CONTEXT \d+\]:?[ \t]*\n?$")
_TRAIL_MARK = re.compile(r"\s*\[END CONTEXT \d+\]")
CONTEXT_PLACEHOLDER = "{{context}}"


def split_context(system_prompt: str) -> tuple[str, list[str]]:
    """The system prompt with each retrieved-context region replaced by ``{{context}}``, and the
    snippets. Line ends and trailing spaces are normalized (as for template ids)."""
    text = normalize(system_prompt)
    snippets = context_blocks(system_prompt)
    regions: list[list[int]] = []
    pos = 0
    for snippet in snippets:
        k = text.find(snippet, pos)
        if k < 0:
            continue
        if regions and _SCAFFOLD.fullmatch(text, regions[-1][1], k):
            regions[-1][1] = k + len(snippet)  # neighbours separated only by markers: one region
        else:
            regions.append([k, k + len(snippet)])
        pos = k + len(snippet)
    for region in regions:  # the markers around a region belong to it
        head = text[max(0, region[0] - 40) : region[0]]
        if m := _LEAD_MARK.search(head):
            region[0] -= len(head) - m.start()
        if m := _TRAIL_MARK.match(text, region[1]):
            region[1] = m.end()
    for start, end in reversed(regions):
        text = text[:start] + CONTEXT_PLACEHOLDER + text[end:]
    return text, snippets


def diff_system_prompt(a: str, b: str) -> SystemPromptDiff:
    ia, _ = split_context(a)
    ib, _ = split_context(b)
    ta, tb = template_of(a), template_of(b)
    values_a = _values_by_kind(ta.variables)
    values_b = _values_by_kind(tb.variables)
    kinds = [k for k in [*values_a, *(k for k in values_b if k not in values_a)] if k != "context"]
    changed_values = [k for k in kinds if values_a.get(k) != values_b.get(k)]
    lines = line_diff(ia, ib)
    same_instructions = ia == ib
    n_changed = sum(1 for line in lines if line.kind != "same")
    status: SystemPromptStatus
    if not a and not b:
        status, summary = "absent", "No system prompt."
    elif a == b:
        status, summary = "identical", "System prompt identical."
    elif not a or not b:
        status, summary = ("only_a", "System prompt only in A.") if b == "" else ("only_b", "System prompt only in B.")
    elif same_instructions and values_a.get("context") != values_b.get("context"):
        status, summary = "instructions_identical", "System prompt instructions identical."
    elif same_instructions:
        status, summary = "whitespace", "System prompt differs only in whitespace."
    elif ta.id == tb.id and changed_values:
        status = "values_changed"
        summary = f"System prompt: same template, per-request values changed ({', '.join(changed_values)})."
    elif ta.id == tb.id:
        status, summary = "whitespace", "System prompt: same template, whitespace differs."
    else:
        status = "instructions_changed"
        summary = f"System prompt instructions changed ({n_changed} {plural(n_changed, 'line')})."
    return SystemPromptDiff(
        status=status,
        text_identical=a == b,
        instructions_identical=same_instructions,
        same_template=ta.id == tb.id,
        changed_values=changed_values,
        a_template_id=ta.id,
        b_template_id=tb.id,
        lines=lines,
        summary=summary,
    )


def _values_by_kind(variables: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for kind, value in variables:
        out.setdefault(kind, []).append(value)
    return out


def diff_context(system_a: str, system_b: str) -> ContextDiff:
    _, sa = split_context(system_a)
    _, sb = split_context(system_b)
    return diff_snippets(sa, sb)


def diff_snippets(sa: list[str], sb: list[str]) -> ContextDiff:
    """Match snippets exactly first (any order), then by similarity ≥ SNIPPET_SIMILARITY."""
    match: dict[int, tuple[int, float]] = {}  # b index -> (a index, similarity)
    free_a: dict[str, list[int]] = {}
    for i, s in enumerate(sa):
        free_a.setdefault(s.strip(), []).append(i)
    for j, s in enumerate(sb):
        if free_a.get(s.strip()):
            match[j] = (free_a[s.strip()].pop(0), 1.0)
    used_a = {i for i, _ in match.values()}
    left_a = [i for i in range(len(sa)) if i not in used_a]
    left_b = [j for j in range(len(sb)) if j not in match]
    candidates = []
    for i in left_a:
        for j in left_b:
            r = similarity(_snippet_body(sa[i]), _snippet_body(sb[j]), SNIPPET_SIMILARITY)
            if r >= SNIPPET_SIMILARITY:
                candidates.append((r, i, j))
    for r, i, j in sorted(candidates, key=lambda c: (-c[0], c[1], c[2])):
        if i not in used_a and j not in match:
            match[j] = (i, r)
            used_a.add(i)

    out: list[SnippetChange] = []
    unmatched_a = [i for i in range(len(sa)) if i not in used_a]
    next_kept = [len(sa)] * (len(sb) + 1)  # A index of the next matched snippet at or after j
    for j in range(len(sb) - 1, -1, -1):
        next_kept[j] = match[j][0] if j in match else next_kept[j + 1]
    for j, text_b in enumerate(sb):
        while unmatched_a and unmatched_a[0] < next_kept[j]:  # removed ones stay near their old place
            k = unmatched_a.pop(0)
            out.append(SnippetChange("removed", k, None, sa[k], None, 0.0))
        if j in match:
            i, r = match[j]
            if sa[i] == text_b:
                out.append(SnippetChange("same", i, j, sa[i], text_b, 1.0))
            else:
                out.append(SnippetChange("changed", i, j, sa[i], text_b, round(r, 3), word_ops(sa[i], text_b)))
        else:
            out.append(SnippetChange("added", None, j, None, text_b, 0.0))
    out.extend(SnippetChange("removed", k, None, sa[k], None, 0.0) for k in unmatched_a)

    counts = {k: sum(1 for s in out if s.kind == k) for k in ("same", "changed", "added", "removed")}
    order = [match[j][0] for j in sorted(match)]
    reordered = order != sorted(order)
    replaced = min(counts["added"], counts["removed"])
    identical = sa == sb
    status: RunStatus = "absent" if not sa and not sb else "identical" if identical else "changed"
    if status == "absent":
        summary = "No retrieved context."
    elif status == "identical":
        summary = f"Context identical ({len(sa)} {plural(len(sa), 'snippet')})."
    else:
        parts = []
        if replaced:
            parts.append(f"{replaced} of {len(sa)} {plural(len(sa), 'snippet')} replaced")
        if counts["added"] > replaced:
            n = counts["added"] - replaced
            parts.append(f"{n} {plural(n, 'snippet')} added")
        if counts["removed"] > replaced:
            n = counts["removed"] - replaced
            parts.append(f"{n} of {len(sa)} {plural(len(sa), 'snippet')} removed")
        if counts["changed"]:
            parts.append(f"{counts['changed']} changed")
        if reordered:
            parts.append("order changed")
        summary = "Context: " + ", ".join(parts or ["snippet text differs"]) + "."
    return ContextDiff(
        status=status,
        identical=identical,
        a_count=len(sa),
        b_count=len(sb),
        same=counts["same"],
        changed=counts["changed"],
        added=counts["added"],
        removed=counts["removed"],
        replaced=replaced,
        reordered=reordered,
        snippets=out,
        summary=summary,
    )


_METADATA = re.compile(r"\s*<document_metadata>.*?</document_metadata>\s*", re.S)


def _snippet_body(snippet: str) -> str:
    # AnythingLLM's per-chunk metadata header is shared scaffolding: two unrelated chunks would
    # look alike through it, so similarity is judged on the chunk text.
    return _METADATA.sub("", snippet, count=1) if snippet.lstrip().startswith("<document_metadata>") else snippet
