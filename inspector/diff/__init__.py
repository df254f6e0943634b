"""Compare two captures segment by segment: did the app change the prompt, or did the model
answer the same prompt differently?

``diff_captures(a, b)`` takes two capture rows as ``inspector.queries.get_capture`` returns
them and aligns what an LLM app assembles into a request (see the AnythingLLM notes: system
prompt + retrieved context + trimmed history + user turn), one segment at a time:

- model and parameters (a table of values; ``response_model`` is the answer's side);
- the system prompt's instructions, with retrieved-context blocks cut out so new search hits
  do not drown a changed sentence (line diff, word diff inside changed lines);
- the retrieved-context snippets, matched between sides (same / changed / added / removed);
- the history before the latest user message (dropped / added / truncated / changed / same);
- the latest user message (word diff), then any tool steps after it (aligned like history);
- tool definitions (by name, JSON diff) and the outputs (text, tool calls, finish reason).

One module per job, read top-down:

- ``model``: the result types (``dataclasses.asdict`` of a ``CaptureDiff`` is ``/api/diff``);
- ``text``: the text-diff engine (word and line diffs, pairing, similarity, truncation);
- ``values``: reading a row's loosely typed fields, writing values as text;
- ``params``, ``prompt``, ``messages``, ``tools``, ``output``: one segment (or two close ones) each;
- ``verdict``: ``diff_captures``, the blame, headline and verdict sentence;
- ``candidates``: the store read behind "compare with…" (captures worth comparing with one);
- ``routes``: the HTTP routes (``/diff``, ``/api/diff``, compare candidates).

Everything but ``candidates`` and ``routes`` is pure.
"""

from prompttap.inspector.diff.model import CaptureDiff
from prompttap.inspector.diff.verdict import diff_captures

__all__ = ["CaptureDiff", "diff_captures"]
