"""Terminal tools: run_command, start_process, read_process, write_process, stop_process, list_processes."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import anyio.to_thread
from mcp.server.mcpserver import Context
from mcp.types import CallToolResult, TextContent
from pydantic import Field

from ..processes import signal_name
from ..text import clean_terminal_text
from ..workspace import WorkspaceError
from .files import workspace_for

if TYPE_CHECKING:
    from .._runtime import Runtime
    from ..server.app import Toolbox

PROGRESS_EVERY = 1.0


def register(toolbox: Toolbox, runtime: Runtime) -> None:
    config = runtime.config
    load_cwd = os.getcwd()
    terminal = runtime.processes
    assert terminal is not None, "Runtime makes the process table before the tools"

    def working_directory(cwd: str | None) -> str:
        # The terminal is a shell with the user's rights, not confined: excluding a cwd guards nothing.
        workspace = workspace_for(runtime, load_cwd, exclusions=False)
        directory = workspace.resolve(cwd or ".")
        if not os.path.isdir(directory):
            raise WorkspaceError(f"cwd {cwd!r} is not a directory under the workspace root {workspace.root}")
        return directory

    @toolbox.tool(level="full", read_only=False, destructive=True, title="Run a shell command")
    async def run_command(
        command: Annotated[str, Field(description="a shell command line (pipes, &&, redirections work)")],
        ctx: Context,
        timeout: Annotated[
            float, Field(description="seconds before the command is killed", gt=0, le=86_400)
        ] = 60,
        cwd: Annotated[
            str | None,
            Field(description="working directory relative to the workspace root (default: the root)"),
        ] = None,
    ) -> CallToolResult:
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
        directory = working_directory(cwd)
        run = terminal.start_command(command, directory, config.max_output_chars)
        started = time.monotonic()
        next_report, pause = started + PROGRESS_EVERY, 0.01
        try:
            while run.process.poll() is None:
                now = time.monotonic()
                if now - started >= timeout:
                    run.timed_out = True
                    break
                if now >= next_report:
                    next_report = now + PROGRESS_EVERY
                    line = run.output.latest_line()
                    message = f"running for {now - started:.0f} s" + (f": {line}" if line else "")
                    try:
                        await ctx.report_progress(round(now - started, 1), None, message)
                    except Exception:  # noqa: BLE001 - a client without a progress token
                        pass
                await anyio.sleep(pause)
                pause = min(0.25, pause * 1.5)
        finally:
            # Also on cancellation: the command must not outlive the call.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(terminal.end_command, run, run.process.poll() is None)
        duration = time.monotonic() - started
        output = run.output.text()
        code = run.process.returncode
        if run.timed_out:
            header = (
                f"timed out after {timeout:g} s: the command and its child processes were killed. "
                "Raise timeout, or use start_process for long-running programs. Output so far:"
            )
        elif code is not None and code < 0:
            header = f"killed by {signal_name(-code)} after {duration:.1f} s"
        else:
            header = f"exit code {code} ({duration:.1f} s)"
        text = f"{header}\n{output}" if output else f"{header}\n[no output]"
        meta = {
            "exit_code": code,
            "duration_s": round(duration, 3),
            "pid": run.pid,
            "timed_out": run.timed_out,
        }
        return CallToolResult(
            content=[TextContent(type="text", text=text)], is_error=run.timed_out, meta=meta
        )

    @toolbox.tool(level="full", read_only=False, destructive=True, title="Start a background process")
    def start_process(
        command: Annotated[str, Field(description="a shell command line to run in a pseudo-terminal")],
        cwd: Annotated[
            str | None,
            Field(description="working directory relative to the workspace root (default: the root)"),
        ] = None,
    ) -> dict[str, Any]:
        """Start a long-lived program (a server, a watcher, a REPL like `python -i`) in a pseudo-terminal.

        Returns its id at once. Then read_process(id, wait=...) for its output, write_process(id,
        input) to type into it, stop_process(id) to end it. It keeps running between calls, never
        blocking the user's cells, and is ended when ipymcp unloads or the kernel stops.
        `python`/`pip` are the kernel's interpreter, as in run_command.
        """
        process = terminal.start_process(command, working_directory(cwd))
        return {
            "id": process.id,
            "pid": process.pid,
            "command": command,
            "cwd": process.cwd,
            "next": f"read_process({process.id}, wait=2) to see its output",
        }

    @toolbox.tool(
        level="full", read_only=False, destructive=False, title="Read a background process's output"
    )
    async def read_process(
        id: Annotated[int, Field(description="the id from start_process")],
        wait: Annotated[
            float, Field(description="seconds to wait for new output when there is none yet", ge=0, le=600)
        ] = 0,
    ) -> CallToolResult:
        """Return the output a background process printed since the last read, and whether it is still running.

        With wait > 0 the call waits up to that long for output to appear, then returns once the
        output has paused for a moment (0.3 s) or the process exits. Long output keeps its head and tail; output beyond the
        buffer (about 1 MB) is dropped oldest first, with a note.
        """
        process = terminal.get(id)
        if wait > 0 and not process.has_news():
            await anyio.to_thread.run_sync(process.wait_for_output, wait, abandon_on_cancel=True)
        text, dropped = process.take_output()
        text = _budget(clean_terminal_text(text), config.max_output_chars)
        notes = []
        if dropped:
            notes.append(f"[{dropped:,} bytes dropped: the output came faster than it was read]")
        notes.append(f"[{process.describe_state()}]")
        body = (text if text else "[no new output]\n") + ("" if text.endswith("\n") or not text else "\n")
        meta = {"running": process.running, "exit_code": process.exit_code}
        return CallToolResult(content=[TextContent(type="text", text=body + "\n".join(notes))], meta=meta)

    @toolbox.tool(level="full", read_only=False, destructive=True, title="Type into a background process")
    def write_process(
        id: Annotated[int, Field(description="the id from start_process")],
        input: Annotated[
            str, Field(description="text to send; end lines with \\n; \\x03 is Ctrl-C, \\x04 Ctrl-D")
        ],
    ) -> str:
        """Send input to a background process's terminal, as if typed; then read_process to see the reply.

        Include the trailing newline to submit a line. Control characters work as on a keyboard.
        """
        sent = terminal.get(id).write(input)
        return f"Sent {sent} bytes to process {id}; read_process({id}, wait=1) shows the response."

    @toolbox.tool(level="full", read_only=False, destructive=True, title="Stop a background process")
    async def stop_process(id: Annotated[int, Field(description="the id from start_process")]) -> str:
        """Stop a background process and everything it started: SIGTERM, then SIGKILL after a grace period.

        Returns its last unread output and how it ended; the id is then forgotten.
        """
        process, text = await anyio.to_thread.run_sync(terminal.stop_process, id)
        text = _budget(clean_terminal_text(text), config.max_output_chars)
        return (text.rstrip("\n") + "\n" if text.strip() else "") + f"[stopped: {process.describe_state()}]"

    @toolbox.tool(level="full", read_only=True, title="List background processes")
    def list_processes() -> dict[str, Any]:
        """List the background processes started with start_process: id, pid, command, state, exit code."""
        return {"processes": [process.info() for process in list(terminal.processes.values())]}


def _budget(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    head = max_chars * 2 // 3
    tail = max_chars - head
    return f"{text[:head]}\n[... {len(text) - head - tail:,} characters cut ...]\n{text[-tail:]}"
