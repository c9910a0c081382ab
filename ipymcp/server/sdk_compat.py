"""Every use of the mcp SDK's private attributes, in one file, so an SDK upgrade touches only this.

Each function says what public API is missing. Server thread only (imports the SDK).
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

import anyio
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.mcpserver import MCPServer
from mcp.shared.subscriptions import ToolsListChanged

log = logging.getLogger("ipymcp.server")


def client_name(session: Any) -> str | None:
    """``name version`` of the MCP client, as it introduced itself in ``initialize`` (None for a
    2026-07-28 request, which has no handshake, or a client that sent no ``clientInfo``). Every
    place that names the client (audit log, approval prompt, a cell's provenance) uses this."""
    try:
        info = getattr(session.client_params, "client_info", None)
    except Exception:  # noqa: BLE001 - a session without handshake parameters
        return None
    return f"{info.name} {info.version}".strip() if info is not None else None


def advertise_tools_list_changed(mcp: MCPServer) -> None:
    """Handshake-era ``initialize`` says ``tools.listChanged: true`` (the permission level can change).

    The SDK builds the capabilities with default ``NotificationOptions`` (all false) and offers no
    ``MCPServer`` keyword for them; 2026-07-28 derives the flag from ``subscriptions/listen``.
    """
    lowlevel = mcp._lowlevel_server
    original = lowlevel.create_initialization_options

    def create_initialization_options(notification_options: Any = None, *args: Any, **kwargs: Any) -> Any:
        return original(notification_options or NotificationOptions(tools_changed=True), *args, **kwargs)

    lowlevel.create_initialization_options = create_initialization_options


class ToolListNotifier:
    """Tells every connected client that the tool list changed, in both protocol eras.

    2026-07-28 clients listen through ``subscriptions/listen``: the server's subscription bus is
    only reachable through a request's ``Context`` (``ctx.notify_tools_changed()``), and a level
    change comes from the user's cell, outside any request. Handshake-era sessions get
    ``notifications/tools/list_changed`` on their standalone GET stream: the connection that owns
    it is only reachable from a request as ``session._connection``.
    """

    def __init__(self) -> None:
        self.connections: weakref.WeakSet[Any] = weakref.WeakSet()

    def remember(self, request_ctx: Any) -> None:
        """Called for every request: keep handshake-era connections that have a standalone stream
        (an HTTP session, or a Jupyter tunnel session: its comm is one, without a session id)."""
        connection = getattr(request_ctx.session, "_connection", None)
        tunnel = getattr(request_ctx.request, "via", None) is not None
        if connection is not None and (connection.session_id or tunnel) and connection.has_standalone_channel:
            self.connections.add(connection)

    async def notify(self, mcp: MCPServer) -> None:
        try:
            await mcp._subscriptions.publish(ToolsListChanged())
        except Exception:  # noqa: BLE001
            log.debug("subscriptions publish failed", exc_info=True)
        for connection in list(self.connections):
            try:
                with anyio.move_on_after(1):
                    await connection.send_tool_list_changed()
            except Exception:  # noqa: BLE001 - a closed session
                self.connections.discard(connection)


async def terminate_sessions(mcp: MCPServer) -> None:
    """End every handshake-era session: their standalone GET streams would hold uvicorn's graceful
    stop, and a rotated token must not keep them. The session manager's transports are reachable
    only through ``_lowlevel_server._session_manager._server_instances``."""
    manager = getattr(getattr(mcp, "_lowlevel_server", None), "_session_manager", None)
    for transport in list(getattr(manager, "_server_instances", {}).values()):
        try:
            await transport.terminate()
        except Exception:  # noqa: BLE001 - a session that ended meanwhile
            pass


async def serve_streams(mcp: MCPServer, read_stream: Any, write_stream: Any) -> None:
    """Serve one MCP session over a pair of memory streams (a tunnel comm), until ``read_stream`` ends.

    ``MCPServer`` offers stdio and HTTP runners only; the SDK's own in-memory transport reaches the
    low-level server the same way (``mcp.client._memory``). The initialization options carry
    ``advertise_tools_list_changed``'s flag.
    """
    lowlevel = mcp._lowlevel_server
    await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())
