"""Notebook tools: read and write the cells the user sees, live, through the ipymcp labextension.

read_notebook, insert_cell, edit_cell, delete_cell, move_cell, execute_cell, save_notebook,
get_active_cell. Without the extension (VS Code, Colab, a JupyterLab without it) read_notebook
reads the saved .ipynb and the write tools explain what is missing.
"""

from __future__ import annotations

import datetime as _dt
import time
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent
from pydantic import Field

from .. import pages
from ..content import Budget, shape_outputs
from ..frontend import fallback
from ..frontend.comm import (
    FrontendError,
    FrontendLink,
    FrontendTimeout,
    NoFrontendError,
    StaleCellError,
    ViewGoneError,
)
from ..frontend.protocol import Op
from ..kernel.status import AgentRun, CellTracker
from ..policy.approval_detail import Diff
from ..server.sdk_compat import client_name
from ..text import one_line, report_progress
from .base import Services, ToolSet
from .results import ActiveCell, CellInserted, CellRun, NotebookRead

tools = ToolSet()

CellId = Annotated[str, Field(description="the cell's id, as read_notebook shows it")]
Revision = Annotated[str | None, Field(description="the revision you read (default: your last read)")]
STALE_HINT = "the user changed this cell, read it again (read_notebook) and redo your change on the new source"


def _link(services: Services) -> FrontendLink:
    if services.frontend is None:
        raise ToolError("the notebook link did not start (see the ipymcp log); notebook tools are unavailable")
    return services.frontend


def _call(services: Services, op: Op, args: dict[str, Any], timeout: float = 15.0) -> dict[str, Any]:
    """One request to the notebook view; its failures as errors the agent can act on."""
    try:
        return _link(services).request(op, args, timeout)
    except StaleCellError as err:
        raise ToolError(f"{STALE_HINT} ({err})") from None
    except NoFrontendError as err:
        raise ToolError(f"cannot {op.replace('_', ' ')}: {err}") from None
    except FrontendError as err:
        raise ToolError(str(err)) from None


def _expected_revision(services: Services, cell_id: str, revision: str | None) -> str:
    expected = revision or _link(services).seen.revision(cell_id)
    if not expected:
        raise ToolError(
            f"you have not read cell {cell_id} yet: call read_notebook (or get_active_cell) first, so that "
            "you edit what the user currently sees"
        )
    return expected


