"""What the user and the agent get without the labextension (VS Code, Colab, a bare JupyterLab).

* The activity output: the status display ``%load_ext`` shows is updated in place
  (``update_display_data``) with the agent's recent actions, so the user sees what the agent does
  in every frontend.
* ``read_notebook`` from the ``.ipynb`` on disk (may be stale: unsaved edits are not there).
* ``insert_cell`` as a ``set_next_input`` proposal where the frontend honours it.
"""

from __future__ import annotations

import datetime as _dt
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..text import one_line, scrub

PROPOSAL_LABEL = "# Proposed by the agent (ipymcp): review, edit or delete; it has not been run.\n"


@dataclass
class Activity:
    at: str
    tool: str
    summary: str
    result: str
    ok: bool


class ActivityLog:
    """The agent's recent actions, shown under the status line of the ``%load_ext`` cell."""

    # Updates are coalesced and sent from a thread of their own: publishing the display costs
    # ~0.6 ms, more than the rest of an execute("1+1") round trip inside the kernel.
    COALESCE_S = 0.05

    def __init__(self, publish: Callable[[], None], secrets: Callable[[], Iterable[str]], size: int = 6):
        # Re-renders the status display (with ``markdown()``); never called on the server's loop.
        self._publish = publish
        # The tokens no line may contain: the activity output is saved with the notebook.
        self._secrets = secrets
        self.entries: deque[Activity] = deque(maxlen=size)
        self._lock = threading.Lock()
        self._pending = threading.Event()
        # One publisher at a time: flush() and the coalescing thread never publish the same entry twice.
        self._publish_lock = threading.Lock()
        self._closed = False
        self._thread: threading.Thread | None = None

    def record(self, tool: str, summary: str, result: str = "", ok: bool = True) -> None:
        # Scrubbed before the line is cut: not even half a token.
        secrets = list(self._secrets())
        entry = Activity(
            at=_dt.datetime.now().strftime("%H:%M:%S"),
            tool=tool,
            summary=one_line(scrub(str(summary), secrets), 100),
            result=one_line(scrub(str(result), secrets), 120),
            ok=ok,
        )
        with self._lock:
            self.entries.append(entry)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._publish_loop, name="ipymcp-activity", daemon=True)
                self._thread.start()
        self._pending.set()

    def _publish_loop(self) -> None:
        while True:
            self._pending.wait()
            if self._closed:
                return
            time.sleep(self.COALESCE_S)
            self._publish_pending()

    def _publish_pending(self) -> None:
        with self._publish_lock:
            if not self._pending.is_set():
                return  # flush() published it already
            self._pending.clear()
            self._publish()

    def flush(self) -> None:
        """Publish what is pending now, on this thread: a message this thread sends next (the save
        request) reaches the notebook view after the update, so the saved file has it and no late
        update makes the notebook dirty again."""
        self._publish_pending()

    def close(self) -> None:
        """Publish what is pending and end the thread (on stop)."""
        self._closed = True
        self._pending.set()
        if self._thread is not None:
            self._thread.join(1)
            self._publish()

    def markdown(self) -> str:
        with self._lock:
            entries = list(self.entries)
        if not entries:
            return ""
        lines = ["", "", "**Agent activity** (latest last):", ""]
        for e in entries:
            mark = "" if e.ok else " ✗"
            result = f" → {_code(e.result)}" if e.result else ""
            lines.append(f"- {e.at} `{e.tool}`{mark}: {_code(e.summary)}{result}")
        return "\n".join(lines)


def record(
    activity: ActivityLog | None, tool: str, summary: str, result: str = "", ok: bool = True, flush: bool = False
) -> None:
    """Add to the activity output if there is one (none when the frontend link did not start);
    ``flush`` publishes it at once, on this thread (see ``ActivityLog.flush``)."""
    if activity is not None:
        try:
            activity.record(tool, summary, result, ok)
            if flush:
                activity.flush()
        except Exception:  # noqa: BLE001 - the display must never break a tool call
            pass


def _code(text: str) -> str:
    return "`` " + text.replace("`", "ˋ") + " ``" if text else ""


# -- the notebook file on disk -------------------------------------------------------------------
def read_ipynb(path: str | None) -> dict[str, Any]:
    """The saved notebook in the same shape the labextension returns (``source: 'disk'``)."""
    if not path:
        raise FileNotFoundError(
            "this kernel does not know its notebook file (no JPY_SESSION_NAME / __vsc_ipynb_file__), "
            "and no notebook view with the ipymcp extension is connected"
        )
    file = Path(path)
    notebook = json.loads(file.read_text(encoding="utf-8"))
    cells = []
    for index, cell in enumerate(notebook.get("cells", [])):
        cells.append(
            {
                "index": index,
                "id": cell.get("id"),
                "cell_type": cell.get("cell_type"),
                "source": _join(cell.get("source", "")),
                "revision": None,
                "execution_count": cell.get("execution_count"),
                "outputs": cell.get("outputs", []),
                "n_outputs": len(cell.get("outputs", [])),
                "agent": (cell.get("metadata") or {}).get("ipymcp"),
                "active": False,
                "selected": False,
            }
        )
    modified = _dt.datetime.fromtimestamp(file.stat().st_mtime).isoformat(timespec="seconds")
    return {"path": str(file), "source": "disk", "saved_at": modified, "n_cells": len(cells), "cells": cells}


def _join(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value or "")


def propose_cell(shell: Any, source: str) -> None:
    """Queue a new cell via ``set_next_input``: it appears below the next cell the user runs."""
    shell.set_next_input(PROPOSAL_LABEL + source, replace=False)
