"""Every read (and the one delete) the inspector makes, as named functions with bound parameters.

No SQL here is built from user input: filters choose among fixed fragments and their values
travel as ClickHouse query parameters. One module per kind of read:

- ``filters``: the filter, the keyset cursor and the time values every read shares;
- ``captures``: the list, one capture, its neighbours (thread, replays), the delete;
- ``groups``: a thread's captures, prompt templates and their members;
- ``stats``: the stats page in one scan;
- ``rows``: store rows decoded for the inspector (JSON parsed, ids and times as strings).
"""

from prompttap.inspector.queries.captures import (
    count_captures,
    delete_capture,
    explain_search,
    filter_options,
    find_replay,
    get_capture,
    list_captures,
    previous_in_thread,
    replays_of,
)
from prompttap.inspector.queries.filters import CaptureFilter, Cursor, ch_time, cursor_of, parse_time
from prompttap.inspector.queries.groups import template_groups, template_members, thread_captures
from prompttap.inspector.queries.stats import stats

__all__ = [
    "CaptureFilter",
    "Cursor",
    "ch_time",
    "count_captures",
    "cursor_of",
    "delete_capture",
    "explain_search",
    "filter_options",
    "find_replay",
    "get_capture",
    "list_captures",
    "parse_time",
    "previous_in_thread",
    "replays_of",
    "stats",
    "template_groups",
    "template_members",
    "thread_captures",
]
