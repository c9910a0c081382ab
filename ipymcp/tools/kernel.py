"""Kernel tools: execute, list_variables, inspect_variable, kernel_status, interrupt."""

from __future__ import annotations

import functools
import os
import signal
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent
from pydantic import Field

from ..content import Budget, shape_outputs
from ..frontend.fallback import record
from ..kernel import namespace
from ..kernel.execute import run_agent_code
from ..kernel.inspection import InspectionTimeout
from ..kernel.status import kernel_features, main_thread_user_frames, process_info, versions
from ..text import first_line
from .base import Services, ToolSet, job_progress
from .results import ExecuteResult, KernelStatus, VariableList, VariablePreview

tools = ToolSet()

# A variable path longer than this is refused (parsing and walking it is work on a server thread).
MAX_PATH_CHARS = 2_000


@tools.tool(level="execute", read_only=False, destructive=True, title="Run Python in the notebook kernel")
async def execute(
    services: Services,
    code: Annotated[str, Field(description="Python code; IPython magics, !shell commands and top-level await work")],
    ctx: Context,
    timeout: Annotated[
        float | None,
        Field(
            description="Seconds to wait in total (queue + run); default: the server's setting "
            "c.IPyMCP.execute_timeout (60 s unless the user configured it)",
            gt=0,
        ),
    ] = None,
    mode: Annotated[
        Literal["quiet", "cell"],
        Field(description="quiet: leave no trace in In/Out/_/history; cell: record like a user cell"),
    ] = "quiet",
) -> Annotated[CallToolResult, ExecuteResult]:
    """Run Python code in the user's live kernel, where their variables are, and return its outputs.

    Returns stdout/stderr, the value of a final expression, rich displays (tables as text,
    matplotlib figures as images) and errors with their traceback (as a tool error). Runs on the
    kernel's main thread, never at the same time as the user's cell: if the user is running
    something, the call waits (with progress notifications) up to `timeout`, then fails with
    "kernel busy"; then retry, or use list_variables / inspect_variable, which answer at once.
    On timeout or cancellation your code is interrupted with KeyboardInterrupt (never the user's).
    mode="quiet" (default) shows nothing in the notebook and leaves In/Out/_ untouched;
    mode="cell" records the code in the kernel history with an execution count, like a cell.
    """
    config, main_thread = services.config, services.main_thread
    timeout = config.execute_timeout if timeout is None else timeout
    job = main_thread.submit(
        lambda job: run_agent_code(services.shell, code, job, mode, config.max_output_chars), description=first_line(code)
    )
    outcome = await main_thread.wait(job, timeout, job_progress(ctx, services.cells), services.cells.describe_wait)
    budget = Budget.from_config(
        config, fetch_hint="print a slice of the data instead, or write it to a file and read it in pages"
    )
    content = shape_outputs(outcome.outputs, budget)
    content.extend(TextContent(type="text", text=note) for note in outcome.notes)
    if outcome.status == "interrupted" and job.interrupted:
        why = (
            f"the call's timeout of {timeout:g} s was reached"
            if job.ran_out_of(timeout)
            else "KeyboardInterrupt (interrupt() or the notebook's stop button)"
        )
        content.append(TextContent(type="text", text=f"[interrupted: {why}]"))
    if not content:
        content = [TextContent(type="text", text="[no output]")]
    # Agent runs never reach session.send (their outputs are captured): the history records them here.
    history_id = services.history.record_agent(code, outcome, mode) if services.history is not None else None
    facts: ExecuteResult = {
        "status": outcome.status,
        "execution_count": outcome.execution_count,
        "duration_s": round(outcome.duration, 4),
        "history_id": history_id,
    }
    # _meta as before structured results, for clients that read it.
    meta: dict[str, Any] = {"status": outcome.status, "duration_s": facts["duration_s"]}
    if outcome.execution_count is not None:
        meta["execution_count"] = outcome.execution_count
    if history_id is not None:
        meta["history_id"] = history_id
    shown = " ".join(getattr(block, "text", "") for block in content).strip()
    ok = outcome.status == "ok"
    record(services.activity, "execute", code, shown if ok else f"{outcome.status}: {shown}", ok)
    return CallToolResult(content=content, is_error=not ok, structured_content=dict(facts), meta=meta)


@tools.tool(level="read", read_only=True, title="List the notebook's variables")
async def list_variables(
    services: Services,
    pattern: Annotated[str | None, Field(description="glob (df*) or substring to filter names")] = None,
    include_private: Annotated[bool, Field(description="include names starting with _")] = False,
    limit: Annotated[
        int | None,
        Field(
            description="maximum rows; default: the server's setting c.IPyMCP.list_variables_limit "
            "(200 unless the user configured it)",
            ge=0,
            le=10_000,
        ),
    ] = None,
) -> VariableList:
    """List the user's variables with type, a one-line summary (len, shape, dtype) and estimated size.

    Answers immediately, even while the user's cell is running. Never runs the notebook's code
    (no repr(), no properties), so it is safe on huge data and odd objects. IPython's own names
    (In, Out, _, exit…) are hidden. Use inspect_variable(name) for a closer look at one of them.
    """
    config = services.config
    if pattern is not None and len(pattern) > config.max_pattern_chars:
        raise ToolError(
            f"the pattern is {len(pattern):,} characters long; the limit is {config.max_pattern_chars} "
            "(c.IPyMCP.max_pattern_chars). Use a short glob such as df* or a part of the name."
        )
    rows = config.list_variables_limit if limit is None else limit
    listing = functools.partial(namespace.list_variables, services.shell, pattern, include_private, rows)
    return await _inspect(services, listing, "list_variables", "the listing")


