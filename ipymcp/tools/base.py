"""What every tool module builds on: the ``Services`` a tool is given, the ``ToolSet`` it is
declared on, and helpers the families share."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..text import report_progress

if TYPE_CHECKING:
    from mcp.server.mcpserver import Context

    from ..config import IPyMCP
    from ..frontend.comm import FrontendLink
    from ..frontend.fallback import ActivityLog
    from ..kernel.history import HistoryStore
    from ..kernel.inspection import InspectionPool
    from ..kernel.mainthread import AgentJob, MainThreadExecutor
    from ..kernel.status import CellTracker
    from ..policy import Policy
    from ..policy.approval_detail import Diff
    from ..processes import Processes
    from ..server.pipeline import LevelRule
    from ..server.thread import BackgroundServer


class Services(Protocol):
    """What a tool may use: the kernel's services and the facts it reports. ``ipymcp._runtime.
    Runtime`` is the one implementation; typing tools against this keeps them to it."""

    shell: Any
    kernel: Any
    config: IPyMCP
    kernel_id: str
    load_cwd: str
    notebook_path: str | None
    server: BackgroundServer | None
    main_thread: MainThreadExecutor
    cells: CellTracker
    inspection: InspectionPool
    policy: Policy
    history: HistoryStore | None
    frontend: FrontendLink | None
    activity: ActivityLog | None
    processes: Processes | None

    @property
    def url(self) -> str: ...

    @property
    def token(self) -> str: ...

    def quick_notebook_path(self) -> str | None: ...


@dataclass(frozen=True)
class ToolSpec:
    """One tool as its module declares it (``Toolbox.add`` registers it; see ``Toolbox.tool`` for
    what each option means)."""

    fn: Callable[..., Any]
    level: LevelRule
    read_only: bool
    destructive: bool = False
    idempotent: bool = False
    title: str | None = None
    approval: bool | Callable[[dict[str, Any]], bool] | None = None
    kernel_queue: bool | None = None
    # How the approval prompt shows a call as a diff, from the services and the call's arguments.
    approval_diff: Callable[[Services, dict[str, Any]], Diff | None] | None = None


@dataclass
class ToolSet:
    """The tools of one module, in the order they are listed."""

    specs: list[ToolSpec] = field(default_factory=list)

    def tool(self, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def declare(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.specs.append(ToolSpec(fn, **options))
            return fn

        return declare


# -- shared by the tool modules ------------------------------------------------------------------


def job_progress(ctx: Context, cells: CellTracker) -> Callable[[AgentJob, float], Any]:
    """Progress notifications for a job on the kernel's main thread: what it waits for, then how
    long it has run."""

    async def tick(job: AgentJob, elapsed: float) -> None:
        if job.started is None:
            message = f"waiting: {cells.describe_wait()}"
        else:
            message = f"running for {time.monotonic() - job.started:.0f} s"
        await report_progress(ctx.report_progress, elapsed, message)

    return tick
