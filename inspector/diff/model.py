"""The diff's result types: plain dataclasses, top to bottom as the diff page shows them.

``dataclasses.asdict`` of a ``CaptureDiff`` is the JSON the inspector serves at ``/api/diff``
(and its OpenAPI schema). Text diffs are lists of ``Op`` runs, so templates build the
``<ins>``/``<del>`` markup themselves and captured text is never trusted as HTML.

Each segment carries a ``status``: the word its sentence in the verdict states (the sentence is
written from it), so the JSON and the verdict cannot disagree. Flags named ``*_identical`` say
exactly what they compare; the system prompt has two, because an app such as AnythingLLM embeds
the retrieved context in it: ``text_identical`` (the whole text, context included) and
``instructions_identical`` (without the context, which the ``context`` segment compares).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import Field

Blame = Literal["prompt", "upstream", "model", "none"]
"""Who made the difference: ``prompt`` (the app sent a different request: prompt, messages,
tools, model or parameters), ``upstream`` (the same request, answered by a different model: a
gateway routed or fell back), ``model`` (the same request, answered differently), ``none``."""

BLAME_HELP = (
    "who made the difference: `prompt` (the app sent a different request: prompt, messages, tools, model or"
    " parameters), `upstream` (the same request was answered by a different model than on the other side: a"
    " gateway or provider routed or fell back), `model` (the same request got a different answer), `none`"
)

# Each segment's ``status`` (described field by field below, and so in the OpenAPI schema).
ParamsStatus = Literal["identical", "changed", "answer_model_changed"]
SystemPromptStatus = Literal[
    "absent",
    "identical",
    "only_a",
    "only_b",
    "instructions_identical",
    "whitespace",
    "values_changed",
    "instructions_changed",
]
RunStatus = Literal["absent", "identical", "changed"]  # context, history, tool steps, tools
TurnStatus = Literal["absent", "identical", "only_a", "only_b", "details_changed", "truncated", "changed"]
OutputStatus = Literal["identical", "changed"]
_RUN_STATUS = Field(description="`absent`: on neither side; `identical`: the same on both sides; `changed`: it differs")


@dataclass(slots=True)
class Op:
    """A run of text in a diff: kept (``eq``), only in A (``del``) or only in B (``ins``)."""

    op: Literal["eq", "del", "ins"]
    text: str


@dataclass(slots=True)
class LineChange:
    """One line of a line diff. ``ops`` is the word diff of a ``changed`` line (A → B)."""

    kind: Literal["same", "added", "removed", "changed"]
    a_no: int | None  # 1-based line number in A
    b_no: int | None
    a: str | None
    b: str | None
    ops: list[Op] = field(default_factory=list)
    fold: int = 0  # > 0: inside a run of this many unchanged lines far from any change (shown folded)


@dataclass(slots=True)
class ValueChange:
    """One compared scalar: values as JSON text, ``None`` when the capture does not set it."""

    name: str
    a: str | None
    b: str | None
    changed: bool
    side: Literal["request", "response"] = "request"


@dataclass(slots=True)
class JsonChange:
    """One difference between two JSON documents, at a dotted ``path`` (``[]`` for set-like lists)."""

    path: str
    kind: Literal["added", "removed", "changed"]
    a: str | None  # JSON text
    b: str | None


@dataclass(slots=True)
class CaptureRef:
    """Which capture a side is, for headings and links."""

    id: str
    started_at: str
    route: str
    api: str
    model: str  # the model the request asked for
    response_model: str  # the model the answer says it came from ("" when it does not say)
    status_code: int
    outcome: str
    thread_id: str
    prompt_template_id: str
    parse_error: str


@dataclass(slots=True)
class ParamsDiff:
    """Model and parameters: every compared value, ``changed`` marking those that differ."""

    status: Annotated[
        ParamsStatus,
        Field(
            description="`identical`: every row is the same; `changed`: the app's request differs (api, model,"
            " stream or a parameter); `answer_model_changed`: the request is the same but the answer's model"
            " (`response_model`) differs, or only one side names it"
        ),
    ]
    identical: Annotated[bool, Field(description="no row differs, the answer's model included")]
    request_identical: Annotated[
        bool, Field(description="api, model, stream and parameters (what the app chose) are the same")
    ]
    rows: list[ValueChange]
    summary: str


@dataclass(slots=True)
class SystemPromptDiff:
    """The system prompt's instructions (retrieved context replaced by ``{{context}}``)."""

    status: Annotated[
        SystemPromptStatus,
        Field(
            description="`absent`: no system prompt on either side; `identical`: the whole text, byte for byte;"
            " `only_a`/`only_b`; `instructions_identical`: the instructions are the same and only the retrieved"
            " context inside the text differs (see `context`); `whitespace`: only whitespace differs;"
            " `values_changed`: same template, per-request values (dates, numbers...) differ;"
            " `instructions_changed`: the instructions differ"
        ),
    ]
    text_identical: Annotated[
        bool, Field(description="the whole system prompt, byte for byte, retrieved context included")
    ]
    instructions_identical: Annotated[
        bool,
        Field(
            description="the instructions: the system prompt without the retrieved context, line ends and"
            " trailing spaces normalized"
        ),
    ]
    same_template: bool  # same prompt_template_id: only per-request values (dates, numbers...) differ
    changed_values: list[str]  # kinds of per-request values that differ, e.g. ["date", "time"]
    a_template_id: str
    b_template_id: str
    lines: list[LineChange]
    summary: str