@tools.tool(level="read", read_only=True, title="Inspect one variable")
async def inspect_variable(
    services: Services,
    name: Annotated[
        str,
        Field(description="a variable name or a path into it: df, df.columns, cfg['lr'], items[3], arr[:5]"),
    ],
) -> VariablePreview:
    """Show a bounded, type-aware preview of one variable, without running the notebook's code.

    DataFrames: shape, dtypes and head; numpy arrays: shape, dtype, first values and cheap
    statistics; xarray: dims, shape, dtype, coords (lazy data is not loaded); matplotlib
    figures: axes, titles, artist counts; widgets: their value; sympy: the expression;
    containers: length and first items; functions and classes: signature and docstring; other
    objects: their stored attributes and what their class offers. Answers even while the
    user's cell is running. The path is parsed, never executed: no calls or operators. Stored
    attributes, dict keys, list items and a fixed list of library accessors (df.columns,
    arr[:5], ds['temp']…) are followed; a property, a __getattr__ or a user __getitem__ is not
    run: the answer says what it is ("evaluated": false) and how to get it with execute.
    """
    return await inspect_path(services, name)


# kernel_status and interrupt are async: they run on the server's loop, never behind a thread pool
# that slow inspections could fill.
@tools.tool(level="read", read_only=True, title="Kernel status")
async def kernel_status(services: Services) -> KernelStatus:
    """Report whether the kernel is busy, what the user's running cell is doing, and the environment.

    Includes: idle/busy, execution_count (the number the next cell will get: In [n]), the
    running user cell (its number, code head, seconds running, the innermost notebook frames),
    any running agent job, versions, pid, memory, cwd and notebook path. Call it when execute
    says the kernel is busy.
    """
    cells, main_thread, policy = services.cells, services.main_thread, services.policy
    process = process_info()
    status: KernelStatus = {
        "state": "busy" if cells.user_cell_busy() or main_thread.current is not None else "idle",
        "execution_count": cells.next_execution_count(),
        "notebook_path": services.notebook_path,
        "kernel_id": services.kernel_id,
        "permissions": policy.level,
        "approval": "on" if policy.approval else "off",
        "pid": process["pid"],
        "cwd": process["cwd"],
        "rss_bytes": process["rss_bytes"],
        "versions": versions(),
        "features": kernel_features(services.kernel),
        "frontend": services.frontend.capabilities() if services.frontend is not None else None,
    }
    running = cells.running
    if running is not None:
        status["user_cell"] = {
            "execution_count": running.execution_count,
            "code_head": first_line(running.code, 300),
            "running_s": round(time.monotonic() - running.started, 1),
            "frames": main_thread_user_frames(),
        }
    job = main_thread.current
    if job is not None:
        started = job.started if job.started is not None else job.submitted
        status["agent_job"] = {"code_head": job.description, "running_s": round(time.monotonic() - started, 1)}
    if main_thread.queued:
        status["agent_jobs_queued"] = len(main_thread.queued)
    return status


@tools.tool(
    level="execute",
    read_only=False,
    destructive=True,
    title="Interrupt running code",
    # Stopping your own call needs no approval (and must work when the queue is full); stopping
    # the user's cell does.
    approval=lambda arguments: arguments.get("target") == "user",
    kernel_queue=False,
)
async def interrupt(
    services: Services,
    target: Annotated[
        Literal["agent", "user"],
        Field(description="agent: your running execute call; user: the USER's running cell"),
    ] = "agent",
) -> str:
    """Interrupt running code with KeyboardInterrupt.

    target="agent" (default) stops your own running execute call. target="user" stops the
    cell the USER is running — their work is lost; do it only when they asked you to.
    """
    main_thread = services.main_thread
    if target == "agent":
        job = main_thread.current
        if job is None:
            return "No agent code is running."
        main_thread.interrupt()
        return f"Interrupted the running agent job: {job.description}"
    running = services.cells.running
    if running is None or main_thread.current is not None:
        raise ToolError("No user cell is running; nothing was interrupted.")
    os.kill(os.getpid(), signal.SIGINT)
    return f"Sent KeyboardInterrupt to the user's cell [{running.execution_count}]."


async def inspect_path(services: Services, path: str) -> VariablePreview:
    """inspect_variable and the ipymcp://variables/{name} resource: the same rules, the same pool."""
    if len(path) > MAX_PATH_CHARS:
        raise ToolError(f"the path is {len(path):,} characters long; the limit is {MAX_PATH_CHARS:,}")
    look = functools.partial(namespace.inspect, services.shell, path)
    return await _inspect(services, look, f"inspect_variable({first_line(path, 60)!r})", "the preview")


async def _inspect(services: Services, work: Callable[[], Any], description: str, what: str) -> Any:
    try:
        return await services.inspection.run(work, description, services.config.inspection_timeout, what)
    except (namespace.VariableError, InspectionTimeout) as exc:
        raise ToolError(str(exc)) from None
