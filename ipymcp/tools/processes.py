"""Process tools: run_command, start_process, read_process, write_process, stop_process, list_processes."""

from __future__ import annotations

import os
from typing import Annotated

import anyio
import anyio.to_thread
from mcp.server.mcpserver import Context
from mcp.types import CallToolResult, TextContent
from pydantic import Field

from ..processes import ProcessError, Processes, signal_name
from ..text import clean_terminal_text, cut_middle, report_progress
from ..workspace import WorkspaceError
from .base import Services, ToolSet
from .files import workspace_for
from .results import CommandResult, ProcessList, ProcessOutput, ProcessStarted

tools = ToolSet()

Cwd = Annotated[
    str | None,
    Field(description="working directory relative to the workspace root (default: the root)"),
]
ProcessId = Annotated[int, Field(description="the id from start_process")]


def _processes(services: Services) -> Processes:
    if services.processes is None:
        raise ProcessError("ipymcp is shutting down; no new commands")
    return services.processes


def _working_directory(services: Services, cwd: str | None) -> str:
    # The terminal is a shell with the user's rights, not confined: excluding a cwd guards nothing.
    workspace = workspace_for(services, exclusions=False)
    directory = workspace.resolve(cwd or ".")
    if not os.path.isdir(directory):
        raise WorkspaceError(f"cwd {cwd!r} is not a directory under the workspace root {workspace.root}")
    return directory


@tools.tool(level="full", read_only=False, destructive=True, title="Run a shell command")
async def run_command(
    services: Services,
    command: Annotated[str, Field(description="a shell command line (pipes, &&, redirections work)")],
    ctx: Context,
    timeout: Annotated[float, Field(description="seconds before the command is killed", gt=0, le=86_400)] = 60,
    cwd: Cwd = None,
) -> Annotated[CallToolResult, CommandResult]:
    """Run a command through the user's shell ($SHELL -c) and return its exit code and output.

    stdout and stderr come back combined; long output keeps its head and tail. `python` and
    `pip` are the kernel's own interpreter (its bin directory is first on PATH), so
    `pip install x` (surest: `python -m pip install x`) installs into the kernel and
    `import x` works from execute right after. Runs beside the notebook, never blocking the
    user's cells; sends progress notifications while it runs. stdin is empty: pass --yes-style
    flags; for interactive or long-lived programs (servers, REPLs, watchers) use start_process.
    On timeout the command and everything it started are killed (SIGTERM, then SIGKILL);
    processes it leaves in the background are ended when it exits.
    """

    async def tick(elapsed: float, line: str) -> None:
        message = f"running for {elapsed:.0f} s" + (f": {line}" if line else "")
        await report_progress(ctx.report_progress, elapsed, message)

    directory = _working_directory(services, cwd)
    run = await _processes(services).run_command(command, directory, timeout, services.config.max_output_chars, tick)
    code = run.exit_code
    if run.timed_out:
        header = (
            f"timed out after {timeout:g} s: the command and its child processes were killed. "
            "Raise timeout, or use start_process for long-running programs. Output so far:"
        )
    elif code is not None and code < 0:
        header = f"killed by {signal_name(-code)} after {run.duration:.1f} s"
    else:
        header = f"exit code {code} ({run.duration:.1f} s)"
    output = run.output.text()
    text = f"{header}\n{output}" if output else f"{header}\n[no output]"
    facts: CommandResult = {
        "exit_code": code,
        "duration_s": round(run.duration, 3),
        "pid": run.pid,
        "timed_out": run.timed_out,
    }
    return CallToolResult(
        content=[TextContent(type="text", text=text)], is_error=run.timed_out, structured_content=dict(facts), meta=dict(facts)
    )


@tools.tool(level="full", read_only=False, destructive=True, title="Start a background process")
def start_process(
    services: Services,
    command: Annotated[str, Field(description="a shell command line to run in a pseudo-terminal")],
    cwd: Cwd = None,
) -> ProcessStarted:
    """Start a long-lived program (a server, a watcher, a REPL like `python -i`) in a pseudo-terminal.

    Returns its id at once. Then read_process(id, wait=...) for its output, write_process(id,
    input) to type into it, stop_process(id) to end it. It keeps running between calls, never
    blocking the user's cells, and is ended when ipymcp unloads or the kernel stops.
    `python`/`pip` are the kernel's interpreter, as in run_command.
    """
    process = _processes(services).start_process(command, _working_directory(services, cwd))
    return {
        "id": process.id,
        "pid": process.pid,
        "command": command,
        "cwd": process.cwd,
        "next": f"read_process({process.id}, wait=2) to see its output",
    }


@tools.tool(level="full", read_only=False, destructive=False, title="Read a background process's output")
async def read_process(
    services: Services,
    id: ProcessId,
    wait: Annotated[
        float, Field(description="seconds to wait for new output when there is none yet", ge=0, le=600)
    ] = 0,
) -> Annotated[CallToolResult, ProcessOutput]:
    """Return the output a background process printed since the last read, and whether it is still running.

    With wait > 0 the call waits up to that long for output to appear, then returns once the
    output has paused for a moment (0.3 s) or the process exits. Long output keeps its head and tail; output beyond the
    buffer (about 1 MB) is dropped oldest first, with a note.
    """
    process = _processes(services).get(id)
    if wait > 0 and not process.has_news():
        await anyio.to_thread.run_sync(process.wait_for_output, wait, abandon_on_cancel=True)
    text, dropped = process.take_output()
    text = cut_middle(clean_terminal_text(text), services.config.max_output_chars)
    notes = []
    if dropped:
        notes.append(f"[{dropped:,} bytes dropped: the output came faster than it was read]")
    notes.append(f"[{process.describe_state()}]")
    body = (text if text else "[no new output]\n") + ("" if text.endswith("\n") or not text else "\n")
    facts: ProcessOutput = {"running": process.running, "exit_code": process.exit_code, "dropped_bytes": dropped}
    meta = {"running": facts["running"], "exit_code": facts["exit_code"]}
    return CallToolResult(
        content=[TextContent(type="text", text=body + "\n".join(notes))], structured_content=dict(facts), meta=meta
    )


@tools.tool(level="full", read_only=False, destructive=True, title="Type into a background process")
def write_process(
    services: Services,
    id: ProcessId,
    input: Annotated[str, Field(description="text to send; end lines with \\n; \\x03 is Ctrl-C, \\x04 Ctrl-D")],
) -> str:
    """Send input to a background process's terminal, as if typed; then read_process to see the reply.

    Include the trailing newline to submit a line. Control characters work as on a keyboard.
    """
    sent = _processes(services).get(id).write(input)
    return f"Sent {sent} bytes to process {id}; read_process({id}, wait=1) shows the response."


@tools.tool(level="full", read_only=False, destructive=True, title="Stop a background process")
async def stop_process(services: Services, id: ProcessId) -> str:
    """Stop a background process and everything it started: SIGTERM, then SIGKILL after a grace period.

    Returns its last unread output and how it ended; the id is then forgotten.
    """
    process, text = await anyio.to_thread.run_sync(_processes(services).stop_process, id)
    text = cut_middle(clean_terminal_text(text), services.config.max_output_chars)
    return (text.rstrip("\n") + "\n" if text.strip() else "") + f"[stopped: {process.describe_state()}]"


@tools.tool(level="full", read_only=True, title="List background processes")
def list_processes(services: Services) -> ProcessList:
    """List the background processes started with start_process: id, pid, command, state, exit code."""
    return {"processes": [process.info() for process in list(_processes(services).processes.values())]}