@dataclass(slots=True)
class SnippetChange:
    """A retrieved-context snippet matched across sides; ``ops`` is the word diff when ``changed``."""

    kind: Literal["same", "changed", "added", "removed"]
    a_index: int | None
    b_index: int | None
    a: str | None
    b: str | None
    similarity: float
    ops: list[Op] = field(default_factory=list)


@dataclass(slots=True)
class ContextDiff:
    """Retrieved context: snippets in B's order, removed ones next to where they stood."""

    status: Annotated[RunStatus, _RUN_STATUS]
    identical: Annotated[bool, Field(description="the same snippets in the same order, byte for byte")]
    a_count: int
    b_count: int
    same: int
    changed: int
    added: int
    removed: int
    replaced: int  # min(added, removed): a snippet swapped for an unrelated one
    reordered: bool  # matched snippets come in a different order
    snippets: list[SnippetChange]
    summary: str


@dataclass(slots=True)
class MessageView:
    """A message reduced to what a diff shows; ``attachments`` describe non-text parts."""

    role: str
    content: str
    tool_calls: list[dict[str, str]]  # {"id", "name", "arguments"}
    tool_call_id: str | None
    name: str | None
    attachments: list[str]


@dataclass(slots=True)
class MessageChange:
    """One aligned message. ``truncated``: B's content is a shortened copy of A's."""

    kind: Literal["same", "dropped", "added", "truncated", "changed"]
    a_index: int | None  # position in the capture's whole ``messages`` list
    b_index: int | None
    role: str
    a: MessageView | None
    b: MessageView | None
    ops: list[Op] = field(default_factory=list)  # word diff of the content (changed/truncated)
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class HistoryDiff:
    """A run of messages aligned on fingerprints (role, normalized content, tool calls)."""

    status: Annotated[RunStatus, _RUN_STATUS]
    identical: Annotated[bool, Field(description="the same messages, byte for byte (ids included)")]
    a_count: int
    b_count: int
    same: int
    dropped: int
    added: int
    truncated: int
    changed: int
    dropped_earliest: bool  # every dropped message came before the first one kept (a sliding window)
    follows: Literal["", "b_follows_a", "a_follows_b"]  # one side is a later turn of the other's chat
    messages: list[MessageChange]
    summary: str


@dataclass(slots=True)
class TurnDiff:
    """The latest user message."""

    status: Annotated[
        TurnStatus,
        Field(
            description="`absent`: on neither side; `identical`: byte for byte; `only_a`/`only_b`;"
            " `details_changed`: same text, other details differ (role, tool calls or their ids, attachments,"
            " name); `truncated`: B's text is a shortened copy of A's; `changed`: the text differs"
        ),
    ]
    identical: Annotated[bool, Field(description="the same message, byte for byte (ids included)")]
    a: MessageView | None
    b: MessageView | None
    ops: list[Op]
    notes: list[str]
    summary: str


@dataclass(slots=True)
class ToolChange:
    """A tool definition matched by name; ``changes`` lists JSON paths that differ."""

    name: str
    kind: Literal["same", "added", "removed", "changed"]
    changes: list[JsonChange]
    a: str | None  # definition as indented JSON
    b: str | None


@dataclass(slots=True)
class ToolsDiff:
    """Tool definitions offered in the request."""

    status: Annotated[RunStatus, _RUN_STATUS]
    identical: Annotated[bool, Field(description="the same definitions in the same order")]
    a_count: int
    b_count: int
    tools: list[ToolChange]
    summary: str


@dataclass(slots=True)
class ToolCallChange:
    """A tool call in the output, matched by name and order (call ids are ignored)."""

    kind: Literal["same", "added", "removed", "changed"]
    name: str
    a_arguments: str | None
    b_arguments: str | None
    changes: list[JsonChange]


@dataclass(slots=True)
class OutputDiff:
    """The answer: text, tool calls and how it ended."""

    status: Annotated[
        OutputStatus,
        Field(description="`identical`: text, tool calls and the fields below are the same; `changed`: not"),
    ]
    identical: bool
    text_identical: bool
    ops: list[Op]
    tool_calls_identical: bool
    tool_calls: list[ToolCallChange]
    fields: list[ValueChange]  # finish_reason, status_code, outcome, error, incomplete
    summary: str


@dataclass(slots=True)
class CaptureDiff:
    """Everything ``diff_captures`` found, top to bottom as the diff page shows it."""

    a: CaptureRef
    b: CaptureRef
    verdict: str  # plain sentences, one per segment
    blame: Annotated[Blame, Field(description=BLAME_HELP)]
    headline: str  # the blame in one sentence, naming what changed
    notes: list[str]
    params: ParamsDiff
    system_prompt: SystemPromptDiff
    context: ContextDiff
    history: HistoryDiff
    turn: TurnDiff
    steps: HistoryDiff  # tool calls/results after the latest user message (agent loops)
    tools: ToolsDiff
    output: OutputDiff

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
