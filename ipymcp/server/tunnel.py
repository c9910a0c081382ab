"""MCP through Jupyter: each ``ipymcp.mcp`` comm is one MCP session on the kernel's server.

A client that can reach the kernel's websocket on a Jupyter server (the server's own token is
the authentication; no port of ours is involved) opens a comm to the target ``ipymcp.mcp``
with ``{"protocol": 1}`` and sends one JSON-RPC message per Jupyter message:

- ``ipymcp_msg`` (this module's own message type) with ``{"comm_id", "data": {"jsonrpc": …}}``;
  the session is opened and closed with the same type (``"op": "open"`` with ``target_name`` and
  ``data: {"protocol": 1}``, ``"op": "close"``). For deployments that only let standard message
  types through, ``comm_open`` / ``comm_msg`` / ``comm_close`` with the same content. The own
  type exists for the user's view: the kernel wraps every request in ``status`` busy/idle, which
  JupyterLab shows and the server's REST API reports, keyed by the request's type. A Jupyter
  server can leave ``ipymcp_msg`` out of its activity (``MappingKernelManager.untracked_message_types``,
  set by ipymcp's server extension) without also hiding widgets' ``comm_msg``; opening with a
  ``comm_open`` instead would flip the user's indicator to idle when an agent connects during a
  running cell. docs/remote-design.md has the measurement and the trade-off.
- Replies go out on IOPub as ``comm_msg`` of that comm, ``{"jsonrpc": …}``, with an explicit
  parent: the tunnel's message they answer, never the user's running cell (on ipykernel 6 a
  send from another thread otherwise takes the last shell parent).

Where messages are handled: a client on ipykernel >= 7 sends them on a subshell of its own
(``subshell_id`` in every header), so they are answered while a user cell runs. On older
kernels it sends them on the control channel: this module accepts ``comm_open``, ``comm_msg``,
``comm_close`` and ``ipymcp_msg`` there, for ``ipymcp.mcp`` comms only (a widget's comm on
control is ignored, as it always was). On the main shell they wait behind the user's cell.

Kernel threads only record the parent and hand the raw message to the server loop; everything
that imports the SDK runs there (``tunnel_session``). Every session goes through the same
``MCPServer`` and request pipeline as HTTP clients: level, limits, approval, audit.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .tunnel_limit import bound_reply

if TYPE_CHECKING:
    from .._runtime import Runtime

log = logging.getLogger("ipymcp.tunnel")

TARGET = "ipymcp.mcp"
MESSAGE_TYPE = "ipymcp_msg"
PROTOCOL = 1
# Requests a session may have waiting for a reply before new ones are refused.
MAX_IN_FLIGHT = 256
# JSON-RPC error codes (the spec's).
INVALID_REQUEST = -32600


class TunnelPeer:
    """What the audit log says about a tunnel session's client (``ctx.request`` in the pipeline)."""

    # Not an HTTP request: the pipeline's header and socket-peer lookups find nothing.
    headers = None
    client = None

    def __init__(self, comm_id: str, channel: str, jupyter_session: str, restarts_kernel: bool = False):
        self.comm_id = comm_id
        self.channel = channel  # where its messages arrive: subshell, control or shell
        self.jupyter_session = jupyter_session  # the Jupyter session id the client chose
        # The client restarts the kernel itself through the Jupyter server's REST API once
        # restart_kernel has passed the pipeline (`ipymcp connect --server`: it holds the server's
        # token, which the kernel never sees); comm_open data ``{"restart": "client"}``.
        self.restarts_kernel = restarts_kernel

    @property
    def via(self) -> str:
        return f"jupyter-server ({self.channel}, comm {self.comm_id[:8]}, session {self.jupyter_session[:8]})"


