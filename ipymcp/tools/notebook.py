"""Notebook tools: read and write the cells the user sees, live, through the ipymcp labextension.

read_notebook, insert_cell, edit_cell, delete_cell, move_cell, execute_cell, save_notebook,
get_active_cell. Without the extension (VS Code, Colab, a JupyterLab without it) read_notebook
reads the saved .ipynb and the write tools explain what is missing.
"""

from __future__ import annotations

import datetime as _dt
import time
from typing import TYPE_CHECKING, Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent
from pydantic import Field

from ..frontend import fallback
from ..frontend.comm import FrontendError, FrontendTimeout, NoFrontendError, StaleCellError
from ..outputs import Budget, ImageTally, shape_outputs
from ..policy.approval_detail import Diff
from ..text import one_line

if TYPE_CHECKING:
    from .._runtime import Runtime
    from ..server.app import Toolbox

CellId = Annotated[str, Field(description="the cell's id, as read_notebook shows it")]
# Text budget for one cell's outputs inside read_notebook (the whole answer has max_output_chars).
CELL_OUTPUT_CHARS = 3_000
STALE_HINT = (
    "the user changed this cell, read it again (read_notebook) and redo your change on the new source"
)


def _insert_level(arguments: dict[str, Any]) -> str:
    """Inserting is an edit; running the new code cell is an execution (any truthy ``execute``
    counts, as the argument's validation would accept "true" or 1)."""
    runs = arguments.get("execute") not in (None, False, 0, "false", "False", "0")
    return "execute" if runs and arguments.get("cell_type", "code") not in ("markdown", "raw") else "edit"


