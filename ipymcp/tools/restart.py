"""restart_kernel and reset_namespace."""

from __future__ import annotations

import os
from typing import Annotated, Any

import anyio
import anyio.to_thread
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent
from pydantic import Field

from ..frontend.comm import FrontendError, NoFrontendError, UnknownOpError
from ..frontend.fallback import record
from ..kernel.namespace import reset_user_namespace
from ..restart import endpoint, rest
from .base import Services, ToolSet, job_progress
from .results import NamespaceReset, Restart

tools = ToolSet()


@tools.tool(level="execute", read_only=False, destructive=True, title="Restart the kernel (all variables are lost)")
async def restart_kernel(services: Services, ctx: Context) -> Annotated[CallToolResult, Restart]:
    """DESTRUCTIVE: restart the notebook's kernel. Every variable, import and running cell of the user is lost.

    Do it only when the user asked for it or agreed (e.g. after installing a package that needs
    a fresh interpreter); to clear variables only, use reset_namespace. Restarts the way the
    user's Restart button does when the ipymcp notebook extension is connected, else through
    the Jupyter Server that manages the kernel. ipymcp then comes back by itself in the new
    kernel at the same URL and token. Through `ipymcp connect` this call returns once ipymcp
    is reachable again; over direct HTTP it returns as the restart starts, the connection drops
    for a few seconds, and your next calls work again once the kernel is back (retry
    kernel_status). Fails with the reason where restarting is impossible (VS Code, Colab).
    """
    via = await _restart(services)
    record(services.activity, "restart_kernel", f"restart requested ({via})", "restarting; ipymcp comes back by itself")
    text = (
        f"Restarting the kernel (through {via}): the user's variables, imports and running code are gone. "
        f"ipymcp comes back by itself in the new kernel at the same URL ({services.url}) and token, "
        "usually within a few seconds. Over direct HTTP this connection drops meanwhile: retry "
        "kernel_status until it answers, then load the data you need again."
    )
    facts: Restart = {"state": "restarting", "kernel_id": services.kernel_id, "pid": os.getpid(), "url": services.url, "via": via}
    # _meta.restarting: how `ipymcp connect` of earlier releases recognises the answer.
    meta = {"restarting": True, "via": via, "kernel_id": services.kernel_id, "pid": os.getpid(), "url": services.url}
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=dict(facts), meta=meta)


async def _restart(services: Services) -> str:
    """Start the restart; returns what it goes through. Raises ToolError when it is impossible."""
    frontend = services.frontend
    if frontend is not None and await anyio.to_thread.run_sync(frontend.wait_detected) == "connected":
        try:
            view = await anyio.to_thread.run_sync(frontend.choose_view)
            endpoint.mark_restart(services, "agent", view.app or "the notebook view")
            result = await frontend.arequest(
                "restart", {"delay_ms": rest.VIEW_RESTART_DELAY_MS}, timeout=services.config.restart_timeout
            )
            return f"{view.app or 'the notebook view'} ({result.get('path') or view.path})"
        except (NoFrontendError, UnknownOpError):
            pass  # the view went away, or its extension predates the restart op: the server API may do it
        except FrontendError as exc:
            raise ToolError(f"the notebook view did not restart the kernel: {exc}") from exc
    try:
        url = await anyio.to_thread.run_sync(rest.restart_through_rest, services)
    except rest.RestartError as exc:
        raise ToolError(str(exc)) from exc
    return f"the Jupyter Server API at {url}"


@tools.tool(level="execute", read_only=False, destructive=True, title="Clear the user's variables")
async def reset_namespace(
    services: Services,
    ctx: Context,
    keep: Annotated[list[str] | None, Field(description="variable names to keep (e.g. a loaded dataset)")] = None,
    timeout: Annotated[float, Field(description="seconds to wait if the user's cell is running", gt=0)] = 30,
) -> NamespaceReset:
    """DESTRUCTIVE: delete the user's variables, like `%reset -f`; the kernel and ipymcp keep running.

    Clears every user variable and the output history (Out, _), except the names in `keep`.
    Imported modules stay loaded (but their names are gone from the namespace). Runs on the
    kernel's main thread, after the user's running cell if any (waits up to `timeout`). Use it
    instead of restart_kernel when a clean namespace is enough, or where restarting is not
    possible (VS Code, Colab). Returns the number of names removed and those kept.
    """
    wanted = list(keep or [])

    async def work(job: object) -> dict[str, Any]:
        return reset_user_namespace(services.shell, wanted)

    main_thread = services.main_thread
    job = main_thread.submit(work, description="reset_namespace()")
    outcome = await main_thread.wait(job, timeout, job_progress(ctx, services.cells), services.cells.describe_wait)
    record(services.activity, "reset_namespace", "cleared the user's variables", f"{outcome['removed']} removed")
    return outcome