class Tunnel:
    """The kernel-thread side of one comm: its parents and its backlog until the server is up.

    ``comm`` is the comm manager's ``Comm`` for a session opened with ``comm_open``, None for one
    opened with ``ipymcp_msg`` (its messages never pass through the comm manager).
    Plain classes here, not dataclasses: this module is imported during ``%load_ext``.
    """

    def __init__(self, comm: Any, peer: TunnelPeer, opened_header: dict[str, Any], comm_id: str = ""):
        self.comm = comm
        self._comm_id = comm_id or comm.comm_id
        self.peer = peer
        self.opened_header = opened_header
        self.last_parent = opened_header  # the latest tunnel message: parent of unrelated messages
        self.parents: dict[Any, dict[str, Any]] = {}  # request id -> the message that carried it
        self.backlog: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self.session: Any = None  # tunnel_session.TunnelSession once the server loop runs it
        self.last_activity = time.monotonic()
        self.closed = False

    @property
    def comm_id(self) -> str:
        return self._comm_id


class KernelTunnel:
    """``runtime.tunnel``: the comm target, the message handlers, and the open tunnels."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.kernel = runtime.kernel
        self.tunnels: dict[str, Tunnel] = {}
        self._lock = threading.Lock()
        self._manager: Any = None
        self.host: Any = None  # tunnel_session.SessionHost, once the server loop is up
        self._replaced: dict[tuple[str, str], Any] = {}
        config = runtime.config
        self.max_sessions = config.max_sessions
        self.idle_timeout = config.session_idle_timeout
        self.max_message_bytes = int(config.max_request_body_bytes)
        self.max_reply_bytes = int(config.tunnel_max_reply_bytes)

    # -- lifecycle (main thread) -------------------------------------------------------------------
    def install(self) -> None:
        """Register the target and handlers; cheap, no SDK import (runs during ``%load_ext``)."""
        self._manager = getattr(self.kernel, "comm_manager", None)
        if self._manager is None:
            from comm import get_comm_manager

            self._manager = get_comm_manager()
        self._manager.register_target(TARGET, self._on_open)
        self._add_handler("shell_handlers", MESSAGE_TYPE, self._on_tunnel_message)
        control = {
            "comm_open": self._on_control_open,
            "comm_msg": self._on_control_comm_msg,
            "comm_close": self._on_control_close,
            MESSAGE_TYPE: self._on_tunnel_message,
        }
        for msg_type, handler in control.items():
            self._add_handler("control_handlers", msg_type, handler)

    def _add_handler(self, table: str, msg_type: str, handler: Callable[..., Any]) -> None:
        handlers = getattr(self.kernel, table, None)
        if not isinstance(handlers, dict) or msg_type in handlers:
            return  # never replace a handler the kernel (or someone else) has
        handlers[msg_type] = handler
        self._replaced[(table, msg_type)] = handler

    def uninstall(self) -> None:
        for (table, msg_type), handler in self._replaced.items():
            handlers = getattr(self.kernel, table, {})
            if handlers.get(msg_type) is handler:
                del handlers[msg_type]
        self._replaced.clear()
        try:
            self._manager.unregister_target(TARGET, self._on_open)
        except Exception:  # noqa: BLE001 - already gone
            pass
        for tunnel in list(self.tunnels.values()):
            self.close(tunnel, "ipymcp was stopped in the kernel (%unload_ext, %mcp stop or a restart)")
        host, self.host = self.host, None
        if host is not None:
            host.stop()

    def attach(self, host: Any) -> None:
        """On the server thread, once the MCP server is built: start the tunnels opened so far."""
        with self._lock:
            self.host = host
            waiting = [t for t in self.tunnels.values() if not t.closed]
        for tunnel in waiting:
            self._start(tunnel)

    # -- opening and closing ---------------------------------------------------------------------
    def _on_open(self, comm: Any, msg: dict[str, Any]) -> None:
        """A client opened an ``ipymcp.mcp`` comm (main shell, a subshell or control thread)."""
        tunnel = self._open(comm.comm_id, comm, msg)
        if tunnel is not None:
            comm.on_msg(lambda m: self._on_comm_msg(tunnel, m))
            comm.on_close(lambda m: self._on_client_close(tunnel, m))

    def _on_tunnel_open(self, msg: dict[str, Any]) -> None:
        """The same, opened with an ``ipymcp_msg`` (``op: open``): no comm manager involved."""
        content = msg.get("content") or {}
        comm_id = content.get("comm_id")
        if not isinstance(comm_id, str) or not 0 < len(comm_id) <= 64:
            self._answer_unknown_comm(msg, "a session needs a comm_id: a string of 1 to 64 characters")
        elif content.get("target_name") != TARGET:
            self._answer_unknown_comm(msg, f"ipymcp_msg opens only {TARGET!r} sessions")
        elif comm_id in self.tunnels or self._is_other_comm(comm_id):
            # No comm_close for it: that would close the session or widget that owns the id.
            log.info("ignored an ipymcp_msg open for a comm_id already in use")
        else:
            self._open(comm_id, None, msg)

    def _open(self, comm_id: str, comm: Any, msg: dict[str, Any]) -> Tunnel | None:
        header = dict(msg.get("header") or {})
        data = (msg.get("content") or {}).get("data") or {}
        restarts = isinstance(data, dict) and data.get("restart") == "client"
        peer = TunnelPeer(comm_id, _channel_of(header), str(header.get("session") or "")[:12], restarts)
        tunnel = Tunnel(comm, peer, header, comm_id)
        refusal = self._open_refusal(data)
        if refusal is not None:
            log.info("tunnel refused: %s", refusal)
            self._publish(tunnel, "comm_close", {"data": {"error": refusal}}, header)
            self._forget_comm(tunnel)
            return None
        with self._lock:
            self.tunnels[comm_id] = tunnel
        self._publish(tunnel, "comm_msg", {"data": {"ready": self._ready_info()}}, header)
        log.info("tunnel opened: %s", peer.via)
        if self.host is not None:
            self._start(tunnel)
        return tunnel

    def _open_refusal(self, data: Any) -> str | None:
        protocol = data.get("protocol") if isinstance(data, dict) else None
        if protocol != PROTOCOL:
            return (
                f"this kernel's ipymcp speaks tunnel protocol {PROTOCOL}, the client asked for {protocol!r}: "
                "install the same ipymcp version on both sides"
            )
        state = self.runtime.state
        if state.startswith("failed"):
            return f"the MCP server in this kernel is not running ({state}); run %mcp start in the notebook"
        live = sum(1 for t in self.tunnels.values() if not t.closed)
        if live >= self.max_sessions:
            return (
                f"Too many open MCP sessions through Jupyter ({live}, the limit c.IPyMCP.max_sessions). "
                "Close sessions you no longer use; idle ones end after "
                f"{self.idle_timeout:g} s (c.IPyMCP.session_idle_timeout)."
            )
        return None

    def _ready_info(self) -> dict[str, Any]:
        from .._version import __version__

        return {
            "protocol": PROTOCOL,
            "message_type": MESSAGE_TYPE,
            "server": f"ipymcp {__version__}",
            "kernel_id": self.runtime.kernel_id,
            "pid": os.getpid(),  # tells a client the kernel after a restart from the one before
        }

    def _start(self, tunnel: Tunnel) -> None:
        with self._lock:
            host = self.host
            if host is None or tunnel.session is not None or tunnel.closed:
                return
            tunnel.session = host.start(tunnel, self)
            backlog, tunnel.backlog = tunnel.backlog, []
        for raw, parent in backlog:
            tunnel.session.feed(raw, parent)

    def _on_client_close(self, tunnel: Tunnel, msg: dict[str, Any]) -> None:
        tunnel.closed = True
        self._end(tunnel)
        log.info("tunnel closed by the client: %s", tunnel.peer.via)

    def close(self, tunnel: Tunnel, reason: str) -> None:
        """Close from the kernel's side (stop, idle, protocol error); the client is told why."""
        if tunnel.closed:
            return
        tunnel.closed = True
        self._publish(tunnel, "comm_close", {"data": {"error": reason}}, tunnel.last_parent)
        self._forget_comm(tunnel)
        self._end(tunnel)
        log.info("tunnel closed (%s): %s", reason, tunnel.peer.via)

    def _forget_comm(self, tunnel: Tunnel) -> None:
        # What ipykernel's own CommManager.comm_close does: the comm must not send a second
        # comm_close (with whatever parent the kernel has then) when it is garbage-collected.
        if tunnel.comm is None:
            return
        tunnel.comm._closed = True
        try:
            self._manager.unregister_comm(tunnel.comm)
        except Exception:  # noqa: BLE001 - not registered (refused at open)
            pass

    def _end(self, tunnel: Tunnel) -> None:
        with self._lock:
            self.tunnels.pop(tunnel.comm_id, None)
        if tunnel.session is not None:
            tunnel.session.close()

    # -- incoming messages (main shell, subshell or control thread) ------------------------------
    def _on_tunnel_message(self, stream: Any, idents: Any, msg: dict[str, Any]) -> None:
        """Handler of ``ipymcp_msg`` on shell and control: open, one JSON-RPC message, or close."""
        content = msg.get("content") or {}
        operation = content.get("op", "msg")
        if operation == "open":
            self._on_tunnel_open(msg)
            return
        tunnel = self.tunnels.get(str(content.get("comm_id")))
        if tunnel is None:
            self._answer_unknown_comm(msg)
        elif operation == "close":
            self._on_client_close(tunnel, msg)
        else:
            self._receive(tunnel, msg)

    def _on_comm_msg(self, tunnel: Tunnel, msg: dict[str, Any]) -> None:
        """The same, framed as a ``comm_msg`` (routed here by the kernel's comm manager)."""
        self._receive(tunnel, msg)

    def _receive(self, tunnel: Tunnel, msg: dict[str, Any]) -> None:
        header = dict(msg.get("header") or {})
        data = (msg.get("content") or {}).get("data")
        payload = data.get("jsonrpc") if isinstance(data, dict) else None
        tunnel.last_parent = header
        tunnel.last_activity = time.monotonic()
        if not isinstance(payload, dict):
            if isinstance(data, dict) and "hello" in data:  # a client checking its session after a reconnect
                self._publish(tunnel, "comm_msg", {"data": {"ready": self._ready_info()}}, header)
            return
        refusal = self._message_refusal(tunnel, payload)
        if refusal is not None:
            self.reply_error(tunnel, payload, refusal, header)
            return
        if expects_answer(payload):
            tunnel.parents[id_key(payload["id"])] = header
        elif payload.get("method") == "notifications/cancelled":
            # A cancelled request may get no response: its parent must not stay in flight.
            params = payload.get("params")
            if isinstance(params, dict):
                tunnel.parents.pop(id_key(params.get("requestId")), None)
        with self._lock:
            session = tunnel.session
            if session is None:
                tunnel.backlog.append((payload, header))
                return
        session.feed(payload, header)

    def _message_refusal(self, tunnel: Tunnel, payload: dict[str, Any]) -> str | None:
        request_id = payload.get("id")
        if "id" in payload and (isinstance(request_id, bool) or not isinstance(request_id, (str, int))):
            # The SDK would read it as a notification and never answer: the client would wait forever.
            return f"Invalid request id {request_id!r:.100}: MCP request ids are strings or integers."
        size = len(json.dumps(payload, separators=(",", ":"), default=str))
        if size > self.max_message_bytes:
            return (
                f"Message too large: {size} bytes, the limit is {self.max_message_bytes} "
                "(c.IPyMCP.max_request_body_bytes); send less per call (e.g. write a file in parts)."
            )
        if expects_answer(payload) and len(tunnel.parents) >= MAX_IN_FLIGHT:
            return f"Too many requests waiting for a reply on this session ({MAX_IN_FLIGHT}); wait for some."
        return None

    def _answer_unknown_comm(
        self, msg: dict[str, Any], error: str = "no such MCP session in this kernel (restarted or reloaded?)"
    ) -> None:
        """A message for a tunnel this kernel does not have (restarted, or ipymcp reloaded), or an
        open it refuses before there is a tunnel."""
        comm_id = str((msg.get("content") or {}).get("comm_id"))[:64]
        if self._is_other_comm(comm_id):
            log.info("ignored an ipymcp_msg for a comm that is not an MCP session (a widget's: left open)")
            return
        header = dict(msg.get("header") or {})
        self._send_raw("comm_close", {"comm_id": comm_id, "data": {"error": error}}, header, comm_id)

    def _is_other_comm(self, comm_id: str) -> bool:
        """A comm of the kernel's comm manager (a widget's) that is not one of our sessions."""
        return comm_id not in self.tunnels and comm_id in (getattr(self._manager, "comms", None) or {})

    # -- control channel: ipymcp.mcp comms only ------------------------------------------------
    def _on_control_open(self, stream: Any, idents: Any, msg: dict[str, Any]) -> None:
        if (msg.get("content") or {}).get("target_name") != TARGET:
            log.debug("ignored a comm_open on control for another target")
            return
        self._manager.comm_open(stream, idents, msg)

    def _on_control_comm_msg(self, stream: Any, idents: Any, msg: dict[str, Any]) -> None:
        tunnel = self.tunnels.get(str((msg.get("content") or {}).get("comm_id")))
        if tunnel is not None:  # a widget's comm_msg on control is ignored, as without ipymcp
            self._receive(tunnel, msg)

    def _on_control_close(self, stream: Any, idents: Any, msg: dict[str, Any]) -> None:
        if str((msg.get("content") or {}).get("comm_id")) in self.tunnels:
            self._manager.comm_close(stream, idents, msg)

    # -- outgoing (server loop thread) -----------------------------------------------------------
    def reply(self, tunnel: Tunnel, payload: dict[str, Any], related_id: Any = None) -> None:
        """Send one JSON-RPC message to the client, parented by the message it answers; bounded,
        because the Jupyter server sends it to every tab of this kernel (``tunnel_limit``)."""
        if "method" not in payload and "id" in payload:  # a response or an error
            parent = tunnel.parents.pop(id_key(payload["id"]), None)
        else:
            parent = tunnel.parents.get(id_key(related_id)) if related_id is not None else None
        bounded = bound_reply(payload, self.max_reply_bytes)
        if bounded is not payload:
            what = "cut" if bounded else "dropped"
            log.info("a reply over c.IPyMCP.tunnel_max_reply_bytes was %s: %s", what, tunnel.peer.via)
        if bounded is not None:
            self._publish(tunnel, "comm_msg", {"data": {"jsonrpc": bounded}}, parent or tunnel.last_parent)

    def reply_error(self, tunnel: Tunnel, payload: dict[str, Any], message: str, parent: dict[str, Any]) -> None:
        """Answer a request the session cannot take with a JSON-RPC error; other messages are dropped."""
        if not expects_answer(payload):
            log.info("dropped a tunnel message: %s", message)
            return
        error = {"jsonrpc": "2.0", "id": payload["id"], "error": {"code": INVALID_REQUEST, "message": message}}
        self._publish(tunnel, "comm_msg", {"data": {"jsonrpc": error}}, parent)

    def expire_idle(self, now: float | None = None) -> None:
        """Close sessions with nothing in flight and no message for ``idle_timeout`` seconds."""
        now = time.monotonic() if now is None else now
        for tunnel in list(self.tunnels.values()):
            if not tunnel.parents and now - tunnel.last_activity > self.idle_timeout:
                self.close(tunnel, f"idle for more than {self.idle_timeout:g} s (c.IPyMCP.session_idle_timeout)")

    def _publish(self, tunnel: Tunnel, msg_type: str, content: dict[str, Any], parent: dict[str, Any]) -> None:
        self._send_raw(msg_type, {"comm_id": tunnel.comm_id, **content}, parent, tunnel.comm_id)

    def _send_raw(self, msg_type: str, content: dict[str, Any], parent: dict[str, Any], comm_id: str) -> None:
        # Straight to IOPub with our parent: comm.send would take the kernel's current parent.
        kernel = self.kernel
        try:
            kernel.session.send(
                kernel.iopub_socket, msg_type, content, parent=parent, ident=f"comm-{comm_id}".encode()
            )
        except Exception:  # noqa: BLE001 - the kernel is shutting down
            log.debug("tunnel send failed", exc_info=True)


def _channel_of(header: dict[str, Any]) -> str:
    if header.get("subshell_id"):
        return "subshell"
    return "control" if threading.current_thread().name == "Control" else "shell"


def expects_answer(payload: dict[str, Any]) -> bool:
    """A request (it has an id and is not itself a response)."""
    return "id" in payload and "result" not in payload and "error" not in payload


def id_key(request_id: Any) -> tuple[str, Any]:
    """A dict key for a JSON-RPC id: 1 and "1" stay apart, a (forbidden) list or object is hashable."""
    value = request_id if isinstance(request_id, (str, int, float)) else repr(request_id)[:200]
    return (type(request_id).__name__, value)
