"""Kernel tools: execute, list_variables, inspect_variable, kernel_status, interrupt."""

from __future__ import annotations

import asyncio
import functools
import time
from typing import TYPE_CHECKING, Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent
from pydantic import Field

from ..frontend.fallback import record as record_activity
from ..kernel import namespace
from ..kernel.execute import ExecutionResult, run_agent_code
from ..kernel.inspection import InspectionTimeout
from ..kernel.mainthread import AgentJob, wait_for_job
from ..kernel.status import kernel_features, main_thread_user_frames, process_info, versions
from ..outputs import Budget, shape_outputs

if TYPE_CHECKING:
    from .._runtime import Runtime
    from ..server.app import Toolbox

# After a timeout the agent's code gets this long to stop after KeyboardInterrupt.
INTERRUPT_GRACE = 3.0
# A variable path longer than this is refused (parsing and walking it is work on a server thread).
MAX_PATH_CHARS = 2_000


def register(toolbox: Toolbox, runtime: Runtime) -> None:
    shell, main_thread, cells, config = runtime.shell, runtime.main_thread, runtime.cells, runtime.config

    @toolbox.tool(level="execute", read_only=False, destructive=True, title="Run Python in the notebook kernel")
    async def execute(
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
    ) -> CallToolResult:
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
        timeout = config.execute_timeout if timeout is None else timeout
        job = main_thread.submit(
            lambda job: run_agent_code(shell, code, job, mode, config.max_output_chars), description=_head(code)
        )
        outcome = await _await_job(job, timeout, ctx, runtime)
        budget = Budget(
            max_chars=config.max_output_chars,
            max_images=config.max_images,
            max_image_bytes=config.max_image_bytes,
            max_image_pixels=config.max_image_pixels,
            fetch_hint="print a slice of the data instead, or write it to a file and read it in pages",
        )
        content = shape_outputs(outcome.outputs, budget)
        content.extend(TextContent(type="text", text=note) for note in outcome.notes)
        if outcome.status == "interrupted" and job.interrupted:
            content.append(TextContent(type="text", text=f"[interrupted: {_why_interrupted(job, timeout)}]"))
        if not content:
            content = [TextContent(type="text", text="[no output]")]
        meta = {"status": outcome.status, "duration_s": round(outcome.duration, 4)}
        if outcome.execution_count is not None:
            meta["execution_count"] = outcome.execution_count
        if runtime.history is not None:
            # Agent runs never reach session.send (their outputs are captured): record them here.
            meta["history_id"] = runtime.history.record_agent(code, outcome, mode)
        record_activity(runtime.activity, "execute", code, _activity_result(content, outcome.status), outcome.status == "ok")
        return CallToolResult(content=content, is_error=outcome.status != "ok", meta=meta)

    @toolbox.tool(level="read", read_only=True, title="List the notebook's variables")
    async def list_variables(
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
    ) -> dict[str, Any]:
        """List the user's variables with type, a one-line summary (len, shape, dtype) and estimated size.

        Answers immediately, even while the user's cell is running. Never runs the notebook's code
        (no repr(), no properties), so it is safe on huge data and odd objects. IPython's own names
        (In, Out, _, exit…) are hidden. Use inspect_variable(name) for a closer look at one of them.
        """
        if pattern is not None and len(pattern) > config.max_pattern_chars:
            raise ToolError(
                f"the pattern is {len(pattern):,} characters long; the limit is {config.max_pattern_chars} "
                "(c.IPyMCP.max_pattern_chars). Use a short glob such as df* or a part of the name."
            )
        rows = config.list_variables_limit if limit is None else limit
        listing = functools.partial(namespace.list_variables, shell, pattern, include_private, rows)
        return await _inspect(runtime, listing, "list_variables", "the listing")

    @toolbox.tool(level="read", read_only=True, title="Inspect one variable")
    async def inspect_variable(
        name: Annotated[
            str,
            Field(description="a variable name or a path into it: df, df.columns, cfg['lr'], items[3], arr[:5]"),
        ],
    ) -> dict[str, Any]:
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
        return await inspect_path(runtime, name)

    # kernel_status and interrupt are async: they run on the server's loop, never behind a
    # thread pool that slow inspections could fill.
    @toolbox.tool(level="read", read_only=True, title="Kernel status")
    async def kernel_status() -> dict[str, Any]:
        """Report whether the kernel is busy, what the user's running cell is doing, and the environment.

        Includes: idle/busy, execution count, the running user cell (code head, seconds running,
        the innermost notebook frames), any running agent job, versions, pid, memory, cwd and
        notebook path. Call it when execute says the kernel is busy.
        """
        status: dict[str, Any] = {
            "state": "busy" if cells.user_cell_busy() or main_thread.current is not None else "idle",
            "execution_count": shell.execution_count,
            "notebook_path": runtime.notebook_path,
            "kernel_id": runtime.kernel_id,
            "permissions": runtime.policy.level,
            "approval": "on" if runtime.policy.approval else "off",
            **process_info(),
            "versions": versions(),
            "features": kernel_features(runtime.kernel),
            "frontend": runtime.frontend.capabilities() if runtime.frontend is not None else None,
        }
        running = cells.running
        if running is not None:
            status["user_cell"] = {
                "execution_count": running.execution_count,
                "code_head": _head(running.code, 300),
                "running_s": round(time.monotonic() - running.started, 1),
                "frames": main_thread_user_frames(),
            }
        if main_thread.current is not None:
            job = main_thread.current
            status["agent_job"] = {"code_head": job.description, "running_s": round(time.monotonic() - job.started, 1)}
        if main_thread.queued:
            status["agent_jobs_queued"] = len(main_thread.queued)
        return status

    @toolbox.tool(
        level="execute",
        read_only=False,
        destructive=True,
        title="Interrupt running code",
        # Stopping your own call needs no approval (and must work when the queue is full);
        # stopping the user's cell does.
        approval=lambda arguments: arguments.get("target") == "user",
        kernel_queue=False,
    )
    async def interrupt(
        target: Annotated[
            Literal["agent", "user"],
            Field(description="agent: your running execute call; user: the USER's running cell"),
        ] = "agent",
    ) -> str:
        """Interrupt running code with KeyboardInterrupt.

        target="agent" (default) stops your own running execute call. target="user" stops the
        cell the USER is running — their work is lost; do it only when they asked you to.
        """
        if target == "agent":
            if main_thread.current is None:
                return "No agent code is running."
            main_thread.interrupt()
            return f"Interrupted the running agent job: {main_thread.current.description if main_thread.current else 'done'}"
        running = cells.running
        if running is None or main_thread.current is not None:
            raise ToolError("No user cell is running; nothing was interrupted.")
        import os
        import signal

        os.kill(os.getpid(), signal.SIGINT)
        return f"Sent KeyboardInterrupt to the user's cell [{running.execution_count}]."


