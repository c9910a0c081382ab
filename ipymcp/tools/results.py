"""The structured results of ipymcp's tools: each tool's ``structuredContent`` and the output
schema ``tools/list`` shows for it. Field names are public API (the README lists them): add
fields freely, never rename or remove one.

Tools whose answer is text and images for the agent return a ``CallToolResult`` annotated with
one of these (``Annotated[CallToolResult, ExecuteResult]``): the agent reads the content, a
client or program reads the structured facts. Tools that answer with data return the TypedDict
itself. Property titles are left out of the schemas (the names say it; ``tools/list`` stays small).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, with_config
from typing_extensions import NotRequired, TypedDict

from ..policy.permissions import Level


def _untitled_properties(schema: dict[str, Any]) -> None:
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)


_SCHEMA = ConfigDict(json_schema_extra=_untitled_properties)
# For results that also carry fields of their own kind (a preview's type-specific facts).
_OPEN_SCHEMA = ConfigDict(json_schema_extra=_untitled_properties, extra="allow")

Id = int | str  # a history entry: the execution count, or "a12" for the agent's 12th execute


# -- kernel -----------------------------------------------------------------------------------


@with_config(_SCHEMA)
class ExecuteResult(TypedDict):
    status: Literal["ok", "error", "interrupted"]
    execution_count: int | None  # mode="cell": the cell's number; quiet: null
    duration_s: float
    history_id: str | None  # get_output(history_id) pages through every output


@with_config(_SCHEMA)
class VariableList(TypedDict):
    # Rows are typed loosely in the schema on purpose: clients (the SDK's among them, and
    # ``ipymcp connect``'s upstream) check every row of a result against the schema, in Python
    # 10,000 typed rows cost ~340 ms, plain objects ~60 ms. The README lists the row's fields.
    variables: Annotated[list[dict[str, Any]], Field(description="each: name, type, summary, size_bytes (when known)")]
    total: int  # matching names, listed or not
    truncated: bool


@with_config(_OPEN_SCHEMA)
class VariablePreview(TypedDict):
    """type and its own facts (shape, dtype, head…) when read; evaluated=false, what, note when reading would run code"""

    name: str
    type: NotRequired[str]
    evaluated: NotRequired[bool]
    notes: NotRequired[list[str]]


@with_config(_SCHEMA)
class UserCell(TypedDict):
    execution_count: int | None
    code_head: str
    running_s: float
    frames: list[dict[str, Any]]


@with_config(_SCHEMA)
class AgentJobStatus(TypedDict):
    code_head: str
    running_s: float


@with_config(_SCHEMA)
class KernelStatus(TypedDict):
    state: Literal["idle", "busy"]
    execution_count: int  # of the last cell that finished: the user's next cell is execution_count + 1
    notebook_path: str | None
    kernel_id: str
    permissions: Level
    approval: Literal["on", "off"]
    pid: int
    cwd: str
    rss_bytes: int | None
    versions: dict[str, str]
    features: dict[str, bool]
    frontend: dict[str, Any] | None
    user_cell: NotRequired[UserCell]
    agent_job: NotRequired[AgentJobStatus]
    agent_jobs_queued: NotRequired[int]


@with_config(_SCHEMA)
class NamespaceReset(TypedDict):
    removed: int
    kept: list[str]
    execution_count: int
    not_found: NotRequired[list[str]]


@with_config(_SCHEMA)
class Restart(TypedDict):
    """restarting: started (direct HTTP: retry kernel_status); back: ipymcp answers in the new kernel"""

    state: Literal["restarting", "back"]
    kernel_id: str
    pid: int  # the old kernel's while restarting, the new one's once back
    url: str
    via: NotRequired[str]


# -- files and processes ------------------------------------------------------------------------


@with_config(_SCHEMA)
class FileRead(TypedDict):
    path: str
    kind: Literal["text", "notebook", "image", "binary", "empty"]
    size_bytes: int
    first_line: NotRequired[int]  # 1-based, as numbered in the text
    last_line: NotRequired[int]
    total_lines: NotRequired[int | None]  # null: too large to count
    next_offset: NotRequired[int | None]  # read_file(path, offset=next_offset); null at the end


@with_config(_SCHEMA)
class CommandResult(TypedDict):
    exit_code: int | None  # negative: killed by that signal; null: timed out
    duration_s: float
    pid: int
    timed_out: bool


@with_config(_SCHEMA)
class ProcessStarted(TypedDict):
    id: int
    pid: int
    command: str
    cwd: str
    next: str


@with_config(_SCHEMA)
class ProcessOutput(TypedDict):
    running: bool
    exit_code: int | None
    dropped_bytes: int  # output lost because it came faster than it was read


@with_config(_SCHEMA)
class ProcessInfo(TypedDict):
    id: int
    pid: int
    command: str
    cwd: str
    state: Literal["running", "exited"]
    started: str
    unread_bytes: int
    exit_code: NotRequired[int | None]
    signal: NotRequired[int]


@with_config(_SCHEMA)
class ProcessList(TypedDict):
    processes: list[ProcessInfo]


# -- history ------------------------------------------------------------------------------------


@with_config(_SCHEMA)
class HistoryResult(TypedDict):
    ids: list[Id]  # oldest first, as shown
    store: dict[str, int]  # the history's size and budget (cells, bytes, budget_bytes…)


@with_config(_SCHEMA)
class OutputPage(TypedDict):
    id: Id
    total_chars: int
    offset: int
    end: int  # get_output(id, offset=end) for the next page, while end < total_chars
    images: int
    images_returned: int


# -- the notebook -------------------------------------------------------------------------------


@with_config(_SCHEMA)
class NotebookRead(TypedDict):
    live: bool  # false: read from the saved file (unsaved edits missing)
    path: str
    n_cells: int


@with_config(_SCHEMA)
class CellRun(TypedDict):
    cell_id: str
    index: int
    execution_count: int | None
    status: Literal["ok", "error"]
    duration_s: float


@with_config(_SCHEMA)
class CellInserted(TypedDict):
    """inserted=false: offered as a proposal instead; with execute=True, the run's facts too"""

    inserted: bool
    cell_id: str | None
    index: int | None
    execution_count: NotRequired[int | None]
    status: NotRequired[Literal["ok", "error"]]
    duration_s: NotRequired[float]


@with_config(_OPEN_SCHEMA)
class ActiveCell(TypedDict):
    path: str
    index: int
    cell: dict[str, Any] | None
    mode: str


# -- ipymcp connect's own tools ------------------------------------------------------------------


@with_config(_SCHEMA)
class NotebookRow(TypedDict):
    notebook_path: str | None
    kernel_id: str | None
    started: str | None
    cwd: str | None
    state: str  # idle, busy, unreachable, "no answer in 8 s"…
    selected: bool  # your calls go to this one


@with_config(_SCHEMA)
class NotebookList(TypedDict):
    notebooks: list[NotebookRow]
    selected: NotRequired[str]
    note: NotRequired[str]


@with_config(_SCHEMA)
class NotebookSelected(TypedDict):
    selected: str
    notebook_path: str | None
    kernel_id: str | None
