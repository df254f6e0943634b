"""The text-diff engine under every segment: word diffs (``Op`` runs), line diffs with word
diffs inside changed lines, order-preserving pairing of two runs, word-level similarity, and
truncation (one text a shortened copy of another). Pure functions over strings."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from prompttap.inspector.diff.model import LineChange, Op

T = TypeVar("T")

LINE_SIMILARITY = 0.5  # a line this close to one on the other side is "changed", not replaced
FOLD_CONTEXT = 3  # unchanged lines kept visible around a change
_DIRECT_TOKENS = 4_000_000  # token-pair product above which word diffs go through a line pass first

_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")


def tokens(text: str) -> list[str]:
    """Words, whitespace runs and single punctuation marks; joined they give ``text`` back."""
    return _TOKEN.findall(text)


def word_ops(a: str, b: str) -> list[Op]:
    """Word-level diff of ``a`` → ``b``. Long texts are diffed by line first, then by word
    inside changed line blocks, so the cost stays near-linear in the unchanged part."""
    if a == b:
        return [Op("eq", a)] if a else []
    ta, tb = tokens(a), tokens(b)
    if len(ta) * len(tb) <= _DIRECT_TOKENS:
        return _merge(_token_ops(ta, tb))
    la, lb = a.splitlines(keepends=True), b.splitlines(keepends=True)
    ops: list[Op] = []
    for tag, i1, i2, j1, j2 in matcher(la, lb).get_opcodes():
        sa, sb = "".join(la[i1:i2]), "".join(lb[j1:j2])
        if tag == "equal":
            ops.append(Op("eq", sa))
            continue
        ta, tb = tokens(sa), tokens(sb)
        if len(ta) * len(tb) <= _DIRECT_TOKENS:
            ops.extend(_token_ops(ta, tb))
        else:
            ops.extend(o for o in (Op("del", sa), Op("ins", sb)) if o.text)
    return _merge(ops)


def _token_ops(ta: list[str], tb: list[str]) -> list[Op]:
    codes = matcher(ta, tb).get_opcodes()
    groups: list[list[Any]] = []
    for n, (tag, i1, i2, j1, j2) in enumerate(codes):
        # Whitespace or bare punctuation between two changes joins them: one readable
        # "sentence A → sentence B" instead of a word-by-word checkerboard.
        glue = tag == "equal" and 0 < n < len(codes) - 1 and _is_glue(ta[i1:i2])
        if tag != "equal" or glue:
            if groups and groups[-1][0] == "change":
                groups[-1][2], groups[-1][4] = i2, j2
            else:
                groups.append(["change", i1, i2, j1, j2])
        else:
            groups.append(["equal", i1, i2, j1, j2])
    ops = []
    for tag, i1, i2, j1, j2 in groups:
        if tag == "equal":
            ops.append(Op("eq", "".join(ta[i1:i2])))
        else:
            if i2 > i1:
                ops.append(Op("del", "".join(ta[i1:i2])))
            if j2 > j1:
                ops.append(Op("ins", "".join(tb[j1:j2])))
    return ops


def _is_glue(toks: list[str]) -> bool:
    text = "".join(toks)
    return text.isspace() or (len(text.strip()) <= 1 and not any(c.isalnum() for c in text))


def _merge(ops: list[Op]) -> list[Op]:
    out: list[Op] = []
    for o in ops:
        if not o.text:
            continue
        if out and out[-1].op == o.op:
            out[-1] = Op(o.op, out[-1].text + o.text)
        else:
            out.append(o)
    return out


def line_diff(a: str, b: str) -> list[LineChange]:
    """Line diff with word diffs inside changed lines; far-away unchanged runs get ``fold``."""
    la, lb = a.split("\n") if a else [], b.split("\n") if b else []
    out: list[LineChange] = []
    for tag, i1, i2, j1, j2 in matcher(la, lb).get_opcodes():
        if tag == "equal":
            out.extend(
                LineChange("same", i + 1, j + 1, la[i], lb[j])
                for i, j in zip(range(i1, i2), range(j1, j2), strict=True)
            )
            continue
        for pi, pj in pair_up(la[i1:i2], lb[j1:j2], lambda x, y: similarity(x, y, LINE_SIMILARITY), LINE_SIMILARITY):
            if pi is None:
                j = j1 + pj  # type: ignore[operator]
                out.append(LineChange("added", None, j + 1, None, lb[j]))
            elif pj is None:
                i = i1 + pi
                out.append(LineChange("removed", i + 1, None, la[i], None))
            else:
                i, j = i1 + pi, j1 + pj
                out.append(LineChange("changed", i + 1, j + 1, la[i], lb[j], word_ops(la[i], lb[j])))
    _fold(out)
    return out


def _fold(lines: list[LineChange]) -> None:
    n = len(lines)
    if all(line.kind == "same" for line in lines):
        return  # nothing to point at: an identical prompt is shown whole
    near = [False] * n
    for i, line in enumerate(lines):
        if line.kind != "same":
            for k in range(max(0, i - FOLD_CONTEXT), min(n, i + FOLD_CONTEXT + 1)):
                near[k] = True
    i = 0
    while i < n:
        if lines[i].kind == "same" and not near[i]:
            j = i
            while j < n and lines[j].kind == "same" and not near[j]:
                j += 1
            if j - i >= 3:
                for k in range(i, j):
                    lines[k].fold = j - i
            i = j
        else:
            i += 1


def pair_up(
    xs: Sequence[T], ys: Sequence[T], sim: Callable[[T, T], float], threshold: float
) -> list[tuple[int | None, int | None]]:
    """Order-preserving pairing of two runs: each x takes the most similar y (≥ threshold) after
    the last pair; unpaired items come out alone, in order. Big blocks pair by position."""
    pairs: list[tuple[int, int]] = []
    if len(xs) * len(ys) > 2500:
        pairs = [(k, k) for k in range(min(len(xs), len(ys))) if sim(xs[k], ys[k]) >= threshold]
    else:
        start = 0
        for i, x in enumerate(xs):
            best, best_j = threshold, None
            for j in range(start, len(ys)):
                r = sim(x, ys[j])
                if r >= best and (best_j is None or r > best):
                    best, best_j = r, j
            if best_j is not None:
                pairs.append((i, best_j))
                start = best_j + 1
    out: list[tuple[int | None, int | None]] = []
    i = j = 0
    for pi, pj in pairs:
        out.extend((k, None) for k in range(i, pi))
        out.extend((None, k) for k in range(j, pj))
        out.append((pi, pj))
        i, j = pi + 1, pj + 1
    out.extend((k, None) for k in range(i, len(xs)))
    out.extend((None, k) for k in range(j, len(ys)))
    return out


def similarity(a: str, b: str, floor: float = 0.0) -> float:
    """Word-level similarity in [0, 1] (difflib ratio over words and punctuation; whitespace
    would make any two sentences look alike); cheap bounds skip hopeless pairs."""
    if a == b:
        return 1.0
    m = matcher([t for t in tokens(a) if not t.isspace()], [t for t in tokens(b) if not t.isspace()])
    if m.real_quick_ratio() < floor or m.quick_ratio() < floor:
        return 0.0
    return m.ratio()


def matcher(a: Sequence[Any], b: Sequence[Any]) -> difflib.SequenceMatcher:
    # autojunk off: with it, frequent tokens (spaces, "the") in texts over 200 items are ignored.
    return difflib.SequenceMatcher(None, a, b, autojunk=False)


def truncation(a: str, b: str) -> int:
    """Characters cut when ``b`` is a shortened copy of ``a``: a prefix, a suffix, or both ends
    kept around a short marker (AnythingLLM's "--prompt truncated for brevity--"). 0 otherwise."""
    if len(b) >= len(a) or not b.strip():
        return 0
    p = _common_prefix(a, b)
    s = _common_prefix(a[p:][::-1], b[p:][::-1])
    middle = len(b) - p - s
    if middle == 0 or (middle <= 64 and p + s >= 0.6 * len(b)):
        return len(a) - len(b)
    return 0


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    k = 0
    while k < n and a[k] == b[k]:
        k += 1
    return k