def register(toolbox: Toolbox, runtime: Runtime) -> None:
    config = runtime.config
    # The revision of each cell as the agent last saw it: writes must match it (stale-write guard).
    seen: dict[str, str] = {}
    # (revision, source) as the agent last saw each cell: edit_cell's approval shows the change.
    seen_source: dict[str, tuple[str, str]] = {}

    def link() -> Any:
        if runtime.frontend is None:
            raise ToolError(
                "the notebook link did not start (see the ipymcp log); notebook tools are unavailable"
            )
        return runtime.frontend

    def call(op: str, args: dict[str, Any], timeout: float = 15.0) -> dict[str, Any]:
        try:
            return link().request(op, args, timeout)
        except StaleCellError as err:
            raise ToolError(f"{STALE_HINT} ({err})") from None
        except NoFrontendError as err:
            raise ToolError(f"cannot {op.replace('_', ' ')}: {err}") from None
        except FrontendError as err:
            raise ToolError(str(err)) from None

    def remember(cell: dict[str, Any]) -> None:
        if cell.get("id") and cell.get("revision"):
            seen[cell["id"]] = cell["revision"]
            if isinstance(cell.get("source"), str):
                seen_source[cell["id"]] = (cell["revision"], cell["source"])

    def expected_revision(cell_id: str, revision: str | None) -> str:
        expected = revision or seen.get(cell_id)
        if not expected:
            raise ToolError(
                f"you have not read cell {cell_id} yet: call read_notebook (or get_active_cell) first, so that "
                "you edit what the user currently sees"
            )
        return expected

    def provenance(ctx: Context | None, tool: str) -> dict[str, Any]:
        mark: dict[str, Any] = {
            "by": "agent",
            "tool": tool,
            "at": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        try:
            info = ctx.session.client_params.client_info if ctx is not None else None
            if info is not None:
                mark["client"] = f"{info.name} {info.version}".strip()
        except Exception:  # noqa: BLE001
            pass
        return mark

    def budget() -> Budget:
        return Budget(
            max_chars=config.max_output_chars,
            max_images=config.max_images,
            max_image_bytes=config.max_image_bytes,
            max_image_pixels=config.max_image_pixels,
            fetch_hint="read fewer cells (start/limit) or inspect the data with execute",
        )

    @toolbox.tool(level="read", read_only=True, title="Read the notebook the user sees")
    def read_notebook(
        include_outputs: Annotated[
            bool, Field(description="include each code cell's outputs (text, images)")
        ] = True,
        start: Annotated[int, Field(description="first cell index", ge=0)] = 0,
        limit: Annotated[int | None, Field(description="at most this many cells", ge=1)] = None,
    ) -> CallToolResult:
        """Read the cells of the notebook open in the user's JupyterLab / Notebook 7, live.

        Each cell comes with its id (address cells by id in the write tools), type, source,
        execution count, a revision (edit_cell/delete_cell are refused if the user changed the cell
        since you read it), whether the agent wrote it, and its outputs within a budget (images as
        images). Also says which cell is active and whether there are unsaved changes. Works
        while a user cell runs. Without the ipymcp extension in the frontend it reads the saved
        .ipynb instead and says so: unsaved edits are then missing.
        """
        args = {"include_outputs": include_outputs, "start": start, "limit": limit}
        try:
            notebook = link().request("read_notebook", args, 15.0)
            live = True
        except NoFrontendError as err:
            notebook = _read_from_disk(runtime, start, limit, str(err))
            live = False
        except FrontendError as err:
            raise ToolError(str(err)) from None
        for cell in notebook["cells"]:
            remember(cell)
        return _render_notebook(notebook, live, include_outputs, budget(), runtime)

    @toolbox.tool(level=_insert_level, read_only=False, title="Insert a cell into the notebook")
    async def insert_cell(
        source: Annotated[str, Field(description="the cell's source")],
        ctx: Context,
        cell_type: Annotated[Literal["code", "markdown", "raw"], Field(description="cell type")] = "code",
        index: Annotated[
            int | None, Field(description="position (0 = top, -1 = end); default: the end")
        ] = None,
        after_cell_id: Annotated[
            str | None, Field(description="insert right after this cell (wins over index)")
        ] = None,
        execute: Annotated[
            bool, Field(description="run it right away (code) / render it (markdown)")
        ] = False,
        timeout: Annotated[float, Field(description="with execute: seconds to wait for the run", gt=0)] = 60,
    ) -> CallToolResult:
        """Insert a new cell into the user's open notebook, where they see it, optionally running it.

        Returns the new cell's id and index (and, with execute=True, its outputs, as execute_cell).
        The cell is marked as written by the agent (metadata.ipymcp). The notebook is not saved:
        call save_notebook if the change must reach the file. Without the ipymcp extension
        (VS Code, a JupyterLab without it) the cell cannot be inserted; in VS Code / JupyterLab the
        code is then offered as a labelled proposal that appears below the next cell the user runs.
        """
        args = {
            "source": source,
            "cell_type": cell_type,
            "index": index,
            "after_cell_id": after_cell_id,
            "metadata": {"ipymcp": provenance(ctx, "insert_cell")},
        }
        try:
            cell = await link().arequest("insert_cell", args, 15.0)
        except NoFrontendError as err:
            return _propose_instead(runtime, source, cell_type, str(err))
        except FrontendError as err:
            raise ToolError(str(err)) from None
        remember(cell)
        fallback.record(runtime.activity, "insert_cell", source, f"cell {cell['index']} ({cell_type})")
        head = (
            f"inserted {cell_type} cell {cell['id']} at index {cell['index']} (revision {cell['revision']})"
        )
        if not execute:
            return CallToolResult(content=[TextContent(type="text", text=head)], meta={"cell_id": cell["id"]})
        return await _execute(cell["id"], timeout, ctx, head)

    def shown_edit(arguments: dict[str, Any]) -> Diff | None:
        """The approval prompt shows edit_cell as a diff against the source the agent last read."""
        source = arguments.get("source")
        if not isinstance(source, str):
            return None
        cell_id, revision = arguments.get("cell_id"), arguments.get("revision")
        last = seen_source.get(cell_id) if isinstance(cell_id, str) else None
        before = last[1] if last is not None and revision in (None, last[0]) else None
        return Diff(before, source, ("source",), f"cell {cell_id}")

    @toolbox.tool(
        level="edit", read_only=False, destructive=True, title="Replace a cell's source", approval_diff=shown_edit
    )
    def edit_cell(
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
        cell = call(
            "edit_cell",
            {
                "cell_id": cell_id,
                "source": source,
                "revision": expected_revision(cell_id, revision),
                "provenance": provenance(ctx, "edit_cell"),
            },
        )
        remember(cell)
        fallback.record(runtime.activity, "edit_cell", source, f"cell {cell['index']}")
        return f"cell {cell_id} (index {cell['index']}) now has the new source; revision {cell['revision']}"

    @toolbox.tool(level="edit", read_only=False, destructive=True, title="Delete a cell")
    def delete_cell(
        cell_id: CellId,
        revision: Annotated[
            str | None, Field(description="the revision you read (default: your last read)")
        ] = None,
    ) -> str:
        """Delete a cell from the user's open notebook (the user can undo it with Ctrl+Z / Edit > Undo).

        Refused if the user changed the cell since you last read it.
        """
        cell = call("delete_cell", {"cell_id": cell_id, "revision": expected_revision(cell_id, revision)})
        seen.pop(cell_id, None)
        fallback.record(runtime.activity, "delete_cell", cell.get("source", ""), f"was cell {cell['index']}")
        return f"deleted {cell['cell_type']} cell {cell_id} (was at index {cell['index']})"

    @toolbox.tool(level="edit", read_only=False, title="Move a cell")
    def move_cell(
        cell_id: CellId,
        to_index: Annotated[int, Field(description="the cell's new index (0 = top)", ge=0)],
    ) -> str:
        """Move a cell to another position in the user's open notebook. Returns its new index."""
        cell = call("move_cell", {"cell_id": cell_id, "to_index": to_index})
        fallback.record(runtime.activity, "move_cell", cell.get("source", ""), f"to index {cell['index']}")
        return f"cell {cell_id} is now at index {cell['index']}"

    @toolbox.tool(level="execute", read_only=False, destructive=True, title="Run a notebook cell")
    async def execute_cell(
        cell_id: CellId,
        ctx: Context,
        timeout: Annotated[float, Field(description="seconds to wait for the run to finish", gt=0)] = 60,
    ) -> CallToolResult:
        """Run a cell in the user's notebook, as if they pressed Shift+Enter, and return its outputs.

        The user sees it run and its outputs appear in the cell; the run gets an execution count.
        If the kernel is busy (a user cell runs), the run queues behind it, with progress
        notifications. On timeout the cell may still be queued or running in the notebook: read it
        later with read_notebook. Markdown cells are rendered. Errors come back as a tool error with
        the traceback.
        """
        return await _execute(cell_id, timeout, ctx, "")

    async def _execute(cell_id: str, timeout: float, ctx: Context, head: str) -> CallToolResult:
        cells = runtime.cells

        async def tick(elapsed: float) -> None:
            message = (
                f"queued: {cells.describe_wait()}"
                if cells.user_cell_busy()
                else f"running for {elapsed:.0f} s"
            )
            try:
                await ctx.report_progress(round(elapsed, 1), None, message)
            except Exception:  # noqa: BLE001 - a client without a progress token
                pass

        started = time.monotonic()
        try:
            cell = await link().arequest("execute_cell", {"cell_id": cell_id}, timeout, tick)
        except StaleCellError as err:
            raise ToolError(f"{STALE_HINT} ({err})") from None
        except FrontendTimeout:
            raise ToolError(
                f"cell {cell_id} did not finish within {timeout:g} s; it may still be queued or running in "
                "the notebook. Check later with read_notebook, or kernel_status."
            ) from None
        except FrontendError as err:
            raise ToolError(f"cannot execute cell {cell_id}: {err}") from None
        remember(cell)
        content = shape_outputs(cell.get("outputs") or [], budget())
        lead = f"{head}\n" if head else ""
        count = cell.get("execution_count")
        lead += f"ran cell {cell_id} (index {cell['index']}, In [{count if count is not None else ' '}])"
        blocks = [TextContent(type="text", text=lead + (":" if content else "; no output"))] + content
        ok = bool(cell.get("ok", True))
        summary = (
            one_line(" ".join(getattr(b, "text", "") for b in content), 120)
            if content
            else "no output"
        )
        fallback.record(runtime.activity, "execute_cell", cell.get("source", ""), summary if ok else "error: " + summary, ok
        )
        meta = {"cell_id": cell_id, "execution_count": count, "status": "ok" if ok else "error"}
        meta["duration_s"] = round(time.monotonic() - started, 3)
        return CallToolResult(content=blocks, is_error=not ok, meta=meta)

    @toolbox.tool(level="edit", read_only=False, idempotent=True, title="Save the notebook")
    def save_notebook() -> str:
        """Save the user's open notebook to its .ipynb file (like Ctrl+S). Returns the path."""
        # The activity line goes out before the save request (same thread, same IOPub order):
        # the saved file has it, and no update after the save makes the notebook dirty again.
        target = runtime.notebook_path or "the open notebook"
        fallback.record(runtime.activity, "save_notebook", target, flush=True)
        try:
            saved = call("save", {}, 30.0)
        except ToolError as err:
            fallback.record(runtime.activity, "save_notebook", target, f"failed: {err}", ok=False)
            raise
        if saved.get("dirty"):
            return f"saved {saved.get('path')}, but it changed again during the save (it has unsaved changes now)"
        return f"saved {saved.get('path')}"

    @toolbox.tool(level="read", read_only=True, title="The user's active cell")
    def get_active_cell() -> dict[str, Any]:
        """Which cell the user is on: its id, index, source, revision, the editor mode and selection.

        Use it to act on "this cell" when the user refers to it. Needs the ipymcp extension.
        """
        active = call("get_active", {})
        if active.get("cell"):
            remember(active["cell"])
        return active


def _read_from_disk(runtime: Runtime, start: int, limit: int | None, why: str) -> dict[str, Any]:
    try:
        notebook = fallback.read_ipynb(runtime.notebook_path)
    except (OSError, ValueError) as err:
        raise ToolError(f"no live notebook view ({why}) and the saved file cannot be read: {err}") from None
    stop = None if limit is None else start + limit
    notebook["cells"] = notebook["cells"][start:stop]
    notebook["why"] = why
    return notebook


def _propose_instead(runtime: Runtime, source: str, cell_type: str, why: str) -> CallToolResult:
    frontend = runtime.frontend.capabilities()["frontend"] if runtime.frontend else "jupyter"
    if cell_type != "code" or frontend == "colab":
        raise ToolError(f"cannot insert a cell: {why}")
    fallback.propose_cell(runtime.shell, source)
    fallback.record(runtime.activity, "insert_cell (proposal)", source, "appears below the next cell the user runs")
    text = (
        f"NOT inserted: {why}. Instead the code was offered to the user as a PROPOSAL "
        "(set_next_input): it appears, labelled as a proposal and not run, below the next cell the "
        "user runs. Tell the user about it; do not assume it ran."
    )
    return CallToolResult(content=[TextContent(type="text", text=text)], meta={"proposed": True})


def _kernel_sentence(runtime: Runtime) -> str:
    """Busy or idle from the kernel's own tracking (the view's kernel status is busy while it
    handles this very request on kernels without comm subshells)."""
    cells = runtime.cells
    if cells.user_cell_busy() or runtime.main_thread.current is not None:
        return f"The kernel is busy: {cells.describe_wait()}."
    return "The kernel is idle."


def _render_notebook(
    notebook: dict[str, Any], live: bool, include_outputs: bool, budget: Budget, runtime: Runtime
) -> CallToolResult:
    cells = notebook["cells"]
    n = notebook.get("n_cells", len(cells))
    if live:
        view = runtime.frontend.ranked_views()[0].describe()["app"] if runtime.frontend.views else "?"
        active = notebook.get("active_cell_index")
        header = (
            f"{notebook['path']}, live from the open notebook view ({view}). {n} cells, "
            f"{'with unsaved changes' if notebook.get('dirty') else 'no unsaved changes'}. "
            + (
                f"The user's active cell is index {active} (id {notebook.get('active_cell_id')}). "
                if active is not None and active >= 0
                else ""
            )
            + _kernel_sentence(runtime)
        )
    else:
        header = (
            f"{notebook['path']}: read from the SAVED FILE on disk (saved {notebook.get('saved_at')}); it may be "
            f"stale: unsaved edits in the open notebook are not included, and ids/revisions cannot be used for "
            f"writes. Why no live view: {notebook.get('why')}. {n} cells."
        )
    if cells:
        header += f" Showing cells {cells[0]['index']}–{cells[-1]['index']}."
    content: list[Any] = [TextContent(type="text", text=header)]
    tally, used = ImageTally(), 0
    for position, cell in enumerate(cells):
        tags = [f"cell {cell['index']}", f"id {cell['id']}", cell["cell_type"]]
        if cell["cell_type"] == "code":
            count = cell.get("execution_count")
            tags.append(f"In [{count if count is not None else ' '}]")
        if cell.get("revision"):
            tags.append(f"rev {cell['revision']}")
        if cell.get("agent"):
            tags.append("written by the agent")
        if cell.get("active"):
            tags.append("ACTIVE")
        text = "── " + " · ".join(tags) + "\n" + cell["source"].rstrip("\n") + "\n"
        blocks: list[Any] = []
        if include_outputs and cell.get("outputs"):
            cell_budget = Budget(**{**budget.__dict__, "max_chars": min(CELL_OUTPUT_CHARS, budget.max_chars)})
            blocks = shape_outputs(cell["outputs"], cell_budget, tally)
            text += "── outputs:"
        elif cell.get("n_outputs") and not include_outputs:
            text += f"── {cell['n_outputs']} output(s) not included"
        used += len(text) + sum(len(getattr(b, "text", "")) for b in blocks)
        if used > budget.max_chars and position > 0:
            content.append(
                TextContent(
                    type="text",
                    text=f"[stopped at cell {cell['index']} to stay within the output budget: call read_notebook("
                    f"start={cell['index']}) for the rest, or include_outputs=False]",
                )
            )
            break
        content.append(TextContent(type="text", text=text))
        content.extend(blocks)
    meta = {"live": live, "n_cells": n, "path": notebook["path"]}
    return CallToolResult(content=content, meta=meta)
