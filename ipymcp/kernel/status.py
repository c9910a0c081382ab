"""What the kernel is doing right now, answerable from any thread."""

from __future__ import annotations

import linecache
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from .bridge import MainThreadBridge


@dataclass
class RunningCell:
    code: str
    execution_count: int | None
    started: float


class CellTracker:
    """Follows user cells through IPython events.

    A flag, not a counter: ``%load_ext`` runs inside a cell, so the first ``post_execute``
    arrives without its ``pre_execute``. ``pre_execute`` also fires for silent executions
    (a frontend's variable explorer), ``pre_run_cell`` only for real cells.
    """

    def __init__(self, shell: Any, bridge: MainThreadBridge):
        self.shell = shell
        self.bridge = bridge
        self.running: RunningCell | None = None
        self.last_finished: float | None = None

    def install(self) -> None:
        self.shell.events.register("pre_run_cell", self._pre_run_cell)
        self.shell.events.register("post_execute", self._post_execute)

    def uninstall(self) -> None:
        for event, callback in (("pre_run_cell", self._pre_run_cell), ("post_execute", self._post_execute)):
            try:
                self.shell.events.unregister(event, callback)
            except ValueError:
                pass

    def _pre_run_cell(self, info: Any = None) -> None:
        if self.bridge.current is not None:
            return  # the agent's own execute(mode="cell")
        code = getattr(info, "raw_cell", None) or ""
        self.running = RunningCell(code, self.shell.execution_count, time.monotonic())

    def _post_execute(self) -> None:
        if self.bridge.current is not None:
            return
        self.running = None
        self.last_finished = time.monotonic()

    def user_cell_busy(self) -> bool:
        return self.running is not None

    def describe_wait(self) -> str:
        """What an agent job is waiting for, in a sentence."""
        cell = self.running
        if cell is not None:
            seconds = time.monotonic() - cell.started
            return f"user cell [{cell.execution_count}] running for {seconds:.0f} s"
        current = self.bridge.current
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
