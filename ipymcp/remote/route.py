"""Where the tunnel's messages go in the kernel, so they are answered while a user cell runs.

- ipykernel >= 7 (``kernel subshells`` in ``kernel_info``): a subshell of the tunnel's own,
  created on the control channel; every message carries its ``subshell_id`` (7.0–7.3 route a
  comm's later messages only by that header) and it is deleted when the tunnel closes.
- otherwise the control channel, where ipymcp accepts its own comms (``server/tunnel.py``);
- last resort, the main shell: calls then wait behind the user's running cell, and
  ``Route.answers_while_busy`` says so.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from .websocket import KernelConnectionError, KernelWebsocket
from .wire import Message

log = logging.getLogger("ipymcp.remote")

SUBSHELLS_FEATURE = "kernel subshells"
TARGET = "ipymcp.mcp"
PROTOCOL = 1


@dataclass(frozen=True)
class Route:
    channel: str  # the Jupyter channel: "shell" or "control"
    subshell_id: str | None = None

    @property
    def kind(self) -> str:
        return "subshell" if self.subshell_id else self.channel

    @property
    def answers_while_busy(self) -> bool:
        return self.kind != "shell"

    def describe(self) -> str:
        if self.kind == "subshell":
            return "a kernel subshell of its own: calls are answered while a user cell runs"
        if self.kind == "control":
            return "the kernel's control channel: calls are answered while a user cell runs"
        return (
            "the kernel's main shell: this kernel cannot answer while a user cell runs, so every call "
            "waits until the user's running cell has finished"
        )

    def message(self, ws: KernelWebsocket, msg_type: str, content: dict[str, Any]) -> Message:
        return ws.message(self.channel, msg_type, content, self.subshell_id)


SHELL = Route("shell")
CONTROL = Route("control")


async def ask_kernel_info(ws: KernelWebsocket, timeout: float = 10.0) -> dict[str, Any]:
    """``kernel_info`` asked on control, so a busy main shell does not delay it."""
    reply = await ws.request(ws.message("control", "kernel_info_request", {}), timeout)
    return reply.content


async def create_subshell(ws: KernelWebsocket, timeout: float = 10.0) -> Route:
    reply = await ws.request(ws.message("control", "create_subshell_request", {}), timeout)
    subshell_id = reply.content.get("subshell_id")
    if reply.content.get("status", "ok") != "ok" or not isinstance(subshell_id, str):
        raise KernelConnectionError(f"the kernel did not create a subshell: {reply.content.get('evalue', reply.content)}")
    return Route("shell", subshell_id)


async def delete_subshell(ws: KernelWebsocket, route: Route, timeout: float = 5.0) -> bool:
    """Best effort (the tunnel is closing): True when the kernel confirmed."""
    if route.subshell_id is None or not ws.is_open:
        return False
    try:
        reply = await ws.request(
            ws.message("control", "delete_subshell_request", {"subshell_id": route.subshell_id}), timeout
        )
    except (TimeoutError, KernelConnectionError) as exc:
        log.debug("could not delete subshell %s: %s", route.subshell_id, exc)
        return False
    return reply.content.get("status") == "ok"


def subshells_supported(info: dict[str, Any]) -> bool:
    return SUBSHELLS_FEATURE in (info.get("supported_features") or [])


@dataclass
class CommAnswer:
    """How the kernel answered a comm message: ready, closed (with a reason or none), or not at all."""

    outcome: str  # "ready" | "closed" | "unhandled" | "timeout"
    data: dict[str, Any]

    @property
    def error(self) -> str:
        return str(self.data.get("error") or "")


async def ask_comm(ws: KernelWebsocket, request: Message, comm_id: str, timeout: float) -> CommAnswer:
    """Send a ``comm_open`` (or a resume ``hello``) and wait for the kernel's answer on that comm.

    ``unhandled``: the kernel finished with the message (its idle status) without answering:
    nobody in that kernel handles ipymcp's comms on that channel.
    """
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[CommAnswer] = loop.create_future()

    def listen(message: Message) -> None:
        if answer.done() or message.channel != "iopub":
            return
        content = message.content
        if message.msg_type in ("comm_msg", "comm_close") and content.get("comm_id") == comm_id:
            data = content.get("data") if isinstance(content.get("data"), dict) else {}
            if message.msg_type == "comm_close":
                answer.set_result(CommAnswer("closed", data))
            elif isinstance(data.get("ready"), dict):
                answer.set_result(CommAnswer("ready", data["ready"]))
        elif (
            message.msg_type == "status"
            and message.parent_id == request.msg_id
            and content.get("execution_state") == "idle"
        ):
            answer.set_result(CommAnswer("unhandled", {}))

    ws.listeners.append(listen)
    try:
        await ws.send(request)
        return await asyncio.wait_for(answer, timeout)
    except TimeoutError:
        return CommAnswer("timeout", {})
    finally:
        ws.listeners.remove(listen)
