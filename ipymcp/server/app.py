"""The MCP app: an ``MCPServer`` with ipymcp's tools, behind the bearer-token gate.

Everything here runs on the server thread (it imports ``mcp``, ~0.7 s), never during
``%load_ext`` itself.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from starlette.routing import Route

from .security import BearerAuth, SessionCap, sdk_transport_security

if TYPE_CHECKING:
    from .._runtime import Runtime

log = logging.getLogger("ipymcp.server")

INSTRUCTIONS = """\
You are connected to a live Jupyter kernel: the user's notebook session, with their variables in
memory. Prefer inspecting over re-computing: list_variables and inspect_variable answer at once,
even while the user's cell is running. execute runs Python (magics and !shell included) in the
user's namespace; mode="quiet" (default) leaves no trace in the user's history. Be careful: the
namespace is the user's; do not overwrite their variables unless asked.
"""

# Permission levels, lowest first; a tool is available at its level and above.
LEVELS = ("read", "edit", "execute", "full")


@dataclass
class ToolSpec:
    name: str
    level: str
    fn: Callable[..., Any]
    title: str | None
    annotations: ToolAnnotations
    approval: bool | Callable[[dict[str, Any]], bool] | None = None


class Toolbox:
    """Registers ipymcp tools: annotations from keywords, and one place that turns unexpected
    exceptions into ``ToolError`` (the SDK hides the message of any other exception).

    With a ``guard`` (``ipymcp.policy.guard.ToolGuard``), that same place enforces the permission
    level, approval, the concurrency and queue limits, and feeds the audit log — for every tool.
    """

    def __init__(self, mcp: MCPServer, guard: Any = None):
        self.mcp = mcp
        self.guard = guard
        self.specs: dict[str, ToolSpec] = {}

    def tool(
        self,
        *,
        level: str,
        read_only: bool,
        destructive: bool = False,
        idempotent: bool = False,
        title: str | None = None,
        name: str | None = None,
        approval: bool | Callable[[dict[str, Any]], bool] | None = None,
        kernel_queue: bool | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a tool available from permission ``level`` up.

        ``approval``: in approval mode, whether a call waits for the user (default: every tool
        that is not read-only and above ``read``); a callable decides per call from the
        arguments. ``kernel_queue``: the call queues work on the kernel's main thread, so it is
        refused when ``max_queued_executions`` are already waiting (default: ``execute`` level).
        """
        if level not in LEVELS:
            raise ValueError(f"unknown level {level!r}")

        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            tool_name = name or fn.__name__
            annotations = ToolAnnotations(
                title=title,
                read_only_hint=read_only,
                destructive_hint=destructive if not read_only else False,
                idempotent_hint=idempotent or read_only,
                open_world_hint=False,
            )
            if self.guard is not None:
                wrapped = self.guard.wrap(
                    fn, tool_name, level, read_only, approval, kernel_queue, _explainer(tool_name)
                )
            else:
                wrapped = _explain_errors(fn, tool_name)
            self.specs[tool_name] = ToolSpec(tool_name, level, wrapped, title, annotations, approval)
            self.mcp.add_tool(wrapped, name=tool_name, title=title, annotations=annotations)
            return fn

        return decorator


def _explainer(tool_name: str) -> Callable[[Exception], ToolError]:
    def explain(exc: Exception) -> ToolError:
        if isinstance(exc, ToolError):
            return exc
        log.info("tool %s failed", tool_name, exc_info=True)
        message = str(exc) or type(exc).__name__
        return ToolError(message if _is_sentence(exc) else f"{type(exc).__name__}: {message}")

    return explain


def _explain_errors(fn: Callable[..., Any], tool_name: str) -> Callable[..., Any]:
    explain = _explainer(tool_name)

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001
                raise explain(exc) from exc

        return async_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            raise explain(exc) from exc

    return wrapper


def _is_sentence(exc: Exception) -> bool:
    """Our own errors are written for the agent; show them without the class name."""
    return type(exc).__module__.startswith("ipymcp")


def build_mcp(runtime: Runtime) -> tuple[MCPServer, Toolbox]:
    from .._version import __version__

    root = logging.getLogger()
    # MCPServer() calls logging.basicConfig(): with no root handler it would install one that
    # prints SDK tracebacks into the user's cells. Make it a no-op, then leave the root as it was.
    sentinel = logging.NullHandler() if not root.handlers else None
    if sentinel is not None:
        root.addHandler(sentinel)
    from ..policy.guard import PolicyMiddleware, ToolGuard

    guard = ToolGuard(runtime.policy, runtime)
    try:
        mcp = MCPServer(
            "ipymcp",
            version=__version__,
            instructions=INSTRUCTIONS,
            log_level="WARNING",
            middleware=[PolicyMiddleware(guard)],
        )
    finally:
        if sentinel is not None:
            root.removeHandler(sentinel)
    guard.advertise_list_changed(mcp)
    toolbox = Toolbox(mcp, guard)
    runtime.policy.on_level_change(lambda: _notify_tools_changed(runtime, guard, mcp))
    from ..tools import register_all

    register_all(toolbox, runtime)
    _complete_variable_names(mcp, runtime)
    return mcp, toolbox


def _complete_variable_names(mcp: MCPServer, runtime: Runtime) -> None:
    """completion/complete: the user's variable names for a resource template's ``{name}``."""
    from mcp.types import Completion, ResourceTemplateReference

    from ..kernel.namespace import user_variables

    @mcp.completion()
    async def complete(ref: Any, argument: Any, context: Any) -> Completion | None:
        if not isinstance(ref, ResourceTemplateReference) or argument.name != "name":
            return None
        names = sorted(n for n in user_variables(runtime.shell) if n.startswith(argument.value))
        return Completion(values=names[:100], total=len(names), has_more=len(names) > 100)


def _notify_tools_changed(runtime: Runtime, guard: Any, mcp: MCPServer) -> None:
    """After a permission change (called on the kernel's main thread): tools/list_changed."""
    server = runtime.server
    if server is not None and server.running:
        try:
            server.call_soon(lambda: guard.notify_tools_changed(mcp), timeout=3)
        except Exception:  # noqa: BLE001 - a client that cannot be told refetches on its next list
            log.debug("tools/list_changed failed", exc_info=True)


def build_app(runtime: Runtime) -> Any:
    """The ASGI app served on the kernel's server thread: Host, Origin and token checks first
    (``BearerAuth``), then the session cap, then the SDK's Streamable HTTP app."""
    mcp, toolbox = build_mcp(runtime)
    runtime.mcp, runtime.toolbox = mcp, toolbox
    config = runtime.config
    app = mcp.streamable_http_app(
        streamable_http_path="/mcp",
        transport_security=sdk_transport_security(),
        host=config.host,
        max_request_body_size=config.max_request_body_bytes,
        max_sessions=config.max_sessions,
        session_idle_timeout=config.session_idle_timeout,
    )
    # /mcp/v1 is served by the same session manager (same sessions, same tools).
    endpoint = next(r.endpoint for r in app.routes if isinstance(r, Route) and r.path == "/mcp")
    app.router.routes.append(Route("/mcp/v1", endpoint=endpoint))
    capped = SessionCap(app, config.max_sessions, config.session_idle_timeout)
    runtime.http_auth = BearerAuth(capped, runtime.token_holder, config.allowed_hosts, config.allowed_origins)
    return runtime.http_auth
