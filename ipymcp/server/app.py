"""The MCP app: an ``MCPServer`` with ipymcp's tools, behind the bearer-token gate.

Everything here runs on the server thread (it imports ``mcp``, ~0.7 s), never during
``%load_ext`` itself.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations
from starlette.routing import Route

from . import sdk_compat
from .pipeline import Pipeline
from .security import BearerAuth, SessionCap, sdk_transport_security

if TYPE_CHECKING:
    from .._runtime import Runtime
    from ..tools.base import Services, ToolSpec

log = logging.getLogger("ipymcp.server")

INSTRUCTIONS = """\
You are connected to a live Jupyter kernel: the user's notebook session, with their variables in
memory. Prefer inspecting over re-computing: list_variables and inspect_variable answer at once,
even while the user's cell is running. execute runs Python (magics and !shell included) in the
user's namespace; mode="quiet" (default) leaves no trace in the user's history. Be careful: the
namespace is the user's; do not overwrite their variables unless asked.
"""


class Toolbox:
    """Registers ipymcp tools with the SDK, each as the request pipeline's run step
    (``ipymcp.server.pipeline``): permission level, limits, approval, audit, and one place that
    turns unexpected exceptions into errors the agent can read — for every tool, no other path.
    """

    def __init__(self, mcp: MCPServer, pipeline: Pipeline):
        self.mcp = mcp
        self.pipeline = pipeline
        # name -> ToolRule (its level, approval rule, kernel queue), as the pipeline applies them.
        self.specs = pipeline.rules

    def add(self, spec: ToolSpec, services: Services) -> None:
        """Register ``spec.fn`` (named as the function) with ``services`` bound to it.

        ``level``: a level name, or a function of the call's raw arguments that returns the level
        that call needs (the tool is listed at what a call without arguments needs).
        ``approval``: in approval mode, whether a call waits for the user (default: every tool
        that is not read-only and above ``read``); a callable decides per call from the
        arguments. ``approval_diff``: show the call as a diff (before → after) in the approval
        prompt. ``kernel_queue``: the call queues work on the kernel's main thread, so it is
        refused when ``max_queued_executions`` are already waiting (default: ``execute`` level).
        """
        name = spec.fn.__name__
        annotations = ToolAnnotations(
            title=spec.title,
            read_only_hint=spec.read_only,
            destructive_hint=spec.destructive if not spec.read_only else False,
            idempotent_hint=spec.idempotent or spec.read_only,
            open_world_hint=False,
        )
        diff = functools.partial(spec.approval_diff, services) if spec.approval_diff is not None else None
        rule = self.pipeline.rule(name, spec.level, spec.read_only, spec.approval, spec.kernel_queue, diff)
        registered = self.pipeline.tool_function(rule, spec.fn, services)
        self.mcp.add_tool(registered, name=name, title=spec.title, annotations=annotations)


def build_mcp(runtime: Runtime) -> tuple[MCPServer, Toolbox]:
    from .._version import __version__

    root = logging.getLogger()
    # MCPServer() calls logging.basicConfig(): with no root handler it would install one that
    # prints SDK tracebacks into the user's cells. Make it a no-op, then leave the root as it was.
    sentinel = logging.NullHandler() if not root.handlers else None
    if sentinel is not None:
        root.addHandler(sentinel)
    pipeline = Pipeline(runtime.policy)
    try:
        mcp = MCPServer(
            "ipymcp",
            version=__version__,
            instructions=INSTRUCTIONS,
            log_level="WARNING",
            middleware=[pipeline],
        )
    finally:
        if sentinel is not None:
            root.removeHandler(sentinel)
    sdk_compat.advertise_tools_list_changed(mcp)
    toolbox = Toolbox(mcp, pipeline)
    runtime.policy.on_level_change(lambda: _notify_tools_changed(runtime, pipeline, mcp))
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


def _notify_tools_changed(runtime: Runtime, pipeline: Pipeline, mcp: MCPServer) -> None:
    """After a permission change (called on the kernel's main thread): tools/list_changed."""
    server = runtime.server
    if server is not None and server.running:
        try:
            server.call_soon(lambda: pipeline.notifier.notify(mcp), timeout=3)
        except Exception:  # noqa: BLE001 - a client that cannot be told refetches on its next list
            log.debug("tools/list_changed failed", exc_info=True)


def build_app(runtime: Runtime) -> tuple[MCPServer, Toolbox, BearerAuth]:
    """The ASGI app served on the kernel's server thread: Host, Origin and token checks first
    (``BearerAuth``, returned: it is the app), then the session cap, then the SDK's Streamable
    HTTP app. Also returns the ``MCPServer`` and the ``Toolbox`` it was built with."""
    mcp, toolbox = build_mcp(runtime)
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
    return mcp, toolbox, BearerAuth(capped, runtime.token_holder, config.allowed_hosts, config.allowed_origins)
