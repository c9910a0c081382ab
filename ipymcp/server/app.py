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

from .security import BearerAuth, transport_security

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


class Toolbox:
    """Registers ipymcp tools: annotations from keywords, and one place that turns unexpected
    exceptions into ``ToolError`` (the SDK hides the message of any other exception)."""

    def __init__(self, mcp: MCPServer):
        self.mcp = mcp
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
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
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
            wrapped = _explain_errors(fn, tool_name)
            self.specs[tool_name] = ToolSpec(tool_name, level, wrapped, title, annotations)
            self.mcp.add_tool(wrapped, name=tool_name, title=title, annotations=annotations)
            return fn

        return decorator


def _explain_errors(fn: Callable[..., Any], tool_name: str) -> Callable[..., Any]:
    def explain(exc: Exception) -> ToolError:
        if isinstance(exc, ToolError):
            return exc
        log.info("tool %s failed", tool_name, exc_info=True)
        message = str(exc) or type(exc).__name__
        return ToolError(message if _is_sentence(exc) else f"{type(exc).__name__}: {message}")

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
    try:
        mcp = MCPServer("ipymcp", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING")
    finally:
        if sentinel is not None:
            root.removeHandler(sentinel)
    toolbox = Toolbox(mcp)
    from ..tools import register_all

    register_all(toolbox, runtime)
    return mcp, toolbox


def build_app(runtime: Runtime) -> Any:
    """The ASGI app served on the kernel's server thread."""
    mcp, toolbox = build_mcp(runtime)
    runtime.mcp, runtime.toolbox = mcp, toolbox
    config = runtime.config
    app = mcp.streamable_http_app(
        streamable_http_path="/mcp",
        transport_security=transport_security(config.allowed_hosts, config.allowed_origins),
        host=config.host,
    )
    # /mcp/v1 is served by the same session manager (same sessions, same tools).
    endpoint = next(r.endpoint for r in app.routes if isinstance(r, Route) and r.path == "/mcp")
    app.router.routes.append(Route("/mcp/v1", endpoint=endpoint))
    return BearerAuth(app, runtime.token_holder, config.allowed_hosts, config.allowed_origins)