def _provenance(ctx: Context | None, tool: str) -> dict[str, Any]:
    """metadata.ipymcp of a cell the agent wrote: which tool, when, for which client."""
    mark: dict[str, Any] = {
        "by": "agent",
        "tool": tool,
        "at": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    client = client_name(ctx.session) if ctx is not None else None
    if client is not None:
        mark["client"] = client
    return mark


def _insert_level(arguments: dict[str, Any]) -> str:
    """Inserting is an edit; running the new code cell is an execution (any truthy ``execute``
    counts, as the argument's validation would accept "true" or 1)."""
    runs = arguments.get("execute") not in (None, False, 0, "false", "False", "0")
    return "execute" if runs and arguments.get("cell_type", "code") not in ("markdown", "raw") else "edit"


def _shown_edit(services: Services, arguments: dict[str, Any]) -> Diff | None:
    """The approval prompt shows edit_cell as a diff against the source the agent last read."""
    source = arguments.get("source")
    if not isinstance(source, str):
        return None
    cell_id, revision = arguments.get("cell_id"), arguments.get("revision")
    link = services.frontend
    before = link.seen.source(cell_id, revision) if link is not None and isinstance(cell_id, str) else None
    return Diff(before, source, ("source",), f"cell {cell_id}")


@tools.tool(level="read", read_only=True, title="Read the notebook the user sees")
def read_notebook(
    services: Services,
    include_outputs: Annotated[bool, Field(description="include each code cell's outputs (text, images)")] = True,
    start: Annotated[int, Field(description="first cell index", ge=0)] = 0,
    limit: Annotated[int | None, Field(description="at most this many cells", ge=1)] = None,
) -> Annotated[CallToolResult, NotebookRead]:
    """Read the cells of the notebook open in the user's JupyterLab / Notebook 7, live.

    Each cell comes with its id (address cells by id in the write tools), type, source,
    execution count, a revision (edit_cell/delete_cell are refused if the user changed the cell
    since you read it), whether the agent wrote it, and its outputs within a budget (images as
    images). Also says which cell is active and whether there are unsaved changes. Works
    while a user cell runs. Without the ipymcp extension in the frontend it reads the saved
    .ipynb instead and says so: unsaved edits are then missing.
    """
    link = _link(services)
    args = {"include_outputs": include_outputs, "start": start, "limit": limit}
    try:
        notebook = link.request("read_notebook", args, 15.0)
        live = True
    except NoFrontendError as err:
        notebook = _read_from_disk(services, start, limit, str(err))
        live = False
    except FrontendError as err:
        raise ToolError(str(err)) from None
    for cell in notebook["cells"]:
        link.seen.remember(cell)
    view = link.ranked_views()[0].describe()["app"] if link.views else "?"
    budget = Budget.from_config(
        services.config, fetch_hint="read fewer cells (start/limit) or inspect the data with execute"
    )
    return pages.render_notebook(notebook, live, include_outputs, budget, view, _kernel_sentence(services))


@tools.tool(level=_insert_level, read_only=False, title="Insert a cell into the notebook")
async def insert_cell(
    services: Services,
    source: Annotated[str, Field(description="the cell's source")],
    ctx: Context,
    cell_type: Annotated[Literal["code", "markdown", "raw"], Field(description="cell type")] = "code",
    index: Annotated[int | None, Field(description="position (0 = top, -1 = end); default: the end")] = None,
    after_cell_id: Annotated[str | None, Field(description="insert right after this cell (wins over index)")] = None,
    execute: Annotated[bool, Field(description="run it right away (code) / render it (markdown)")] = False,
    timeout: Annotated[float, Field(description="with execute: seconds to wait for the run", gt=0)] = 60,
) -> Annotated[CallToolResult, CellInserted]:
    """Insert a new cell into the user's open notebook, where they see it, optionally running it.

    Returns the new cell's id and index (and, with execute=True, its outputs, as execute_cell).
    The cell is marked as written by the agent (metadata.ipymcp). The notebook is not saved:
    call save_notebook if the change must reach the file. Without the ipymcp extension
    (VS Code, a JupyterLab without it) the cell cannot be inserted; in VS Code / JupyterLab the
    code is then offered as a labelled proposal that appears below the next cell the user runs.
    """
    link = _link(services)
    args = {
        "source": source,
        "cell_type": cell_type,
        "index": index,
        "after_cell_id": after_cell_id,
        "metadata": {"ipymcp": _provenance(ctx, "insert_cell")},
    }
    try:
        cell = await link.arequest("insert_cell", args, 15.0)
    except NoFrontendError as err:
        return _propose_instead(services, source, cell_type, str(err))
    except FrontendError as err:
        raise ToolError(str(err)) from None
    link.seen.remember(cell)
    fallback.record(services.activity, "insert_cell", source, f"cell {cell['index']} ({cell_type})")
    head = f"inserted {cell_type} cell {cell['id']} at index {cell['index']} (revision {cell['revision']})"
    inserted: CellInserted = {"inserted": True, "cell_id": cell["id"], "index": cell["index"]}
    if not execute:
        text = [TextContent(type="text", text=head)]
        return CallToolResult(content=text, structured_content=dict(inserted), meta={"cell_id": cell["id"]})
    result = await _run_cell(services, cell["id"], timeout, ctx, head)
    run = result.structured_content or {}
    inserted.update(execution_count=run.get("execution_count"), status=run.get("status", "ok"))
    inserted["duration_s"] = run.get("duration_s", 0.0)
    return result.model_copy(update={"structured_content": dict(inserted)})


@tools.tool(level="edit", read_only=False, destructive=True, title="Replace a cell's source", approval_diff=_shown_edit)
def edit_cell(
    services: Services,
    cell_id: CellId,
    source: Annotated[str, Field(description="the new, complete source of the cell")],
    ctx: Context,
    revision: Annotated[
        str | None, Field(description="the revision you read (default: the one your last read showed)")
    ] = None,
) -> str:
    """Replace the source of a cell in the user's open notebook (does not run it).

    Refused with "the user changed this cell, read it again" if the cell changed since you last
    read it (read_notebook / get_active_cell / your own insert or edit): the user's edits are
    never overwritten silently. Outputs are kept until the cell runs again (execute_cell).
    """
    args = {
        "cell_id": cell_id,
        "source": source,
        "revision": _expected_revision(services, cell_id, revision),
        "provenance": _provenance(ctx, "edit_cell"),
    }
    cell = _call(services, "edit_cell", args)
    _link(services).seen.remember(cell)
    fallback.record(services.activity, "edit_cell", source, f"cell {cell['index']}")
    return f"cell {cell_id} (index {cell['index']}) now has the new source; revision {cell['revision']}"


@tools.tool(level="edit", read_only=False, destructive=True, title="Delete a cell")
def delete_cell(services: Services, cell_id: CellId, revision: Revision = None) -> str:
    """Delete a cell from the user's open notebook (the user can undo it with Ctrl+Z / Edit > Undo).

    Refused if the user changed the cell since you last read it.
    """
    cell = _call(services, "delete_cell", {"cell_id": cell_id, "revision": _expected_revision(services, cell_id, revision)})
    _link(services).seen.forget(cell_id)
    fallback.record(services.activity, "delete_cell", cell.get("source", ""), f"was cell {cell['index']}")
    return f"deleted {cell['cell_type']} cell {cell_id} (was at index {cell['index']})"


@tools.tool(level="edit", read_only=False, title="Move a cell")
def move_cell(
    services: Services,
    cell_id: CellId,
    to_index: Annotated[int, Field(description="the cell's new index (0 = top)", ge=0)],
) -> str:
    """Move a cell to another position in the user's open notebook. Returns its new index."""
    cell = _call(services, "move_cell", {"cell_id": cell_id, "to_index": to_index})
    fallback.record(services.activity, "move_cell", cell.get("source", ""), f"to index {cell['index']}")
    return f"cell {cell_id} is now at index {cell['index']}"


@tools.tool(level="execute", read_only=False, destructive=True, title="Run a notebook cell")
async def execute_cell(
    services: Services,
    cell_id: CellId,
    ctx: Context,
    timeout: Annotated[float, Field(description="seconds to wait for the run to finish", gt=0)] = 60,
) -> Annotated[CallToolResult, CellRun]:
    """Run a cell in the user's notebook, as if they pressed Shift+Enter, and return its outputs.

    The user sees it run and its outputs appear in the cell; the run gets an execution count.
    If the kernel is busy (a user cell runs), the run queues behind it, with progress
    notifications. On timeout the cell may still be queued or running in the notebook: read it
    later with read_notebook. Markdown cells are rendered. Errors come back as a tool error with
    the traceback.
    """
    return await _run_cell(services, cell_id, timeout, ctx, "")


async def _run_cell(services: Services, cell_id: str, timeout: float, ctx: Context, head: str) -> CallToolResult:
    cells = services.cells

    async def tick(elapsed: float) -> None:
        running = cells.running
        if running is not None and running.agent_cell_id == cell_id:
            message = f"running for {time.monotonic() - running.started:.0f} s"
        elif running is not None:
            message = f"queued: {cells.describe_wait()}"
        else:
            message = f"waiting for the notebook to run it ({elapsed:.0f} s)"
        await report_progress(ctx.report_progress, elapsed, message)

    started = time.monotonic()
    try:
        with cells.agent_request(cell_id) as run:  # its run is the agent's, not the user's
            try:
                cell = await _link(services).arequest("execute_cell", {"cell_id": cell_id}, timeout, tick)
            except ViewGoneError as err:  # inside: a queued request must stay the agent's
                raise ToolError(_run_without_its_view(cells, run, err.received)) from None
    except StaleCellError as err:
        raise ToolError(f"{STALE_HINT} ({err})") from None
    except FrontendTimeout:
        raise ToolError(
            f"cell {cell_id} did not finish within {timeout:g} s; it may still be queued or running in "
            "the notebook. Check later with read_notebook, or kernel_status."
        ) from None
    except FrontendError as err:
        raise ToolError(f"cannot execute cell {cell_id}: {err}") from None
    _link(services).seen.remember(cell)
    budget = Budget.from_config(
        services.config, fetch_hint="read fewer cells (start/limit) or inspect the data with execute"
    )
    content = shape_outputs(cell.get("outputs") or [], budget)
    count = cell.get("execution_count")
    lead = (f"{head}\n" if head else "") + (
        f"ran cell {cell_id} (index {cell['index']}, In [{count if count is not None else ' '}])"
    )
    blocks = [TextContent(type="text", text=lead + (":" if content else "; no output")), *content]
    ok = bool(cell.get("ok", True))
    summary = one_line(" ".join(getattr(b, "text", "") for b in content), 120) if content else "no output"
    fallback.record(services.activity, "execute_cell", cell.get("source", ""), summary if ok else "error: " + summary, ok)
    run: CellRun = {
        "cell_id": cell_id,
        "index": cell["index"],
        "execution_count": count,
        "status": "ok" if ok else "error",
        "duration_s": round(time.monotonic() - started, 3),
    }
    meta = {"cell_id": cell_id, "execution_count": count, "status": run["status"], "duration_s": run["duration_s"]}
    return CallToolResult(content=blocks, is_error=not ok, structured_content=dict(run), meta=meta)


def _run_without_its_view(cells: CellTracker, run: AgentRun, received: bool) -> str:
    """What became of an execute_cell whose notebook view closed (reload, closed tab) before it
    reported the run: what the kernel knows, since running it again may run it twice."""
    gone = f"the notebook view that was to run cell {run.cell_id} went away (page reloaded or tab closed)"
    started = run.cell
    if started is not None and not started.finished:
        return (
            f"{gone} while the cell ran: it is still running in the kernel (In [{started.execution_count}], for "
            f"{time.monotonic() - started.started:.0f} s). The notebook will not show its outputs; get_history has "
            "them once it ends (kernel_status says when). Do not run it again."
        )
    if started is not None:
        return (
            f"{gone} before it reported the run: the cell ran in the kernel (In [{started.execution_count}]). "
            "The notebook does not show its outputs; get_history has them. Do not run it again."
        )
    if not received:
        return f"{gone} before it received the request: the cell did not run; retry (read_notebook first)."
    cells.keep_after_view_gone(run)
    waiting = f" behind {cells.describe_wait()}" if cells.running is not None else ""
    return (
        f"{gone} after it received the request, before the cell started. Most likely (a guess: the kernel "
        f"cannot show its queue) it is queued in the kernel{waiting} and runs when that ends, as the agent's "
        "cell (kernel_status: agent_cell); the notebook will not show its outputs, get_history will. It may "
        "also never have been sent. Check kernel_status and get_history before running it again."
    )


@tools.tool(level="edit", read_only=False, idempotent=True, title="Save the notebook")
def save_notebook(services: Services) -> str:
    """Save the user's open notebook to its .ipynb file (like Ctrl+S). Returns the path."""
    # The activity line goes out before the save request (same thread, same IOPub order): the
    # saved file has it, and no update after the save makes the notebook dirty again.
    target = services.notebook_path or "the open notebook"
    fallback.record(services.activity, "save_notebook", target, flush=True)
    try:
        saved = _call(services, "save", {}, 30.0)
    except ToolError as err:
        fallback.record(services.activity, "save_notebook", target, f"failed: {err}", ok=False)
        raise
    if saved.get("dirty"):
        return f"saved {saved.get('path')}, but it changed again during the save (it has unsaved changes now)"
    return f"saved {saved.get('path')}"


@tools.tool(level="read", read_only=True, title="The user's active cell")
def get_active_cell(services: Services) -> ActiveCell:
    """Which cell the user is on: its id, index, source, revision, the editor mode and selection.

    Use it to act on "this cell" when the user refers to it. Needs the ipymcp extension.
    """
    active = _call(services, "get_active", {})
    if active.get("cell"):
        _link(services).seen.remember(active["cell"])
    return active


def _read_from_disk(services: Services, start: int, limit: int | None, why: str) -> dict[str, Any]:
    try:
        notebook = fallback.read_ipynb(services.notebook_path)
    except (OSError, ValueError) as err:
        raise ToolError(f"no live notebook view ({why}) and the saved file cannot be read: {err}") from None
    stop = None if limit is None else start + limit
    notebook["cells"] = notebook["cells"][start:stop]
    notebook["why"] = why
    return notebook


def _propose_instead(services: Services, source: str, cell_type: str, why: str) -> CallToolResult:
    frontend = services.frontend.capabilities()["frontend"] if services.frontend is not None else "jupyter"
    if cell_type != "code" or frontend == "colab":
        raise ToolError(f"cannot insert a cell: {why}")
    fallback.propose_cell(services.shell, source)
    fallback.record(services.activity, "insert_cell (proposal)", source, "appears below the next cell the user runs")
    text = (
        f"NOT inserted: {why}. Instead the code was offered to the user as a PROPOSAL "
        "(set_next_input): it appears, labelled as a proposal and not run, below the next cell the "
        "user runs. Tell the user about it; do not assume it ran."
    )
    proposed: CellInserted = {"inserted": False, "cell_id": None, "index": None}
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=dict(proposed), meta={"proposed": True})


def _kernel_sentence(services: Services) -> str:
    """Busy or idle from the kernel's own tracking (the view's kernel status is busy while it
    handles this very request on kernels without comm subshells)."""
    cells = services.cells
    if cells.user_cell_busy() or services.main_thread.current is not None:
        return f"The kernel is busy: {cells.describe_wait()}."
    return "The kernel is idle."
