"""Tools, compared as JSON: the definitions the request offers (matched by name) and the tool
calls the answer makes (matched by name and order; call ids are ignored), with ``json_diff``
listing what differs by path."""

from __future__ import annotations

from typing import Any, Literal

from prompttap.inspector.diff.model import JsonChange, RunStatus, ToolCallChange, ToolChange, ToolsDiff
from prompttap.inspector.diff.text import pair_up
from prompttap.inspector.diff.values import as_str, clip, parse_args, pretty, to_json


def diff_tools(ta: list[dict[str, Any]], tb: list[dict[str, Any]]) -> ToolsDiff:
    """Tool definitions matched by name (a repeated name is matched by occurrence)."""
    ka, kb = _keyed(ta), _keyed(tb)
    out: list[ToolChange] = []
    for key in [*ka, *(k for k in kb if k not in ka)]:
        name = key[0]
        da, db = ka.get(key), kb.get(key)
        if da is None:
            out.append(ToolChange(name, "added", [], None, pretty(db)))
        elif db is None:
            out.append(ToolChange(name, "removed", [], pretty(da), None))
        else:
            changes = json_diff(
                {k: v for k, v in da.items() if k != "name"}, {k: v for k, v in db.items() if k != "name"}
            )
            out.append(ToolChange(name, "changed" if changes else "same", changes, pretty(da), pretty(db)))
    identical = ta == tb
    added = [t.name for t in out if t.kind == "added"]
    removed = [t.name for t in out if t.kind == "removed"]
    changed = [t.name for t in out if t.kind == "changed"]
    if not ta and not tb:
        summary = "No tools."
    elif identical:
        summary = f"Tools identical ({len(ta)})."
    else:
        parts = []
        for names, verb in ((added, "added"), (removed, "removed"), (changed, "changed")):
            if names:
                parts.append(
                    f"{len(names)} {verb} ({', '.join(clip(n) for n in names[:5])}{', …' if len(names) > 5 else ''})"
                )
        summary = "Tools: " + ("; ".join(parts) if parts else "same definitions in a different order") + "."
    status: RunStatus = "absent" if not ta and not tb else "identical" if identical else "changed"
    return ToolsDiff(status, identical, len(ta), len(tb), out, summary)


def _keyed(tools: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    out: dict[tuple[str, int], dict[str, Any]] = {}
    seen: dict[str, int] = {}
    for t in tools:
        name = as_str(t.get("name")) or as_str(t.get("type")) or "(unnamed)"
        n = seen.get(name, 0)
        seen[name] = n + 1
        out[(name, n)] = t
    return out


def json_diff(a: Any, b: Any, path: str = "") -> list[JsonChange]:
    """Differences by path; lists of scalars compare as sets (``path[]``), other lists by index."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[JsonChange] = []
        for key in [*a, *(k for k in b if k not in a)]:
            sub = f"{path}.{key}" if path else str(key)
            if key not in b:
                out.append(JsonChange(sub, "removed", to_json(a[key]), None))
            elif key not in a:
                out.append(JsonChange(sub, "added", None, to_json(b[key])))
            else:
                out.extend(json_diff(a[key], b[key], sub))
        return out
    if isinstance(a, list) and isinstance(b, list):
        if a == b:
            return []
        if all(not isinstance(v, dict | list) for v in (*a, *b)):
            ja, jb = [to_json(v) for v in a], [to_json(v) for v in b]
            removed = [v for v in ja if v not in jb]
            added = [v for v in jb if v not in ja]
            if not removed and not added:
                return [JsonChange(path or "(root)", "changed", to_json(a), to_json(b))]  # same items, new order
            return [JsonChange(f"{path}[]", "removed", v, None) for v in removed] + [
                JsonChange(f"{path}[]", "added", None, v) for v in added
            ]
        out = []
        for i in range(max(len(a), len(b))):
            sub = f"{path}[{i}]"
            if i >= len(b):
                out.append(JsonChange(sub, "removed", to_json(a[i]), None))
            elif i >= len(a):
                out.append(JsonChange(sub, "added", None, to_json(b[i])))
            else:
                out.extend(json_diff(a[i], b[i], sub))
        return out
    if a == b and type(a) is type(b):
        return []
    return [JsonChange(path or "(root)", "changed", to_json(a), to_json(b))]


def diff_tool_calls(ca: list[dict[str, Any]], cb: list[dict[str, Any]]) -> list[ToolCallChange]:
    out: list[ToolCallChange] = []
    for i, j in pair_up(ca, cb, _same_name, 0.5):
        if i is None and j is not None:
            y = cb[j]
            out.append(ToolCallChange("added", as_str(y.get("name")), None, as_str(y.get("arguments")), []))
        elif j is None and i is not None:
            x = ca[i]
            out.append(ToolCallChange("removed", as_str(x.get("name")), as_str(x.get("arguments")), None, []))
        elif i is not None and j is not None:
            x, y = ca[i], cb[j]
            pa, pb = parse_args(x.get("arguments")), parse_args(y.get("arguments"))
            changes = json_diff(pa, pb)
            kind: Literal["same", "changed"] = "changed" if changes else "same"
            out.append(
                ToolCallChange(
                    kind, as_str(y.get("name")), as_str(x.get("arguments")), as_str(y.get("arguments")), changes
                )
            )
    return out


def _same_name(x: dict[str, Any], y: dict[str, Any]) -> float:
    return float(as_str(x.get("name")) == as_str(y.get("name")))
