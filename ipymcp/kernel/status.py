"""What the kernel is doing right now, answerable from any thread."""

from __future__ import annotations

import inspect
import linecache
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .mainthread import MainThreadExecutor

log = logging.getLogger("ipymcp")

# How long after the kernel's last cell ended a kept agent request (keep_after_view_gone) can
# still start: a queued request starts right away.
QUEUED_GRACE = 2.0


@dataclass
class RunningCell:
    code: str
    execution_count: int | None
    started: float
    msg_id: str = ""
    # The cell that was running when this request started (a request handled inside a cell, as
    # UI-polling libraries do): it is the running cell again when this one ends.
    outer: RunningCell | None = None
    # The notebook cell id when the agent asked the notebook to run it (execute_cell,
    # insert_cell(execute=True)): the cell is the agent's, not the user's.
    agent_cell_id: str = ""
    finished: bool = False


@dataclass(eq=False)  # two requests for the same cell are two runs
class AgentRun:
    """The agent's request that the notebook view run ``cell_id``; ``cell`` once the kernel started it."""

    cell_id: str
    cell: RunningCell | None = None
    # Set by keep_after_view_gone: still the agent's request after the agent stopped waiting
    # (inf: while a cell runs; then a deadline).
    kept_until: float | None = None


class CellTracker:
    """The user's running cell: the main shell's non-silent ``execute_request``, start to end.

    It wraps the handler the kernel dispatches ``execute_request`` to (``kernel.shell_handlers``),
    so a cell is known by its own request and ends only when that request ends. IPython's
    ``pre_execute``/``post_execute`` events cannot tell cells apart: they also fire around every
    comm message (the ``comm`` package's ``handle_msg``), silent executes and executes on
    subshells, and with ipykernel 7 + JupyterLab >= 4.4 those run on subshell threads while the
    cell runs (one ``read_notebook`` used to end the user's cell). Subshell and silent requests
    are not the user's cell.

    The cell's number is the one its ``execute_input`` and prompt show: the shell's count when the
    request starts (IPython 9 increments it inside ``run_cell``, 7 and 8 after it).
    ``%load_ext`` runs inside a request that started before the wrapper existed: that cell is not
    tracked.
    """

    def __init__(self, shell: Any, main_thread: MainThreadExecutor):
        self.shell = shell
        self.main_thread = main_thread
        self.running: RunningCell | None = None
        self._handlers: dict[str, Any] | None = None
        self._original: Any = None
        self._wrapper: Any = None
        self._active = False
        # Notebook cell ids the agent has asked the notebook view to run, not yet started.
        self._agent_requests: list[AgentRun] = []
        self._agent_lock = threading.Lock()

    def install(self) -> None:
        handlers = getattr(getattr(self.shell, "kernel", None), "shell_handlers", None)
        original = handlers.get("execute_request") if isinstance(handlers, dict) else None
        if original is None:
            log.warning("this kernel has no execute_request handler to follow: user cells are not tracked")
            return
        tracker = self

        async def execute_request(stream: Any, ident: Any, parent: dict[str, Any]) -> None:
            cell = tracker._start(parent) if tracker._active else None
            try:
                result = original(stream, ident, parent)
                if inspect.isawaitable(result):
                    await result
            finally:
                if cell is not None:
                    tracker._end(cell)

        self._handlers, self._original, self._wrapper = handlers, original, execute_request
        self._active = True
        handlers["execute_request"] = execute_request

    def uninstall(self) -> None:
        self._active = False
        self.running = None
        handlers, self._handlers = self._handlers, None
        # If someone wrapped the handler after us, ours stays in their chain as a pass-through.
        if handlers is not None and handlers.get("execute_request") is self._wrapper:
            handlers["execute_request"] = self._original

    def _start(self, request: dict[str, Any]) -> RunningCell | None:
        try:
            header, content = request.get("header") or {}, request.get("content") or {}
            if header.get("subshell_id") or content.get("silent"):
                return None
            claim = self._claim_agent_request(request.get("metadata") or {})
            cell = RunningCell(
                code=str(content.get("code") or ""),
                execution_count=self.shell.execution_count,
                started=time.monotonic(),
                msg_id=str(header.get("msg_id") or ""),
                outer=self.running,
                agent_cell_id=claim.cell_id if claim is not None else "",
            )
        except Exception:  # noqa: BLE001 - a malformed request still runs; the kernel answers it
            log.debug("could not follow an execute_request", exc_info=True)
            return None
        if claim is not None:
            claim.cell = cell
        self.running = cell
        return cell

    def _end(self, cell: RunningCell) -> None:
        cell.finished = True
        if self.running is cell:
            self.running = cell.outer
        if self.running is None:
            # A request queued behind this cell starts now, if there is one.
            with self._agent_lock:
                for run in self._agent_requests:
                    if run.kept_until == math.inf:
                        run.kept_until = time.monotonic() + QUEUED_GRACE

    # -- cells the agent runs through the notebook view -----------------------------------------
    @contextmanager
    def agent_request(self, cell_id: str) -> Iterator[AgentRun]:
        """While the agent waits for the notebook view to run ``cell_id``: the request that comes
        back for that cell (JupyterLab and Notebook 7 put ``cellId`` in its metadata) is the
        agent's, and the yielded record gets its RunningCell. A request the view never sent is
        forgotten on exit."""
        run = AgentRun(cell_id)
        with self._agent_lock:
            self._agent_requests.append(run)
        try:
            yield run
        finally:
            with self._agent_lock:
                if run in self._agent_requests and run.kept_until is None:
                    self._agent_requests.remove(run)

    def keep_after_view_gone(self, run: AgentRun) -> None:
        """The view that was to run ``run.cell_id`` got the request and went away (a reload)
        before the cell started. JupyterLab sends the execute_request at once, so it is most likely
        queued behind the running cell: it stays the agent's when it starts, if it starts while
        that cell runs or within QUEUED_GRACE after the kernel has no cell running."""
        with self._agent_lock:
            run.kept_until = math.inf if self.running is not None else time.monotonic() + QUEUED_GRACE
            if run not in self._agent_requests:
                self._agent_requests.append(run)

    def _claim_agent_request(self, metadata: dict[str, Any]) -> AgentRun | None:
        cell_id = metadata.get("cellId")
        if not isinstance(cell_id, str) or not cell_id:
            return None
        with self._agent_lock:
            now = time.monotonic()
            self._agent_requests = [r for r in self._agent_requests if r.kept_until is None or r.kept_until > now]
            run = next((r for r in self._agent_requests if r.cell_id == cell_id), None)
            if run is not None:
                self._agent_requests.remove(run)  # one run per request: a later run is the user's
        return run

    def agent_cell_of(self, msg_id: str) -> str:
        """The notebook cell id if the running request ``msg_id`` is one the agent asked for."""
        cell = self.running
        while cell is not None:
            if cell.msg_id == msg_id:
                return cell.agent_cell_id
            cell = cell.outer
        return ""

    @property
    def user_running(self) -> RunningCell | None:
        """The running cell if the user started it (not a notebook cell the agent asked to run)."""
        cell = self.running
        return cell if cell is not None and not cell.agent_cell_id else None

    def user_cell_busy(self) -> bool:
        """A cell from the notebook runs (the user's, or one the agent asked the notebook to run)."""
        return self.running is not None

    def next_execution_count(self) -> int:
        """The number the user's next cell gets (``In [n]``), the same on every IPython: while
        cell [n] runs, IPython 9 has already counted it (``execution_count`` is n + 1) and
        IPython 7 and 8 have not (n)."""
        count = int(self.shell.execution_count)
        cell = self.running
        if cell is not None and cell.execution_count is not None:
            return max(count, cell.execution_count + 1)
        return count

    def describe_wait(self) -> str:
        """What an agent job is waiting for, in a sentence."""
        cell = self.running
        if cell is not None:
            seconds = time.monotonic() - cell.started
            if cell.agent_cell_id:
                return (
                    f"notebook cell {cell.agent_cell_id} [{cell.execution_count}], run by the agent "
                    f"(execute_cell), running for {seconds:.0f} s"
                )
            return f"user cell [{cell.execution_count}] running for {seconds:.0f} s"
        current = self.main_thread.current
        if current is not None:
            return f"another agent job ({current.description}) running for {time.monotonic() - current.started:.0f} s"
        return "the kernel's main thread is busy (a comm, widget or GUI callback)"


