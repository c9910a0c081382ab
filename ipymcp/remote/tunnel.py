"""An MCP transport through a kernel's Jupyter websocket: the client end of ``server/tunnel.py``.

``async with KernelTunnelTransport(endpoint, kernel_id) as (read, write)`` gives the two streams
an MCP ``ClientSession`` (or the SDK's ``Client``) runs on. Underneath: one websocket with a
fresh Jupyter session id, a route that answers while a user cell runs (``route.py``), one
``ipymcp.mcp`` comm = one MCP session, one JSON-RPC message per Jupyter message.

When the websocket drops, it is opened again (a new subshell; the old one is deleted) and the
same MCP session continues: the comm lives in the kernel, not in the connection. Replies the
kernel sent while the websocket was down are lost, so every call in flight then fails with an
error saying it may or may not have run; nothing is ever sent twice. When the kernel ends the
session (restart, ``%unload_ext``, idle timeout) the streams end after the same kind of error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

import anyio
from mcp.shared.message import SessionMessage
from mcp.types import jsonrpc_message_adapter

from .endpoint import Endpoint
from .route import (
    CONTROL,
    PROTOCOL,
    SHELL,
    TARGET,
    CommAnswer,
    Route,
    ask_comm,
    ask_kernel_info,
    create_subshell,
    delete_subshell,
    subshells_supported,
)
from .websocket import KernelConnectionError, KernelWebsocket, ServerStoppedError
from .wire import Message

log = logging.getLogger("ipymcp.remote")

MESSAGE_TYPE = "ipymcp_msg"
# JSON-RPC error code of the errors the transport itself answers with (implementation-defined range).
CONNECTION_LOST = -32001


class TunnelError(ConnectionError):
    """The tunnel could not be opened or has ended; the message says why and what to do."""


class NotLoadedError(TunnelError):
    """The kernel answered, but ipymcp is not loaded in it."""


@dataclass(frozen=True)
class TunnelOptions:
    """``route``: auto (subshell, else control, else the main shell), or one of them.
    ``message_type``: ``ipymcp_msg`` (its busy/idle can be untracked by the Jupyter server), or
    ``comm_msg`` for servers that only pass standard message types (``allowed_message_types``).
    ``framing``: auto (v1, legacy JSON if the server has no v1) or legacy (Colab's proxy).
    ``restarts_kernel``: this client restarts the kernel itself through the server's REST API
    once the kernel's restart_kernel has decided (level, approval, audit); the kernel then only
    marks the restart."""

    route: str = "auto"
    message_type: str = MESSAGE_TYPE
    framing: str = "auto"
    quickack: bool = True
    open_timeout: float = 15.0
    reconnect_for: float = 30.0
    restarts_kernel: bool = False


class KernelTunnelTransport:
    """One MCP session with the ipymcp server of one kernel, through its Jupyter server."""

    def __init__(self, endpoint: Endpoint, kernel_id: str, options: TunnelOptions | None = None):
        self.endpoint = endpoint
        self.kernel_id = kernel_id
        self.options = options or TunnelOptions()
        if self.options.route not in ("auto", "subshell", "control", "shell"):
            raise ValueError("route is auto, subshell, control or shell")
        if self.options.message_type not in (MESSAGE_TYPE, "comm_msg"):
            raise ValueError(f"message_type is {MESSAGE_TYPE} or comm_msg")
        self.comm_id = uuid.uuid4().hex
        self.ws: KernelWebsocket | None = None
        self.route: Route | None = None
        self.server_info: dict[str, Any] = {}
        self.reconnects = 0
        self.ended = ""  # why the session ended, once it has
        self.finished = asyncio.Event()  # set with ``ended``
        self._to_client, self.read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](math.inf)
        self.write_stream, self._from_client = anyio.create_memory_object_stream[SessionMessage](0)
        self._in_flight: dict[Any, str] = {}  # JSON-RPC id -> method, for requests awaiting a reply
        self._connected = asyncio.Event()
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def in_flight(self) -> int:
        """Requests sent to the kernel that have no reply yet."""
        return len(self._in_flight)

    # -- the Transport protocol ------------------------------------------------------------------
    async def __aenter__(self) -> tuple[Any, Any]:
        await self.open()
        return self.read_stream, self.write_stream

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    # -- opening ---------------------------------------------------------------------------------
    async def open(self) -> KernelTunnelTransport:
        deadline = time.monotonic() + self.options.open_timeout
        ws = await self._connect()
        try:
            answer = await self._open_comm(ws, deadline)
        except BaseException:
            await self._discard(ws)
            raise
        self.server_info = answer.data
        self._tasks = [
            asyncio.create_task(self._forward_to_kernel(), name="ipymcp-tunnel-forward"),
            asyncio.create_task(self._keep_connected(), name="ipymcp-tunnel-reconnect"),
        ]
        log.info(
            "tunnel open to kernel %s through %s (%s framing, %s messages)",
            self.kernel_id,
            self.route.describe() if self.route else "?",
            ws.subprotocol or "legacy",
            self.options.message_type,
        )
        return self

    async def _connect(self) -> KernelWebsocket:
        ws = KernelWebsocket(
            self.endpoint, self.kernel_id, framing=self.options.framing, quickack=self.options.quickack
        )
        return await ws.connect(self.options.open_timeout)

    async def _open_comm(self, ws: KernelWebsocket, deadline: float) -> CommAnswer:
        """Open the comm on the best route the kernel offers; sets ``ws`` and ``route``."""
        for route in await self._candidate_routes(ws, deadline):
            answer = await ask_comm(ws, self._session_message(ws, route, "open"), self.comm_id, _left(deadline))
            if answer.outcome == "ready":
                self._attach(ws, route)
                return answer
            await delete_subshell(ws, route)
            if answer.outcome == "closed":
                raise self._refused(answer)
            if answer.outcome == "unhandled" and route.kind != "control":
                # The shell (or a subshell) handled the message without a word: nobody in this
                # kernel knows ipymcp's messages (a comm_open would have been closed back instead).
                raise self._refused(answer)
            if answer.outcome == "timeout" and route.kind != "control":
                break
            log.debug("no answer on %s (%s); trying the next route", route.kind, answer.outcome)
        raise TunnelError(
            f"kernel {self.kernel_id} did not answer ipymcp's comm within {self.options.open_timeout:g} s: "
            "it may be busy with a long cell on an old ipykernel, or ipymcp is not loaded in it "
            "(run %load_ext ipymcp in the notebook)"
        )

    async def _candidate_routes(self, ws: KernelWebsocket, deadline: float) -> list[Route]:
        wanted = self.options.route
        if wanted == "shell":
            return [SHELL]
        if wanted == "control":
            return [CONTROL]
        info = await ask_kernel_info(ws, _left(deadline))
        if subshells_supported(info) and wanted in ("auto", "subshell"):
            return [await create_subshell(ws, _left(deadline))]
        if wanted == "subshell":
            raise TunnelError(f"kernel {self.kernel_id} has no subshells (ipykernel < 7); use route auto or control")
        return [CONTROL, SHELL]

    def _session_message(self, ws: KernelWebsocket, route: Route, operation: str) -> Message:
        """Open or close the session: with ``ipymcp_msg`` (so the Jupyter server can leave it out of
        the kernel's activity, like every call) or, in ``comm_msg`` mode, as a standard comm."""
        content: dict[str, Any] = {"comm_id": self.comm_id, "data": {}}
        if operation == "open":
            data: dict[str, Any] = {"protocol": PROTOCOL}
            if self.options.restarts_kernel:
                data["restart"] = "client"  # this client carries out restart_kernel through REST
            content.update(target_name=TARGET, data=data)
        if self.options.message_type == MESSAGE_TYPE:
            return route.message(ws, MESSAGE_TYPE, {**content, "op": operation})
        return route.message(ws, f"comm_{operation}", content)

    def _refused(self, answer: CommAnswer) -> TunnelError:
        if answer.error:
            return TunnelError(f"ipymcp in kernel {self.kernel_id} refused the session: {answer.error}")
        return NotLoadedError(
            f"ipymcp is not loaded in kernel {self.kernel_id}: run %load_ext ipymcp in its notebook, then retry"
        )

    def _attach(self, ws: KernelWebsocket, route: Route) -> None:
        self.ws, self.route = ws, route
        ws.listeners.append(self._on_kernel_message)
        self._connected.set()

    async def _discard(self, ws: KernelWebsocket) -> None:
        if self.route is not None and ws is self.ws:
            await delete_subshell(ws, self.route)
        await ws.close()

    # -- client -> kernel ------------------------------------------------------------------------
    async def _forward_to_kernel(self) -> None:
        async for outgoing in self._from_client:
            payload = outgoing.message.model_dump(by_alias=True, mode="json", exclude_unset=True)
            await self._connected.wait()
            if self.ended:
                self._fail_call(payload, f"the MCP session with the kernel has ended ({self.ended}); it did not run")
                continue
            request = "method" in payload and "id" in payload
            if request:
                self._in_flight[_key(payload["id"])] = str(payload["method"])
            try:
                assert self.ws is not None and self.route is not None
                content = {"comm_id": self.comm_id, "data": {"jsonrpc": payload}}
                await self.ws.send(self.route.message(self.ws, self.options.message_type, content))
            except KernelConnectionError:
                if request:
                    self._in_flight.pop(_key(payload["id"]), None)
                self._fail_call(payload, "the connection to the kernel dropped before the call was sent; it did not run")

    # -- kernel -> client ------------------------------------------------------------------------
    def _on_kernel_message(self, message: Message) -> None:
        if message.channel != "iopub":
            return
        content = message.content
        if message.msg_type == "status" and content.get("execution_state") in ("restarting", "dead"):
            self._end(f"the kernel is {content['execution_state']}: its variables are gone")
            return
        if content.get("comm_id") != self.comm_id:
            return
        data = content.get("data") if isinstance(content.get("data"), dict) else {}
        if message.msg_type == "comm_close":
            self._end(str(data.get("error") or "closed by the kernel"))
        elif message.msg_type == "comm_msg" and isinstance(data.get("jsonrpc"), dict):
            self._deliver(data["jsonrpc"])

    def _deliver(self, payload: dict[str, Any]) -> None:
        if "id" in payload and ("result" in payload or "error" in payload):
            self._in_flight.pop(_key(payload["id"]), None)
        try:
            message: SessionMessage | Exception = SessionMessage(
                jsonrpc_message_adapter.validate_python(payload, by_name=False)
            )
        except Exception as exc:  # noqa: BLE001 - handed to the session, which reports it
            message = exc
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._to_client.send_nowait(message)  # not once the client has stopped reading

    def _fail_call(self, payload: dict[str, Any], reason: str) -> None:
        if "method" in payload and "id" in payload:
            self._deliver(_error(payload["id"], reason))

    def _fail_in_flight(self, reason: str) -> None:
        for key, method in list(self._in_flight.items()):
            self._in_flight.pop(key, None)
            self._deliver(_error(key[1], f"{method}: {reason}"))

    def _end(self, reason: str) -> None:
        """The kernel ended the session: calls in flight fail, and so does every later one (with the
        reason) until the client closes the transport; the streams stay open for those answers."""
        if self.ended:
            return
        self.ended = reason
        self.finished.set()
        self._fail_in_flight(f"{reason}; the call did not complete (it may or may not have run)")
        self._connected.set()  # let waiting sends fail fast
        log.info("tunnel to kernel %s ended: %s", self.kernel_id, reason)

    # -- a dropped websocket ---------------------------------------------------------------------
    async def _keep_connected(self) -> None:
        while not self.ended:
            assert self.ws is not None
            await self.ws.closed.wait()
            if self._closing or self.ended:
                return
            lost = self.ws
            self._connected.clear()
            lost.listeners.remove(self._on_kernel_message)
            self._fail_in_flight(
                f"the connection to the kernel dropped ({lost.close_reason}) while the call was in flight: "
                "it may or may not have run (check with kernel_status or list_variables before running it again)"
            )
            if not await self._reconnect():
                self._end(f"the connection to the kernel was lost and could not be re-opened ({lost.close_reason})")

    async def _reconnect(self) -> bool:
        deadline = time.monotonic() + self.options.reconnect_for
        old_route = self.route
        delay = 0.2
        while time.monotonic() < deadline and not self._closing:
            try:
                ws = await self._connect()
            except ServerStoppedError as exc:
                self._end(str(exc))  # no kernel to come back to
                return False
            except KernelConnectionError as exc:
                log.info("re-opening the kernel websocket failed: %s", exc)
                await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 2, 5.0)
                continue
            if old_route is not None and old_route.subshell_id:
                await delete_subshell(ws, old_route)  # the lost connection's subshell: none leaked
            if await self._resume(ws, deadline):
                self.reconnects += 1
                return True
            await ws.close()
            return False
        return False

    async def _resume(self, ws: KernelWebsocket, deadline: float) -> bool:
        """The same comm on a new websocket (and a new subshell where the kernel has them)."""
        try:
            route = self.route or SHELL
            if route.subshell_id:
                route = await create_subshell(ws, _left(deadline))
            hello = {"comm_id": self.comm_id, "data": {"hello": True}}
            answer = await ask_comm(ws, route.message(ws, self.options.message_type, hello), self.comm_id, _left(deadline))
        except (TimeoutError, KernelConnectionError) as exc:
            log.info("resuming the tunnel failed: %s", exc)
            return False
        if answer.outcome != "ready":
            await delete_subshell(ws, route)
            if answer.outcome == "closed":
                self._end(answer.error or "the kernel no longer has this MCP session")
            return False
        self._attach(ws, route)
        log.info("tunnel to kernel %s re-opened (%s)", self.kernel_id, route.kind)
        return True

    # -- closing ---------------------------------------------------------------------------------
    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        ws, route = self.ws, self.route
        if ws is not None and ws.is_open and route is not None:
            with contextlib.suppress(KernelConnectionError):
                await ws.send(self._session_message(ws, route, "close"))
            await delete_subshell(ws, route)
        if ws is not None:
            await ws.close()
        if not self.ended:
            self.ended = "closed by the client"
            self.finished.set()
        self._to_client.close()


def _left(deadline: float) -> float:
    return max(0.1, deadline - time.monotonic())


def _key(request_id: Any) -> tuple[str, Any]:
    return (type(request_id).__name__, request_id)


def _error(request_id: Any, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": CONNECTION_LOST, "message": message}}