async def inspect_path(runtime: Runtime, path: str) -> dict[str, Any]:
    """inspect_variable and the ipymcp://variables/{name} resource: the same rules, the same pool."""
    if len(path) > MAX_PATH_CHARS:
        raise ToolError(f"the path is {len(path):,} characters long; the limit is {MAX_PATH_CHARS:,}")
    look = functools.partial(namespace.inspect, runtime.shell, path)
    return await _inspect(runtime, look, f"inspect_variable({_head(path, 60)!r})", "the preview")


async def _inspect(runtime: Runtime, work: Any, description: str, what: str) -> Any:
    try:
        return await runtime.inspection.run(work, description, runtime.config.inspection_timeout, what)
    except (namespace.VariableError, InspectionTimeout) as exc:
        raise ToolError(str(exc)) from None


async def _await_job(job: AgentJob, timeout: float, ctx: Context, runtime: Runtime) -> ExecutionResult:
    main_thread, cells = runtime.main_thread, runtime.cells

    async def progress(job: AgentJob, elapsed: float) -> None:
        if job.started is None:
            message = f"waiting: {cells.describe_wait()}"
        else:
            message = f"running for {time.monotonic() - job.started:.0f} s"
        try:
            await ctx.report_progress(round(elapsed, 1), None, message)
        except Exception:  # noqa: BLE001 - a client without a progress token
            pass

    try:
        finished = await wait_for_job(job, timeout, progress)
        if not finished:
            if main_thread.cancel(job):
                raise ToolError(
                    f"kernel busy: {cells.describe_wait()}; your code did not run. Retry later, use "
                    "list_variables / inspect_variable (they answer now), or call interrupt(target='user') "
                    "if the user asked you to stop their cell."
                )
            job.interrupted = True
            main_thread.interrupt(job)
            if not await wait_for_job(job, INTERRUPT_GRACE):
                main_thread.force_interrupt(job)
                if not await wait_for_job(job, INTERRUPT_GRACE):
                    raise ToolError(
                        f"timed out after {timeout:g} s and the code did not stop on KeyboardInterrupt "
                        "(a blocking call?); it is still running on the kernel's main thread."
                    )
    except asyncio.CancelledError:
        # The client cancelled: never leave the agent's code running or queued.
        if not main_thread.cancel(job):
            job.interrupted = True
            main_thread.interrupt(job)
        raise
    return job.future.result()


def _why_interrupted(job: AgentJob, timeout: float) -> str:
    if job.finished is not None and job.started is not None and job.finished - job.submitted >= timeout:
        return f"the call's timeout of {timeout:g} s was reached"
    return "KeyboardInterrupt (interrupt() or the notebook's stop button)"


def _activity_result(content: list[Any], status: str) -> str:
    text = " ".join(getattr(block, "text", "") for block in content).strip()
    return text if status == "ok" else f"{status}: {text}"


def _head(code: str, limit: int = 120) -> str:
    code = code.strip()
    first = code.splitlines()[0] if code else ""
    text = first if len(first) <= limit else first[: limit - 1] + "…"
    return text + (" …" if "\n" in code else "")
