"""Tunnel sessions on the server loop: one MCP session per ``ipymcp.mcp`` comm.

Each session is the SDK's server loop over a pair of memory streams (what its stdio transport
does with stdin/stdout): messages from the comm are validated here and written in; what the
server writes out is sent back on the comm (``KernelTunnel.reply``). Server thread only (imports
the SDK).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import anyio
from mcp.shared.message import ServerMessageMetadata, SessionMessage
from mcp.types import jsonrpc_message_adapter
from pydantic import ValidationError

from . import sdk_compat
from .tunnel import id_key

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from .tunnel import KernelTunnel, Tunnel

log = logging.getLogger("ipymcp.tunnel")

# Messages a session buffers between the comm and the SDK; beyond it requests are refused.
INBOX = 256


class SessionHost:
    """Starts and stops tunnel sessions on ``loop`` and ends idle ones."""

    def __init__(self, loop: asyncio.AbstractEventLoop, mcp: MCPServer, owner: KernelTunnel):
        self.loop = loop
        self.mcp = mcp
        self.owner = owner
        self.sessions: set[TunnelSession] = set()
        loop.call_soon_threadsafe(self._schedule_sweep)

    def start(self, tunnel: Tunnel, owner: KernelTunnel) -> TunnelSession:
        session = TunnelSession(self, tunnel, owner)
        self.sessions.add(session)
        self.loop.call_soon_threadsafe(session.begin)
        return session

    def stop(self) -> None:
        """From any thread: end every session (their comms are closed by the caller)."""
        for session in list(self.sessions):
            session.close()

    def _schedule_sweep(self) -> None:
        self.loop.call_later(max(1.0, min(60.0, self.owner.idle_timeout / 4)), self._sweep)

    def _sweep(self) -> None:
        try:
            self.owner.expire_idle()
        except Exception:  # noqa: BLE001 - the sweep must keep running
            log.exception("tunnel idle sweep failed")
        if self.owner.host is self:
            self._schedule_sweep()


class TunnelSession:
    def __init__(self, host: SessionHost, tunnel: Tunnel, owner: KernelTunnel):
        self.host = host
        self.tunnel = tunnel
        self.owner = owner
        self._inbox_send, self._inbox = anyio.create_memory_object_stream[SessionMessage | Exception](INBOX)
        self._outbox, self._outbox_receive = anyio.create_memory_object_stream[SessionMessage](INBOX)
        self._metadata = ServerMessageMetadata(request_context=tunnel.peer)
        self._task: asyncio.Task[None] | None = None

    # -- any thread ------------------------------------------------------------------------------
    def feed(self, payload: dict[str, Any], parent: dict[str, Any]) -> None:
        self.host.loop.call_soon_threadsafe(self._accept, payload, parent)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has already stopped
            self.host.loop.call_soon_threadsafe(self._inbox_send.close)

    # -- server loop -----------------------------------------------------------------------------
    def begin(self) -> None:
        self._task = self.host.loop.create_task(self._run(), name=f"ipymcp-tunnel-{self.tunnel.comm_id[:8]}")

    def _accept(self, payload: dict[str, Any], parent: dict[str, Any]) -> None:
        try:
            message = jsonrpc_message_adapter.validate_python(payload, by_name=False)
        except ValidationError as exc:
            first = exc.errors()[0] if exc.errors() else {}
            reason = f"{'.'.join(str(p) for p in first.get('loc', ()))}: {first.get('msg', exc)}"
            self._refuse(payload, f"Invalid JSON-RPC message ({reason}).", parent)
            return
        try:
            self._inbox_send.send_nowait(SessionMessage(message, metadata=self._metadata))
        except anyio.WouldBlock:
            self._refuse(payload, f"Too many messages waiting on this session ({INBOX}); retry later.", parent)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass  # the session has ended; its comm is closed

    def _refuse(self, payload: dict[str, Any], message: str, parent: dict[str, Any]) -> None:
        self.tunnel.parents.pop(id_key(payload.get("id")), None)
        self.owner.reply_error(self.tunnel, payload, message, parent)

    async def _run(self) -> None:
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._send_replies)
                await sdk_compat.serve_streams(self.host.mcp, self._inbox, self._outbox)
                group.cancel_scope.cancel()
        except Exception:  # noqa: BLE001 - one session failing must not touch the others
            log.exception("tunnel session %s failed", self.tunnel.comm_id[:8])
        finally:
            self.host.sessions.discard(self)
            self.owner.close(self.tunnel, "the MCP session ended in the kernel")

    async def _send_replies(self) -> None:
        async for outgoing in self._outbox_receive:
            payload = outgoing.message.model_dump(by_alias=True, mode="json", exclude_unset=True)
            metadata = outgoing.metadata
            related = metadata.related_request_id if isinstance(metadata, ServerMessageMetadata) else None
            self.owner.reply(self.tunnel, payload, related)
