"""The user stays in control: permission level, approval, audit log and limits, in one object.

``Policy`` is plain Python (``%mcp`` uses it on the kernel's main thread). The request pipeline
that applies it to every request (``ipymcp.server.pipeline``) and the approval step that needs
the ``mcp`` SDK for elicitation (``policy.approval``) are imported on the server thread only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import memory
from .audit import AuditLog
from .limits import CallLimits, CpuPacer
from .permissions import LEVELS, allows, check_level

if TYPE_CHECKING:
    from .._runtime import Runtime

log = logging.getLogger("ipymcp.policy")

__all__ = ["LEVELS", "ApprovalRequest", "NotebookAsker", "Policy"]


@dataclass
class ApprovalRequest:
    """What the user is asked to approve."""

    tool: str
    arguments: dict[str, Any]
    client: str
    # Every argument in full, as one text (each part fenced; invisible characters made visible).
    detail: str = ""
    created: float = field(default=0.0)
    # The same, as sections {label, text, kind: "text" | "diff"} for a dialog to lay out.
    sections: list[dict[str, str]] = field(default_factory=list)
    # Characters the user has to read (refused above c.IPyMCP.approval_max_chars).
    shown_chars: int = 0

    def message(self) -> str:
        head = f"An agent ({self.client}) wants to call {self.tool}."
        return f"{head}\n\n{self.detail}" if self.detail else head


# The in-notebook prompt: given a request and a timeout, resolves to "allow", "allow_session" or
# "deny" (or raises TimeoutError). Registered by the frontend extension when a notebook UI is
# attached (see ``Policy.set_notebook_asker``).
NotebookAsker = Callable[[ApprovalRequest, float], Awaitable[str]]


class Policy:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        config = runtime.config
        # The user's choice before a restart, the configuration: the stricter (policy/memory.py).
        start = memory.starting_choice(runtime)
        self.level = check_level(start.level)
        self.approval = start.approval
        # Set once the user (or code in the kernel) chooses live: the notebook's metadata, read later
        # on the server thread, must not undo a choice made after %load_ext returned.
        self._chosen_live = False
        self.approval_timeout = float(config.approval_timeout)
        self.approval_max_chars = int(config.approval_max_chars)
        # Tools the user allowed "for this session" (until %mcp approve off/on or the server stops).
        self.session_allowed: set[str] = set()
        self.notebook_asker: NotebookAsker | None = None
        self.audit = AuditLog(
            runtime.log_file.with_name(f"kernel-{runtime.kernel_id}.audit.jsonl"),
            config.audit_max_bytes,
            secrets=lambda: (runtime.token, *self.retired_tokens),
        )
        self.retired_tokens: list[str] = []
        self.pacer = CpuPacer(config.busy_cpu_share, busy=lambda: runtime.cells.user_cell_busy())
        self.limits = CallLimits(
            config.max_concurrent_calls,
            config.max_queued_executions,
            queued=lambda: len(runtime.main_thread.queued),
        )
        self._listeners: list[Callable[[], None]] = []
        self._closing: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        # Audited from the server thread (tighten_from_notebook): no writer thread during %load_ext.
        self._start_sources = start.sources

    # -- permission level ----------------------------------------------------------------------
    def allows(self, required: str) -> bool:
        return allows(self.level, required)

    def set_level(self, level: str) -> bool:
        """Change the level; returns True when it changed (connected clients are notified)."""
        level = check_level(level)
        with self._lock:
            changed, self.level = level != self.level, level
            self._chosen_live = True
        memory.remember(self.runtime, self.level, self.approval)
        if changed:
            log.info("permission level set to %s", level)
            self.audit.record({"event": "permissions", "level": level})
            for listener in list(self._listeners):
                try:
                    listener()
                except Exception:  # noqa: BLE001
                    log.exception("level listener failed")
        return changed

    def on_level_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    # -- approval --------------------------------------------------------------------------------
    def set_approval(self, enabled: bool) -> None:
        self.approval = bool(enabled)
        self._chosen_live = True
        memory.remember(self.runtime, self.level, self.approval)
        self.session_allowed.clear()
        self.audit.record({"event": "approval", "enabled": self.approval})

    def tighten_from_notebook(self) -> None:
        """Apply the notebook's ``metadata.ipymcp`` (stricter only) and audit where the starting
        level came from. On the server thread, before the first request is served: reading a large
        .ipynb (and starting the audit writer) must not slow ``%load_ext``."""
        notebook = memory.notebook_file(self.runtime)
        start = memory.Start(self.level, self.approval, list(self._start_sources))
        if notebook is not None:
            start = memory.tighten_from_notebook(start, notebook)
        with self._lock:
            if self._chosen_live:
                return
            self.level, self.approval = start.level, start.approval
        if start.sources:
            log.info("permissions at start: %s", start.sources)
            self.audit.record(
                {"event": "permissions at start", "level": self.level, "approval": self.approval, "from": start.sources}
            )

    def set_notebook_asker(self, asker: NotebookAsker | None) -> None:
        """Plug in (or remove) the in-notebook approval prompt; elicitation is the fallback."""
        self.notebook_asker = asker

    # -- token -------------------------------------------------------------------------------------
    def retire_token(self, token: str) -> None:
        """Remember an old token so it is scrubbed from the audit log too."""
        self.retired_tokens = [token, *self.retired_tokens][:4]

    def on_close(self, listener: Callable[[], None]) -> None:
        """Run ``listener`` before the audit log closes (the pipeline writes what is still open)."""
        self._closing.append(listener)

    def close(self) -> None:
        for listener in list(self._closing):
            try:
                listener()
            except Exception:  # noqa: BLE001
                log.exception("close listener failed")
        self.audit.close()