def main_thread_user_frames(limit: int = 5) -> list[dict[str, Any]]:
    """Innermost frames of notebook code on the main thread (what the running cell is doing)."""
    frame = sys._current_frames().get(threading.main_thread().ident)
    frames = []
    while frame is not None and len(frames) < 50:
        filename = frame.f_code.co_filename
        if _is_notebook_code(filename):
            line = linecache.getline(filename, frame.f_lineno).strip()
            frames.append({"function": frame.f_code.co_name, "line": frame.f_lineno, "code": line[:200]})
        frame = frame.f_back
    return frames[:limit]


def _is_notebook_code(filename: str) -> bool:
    return filename.startswith("<ipython-input") or "/ipykernel_" in filename


def rss_bytes() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
    except Exception:  # noqa: BLE001
        return None


def versions() -> dict[str, str]:
    import ipykernel
    import IPython

    from .._version import __version__

    return {
        "python": sys.version.split()[0],
        "ipykernel": ipykernel.__version__,
        "ipython": IPython.__version__,
        "ipymcp": __version__,
    }


def kernel_features(kernel: Any) -> dict[str, bool]:
    """Version-dependent abilities, so an agent (and the README) can say what is missing."""
    return {
        "queues_behind_async_cells": hasattr(kernel, "_main_asyncio_lock") or hasattr(kernel, "schedule_dispatch"),
        "subshells": bool(getattr(kernel, "_supports_kernel_subshells", False)),
        "gui_event_loop": getattr(kernel, "eventloop", None) is not None,
    }


def process_info() -> dict[str, Any]:
    return {"pid": os.getpid(), "cwd": os.getcwd(), "rss_bytes": rss_bytes()}
