"""A notebook on a real ``jupyter server`` whose kernel runs ipymcp without an HTTP listener.

The kernel is started through the server's REST API with the test kernel spec (so
``IPYMCP_KERNEL_PYTHON`` picks the kernel environment); ``user()`` opens a websocket that plays
the user's browser tab. ipymcp is loaded with ``IPYMCP_SERVE_HTTP=0`` in the server's environment
(kernels inherit it), so the only way in is the tunnel.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import KERNEL_NAME, runtime_dir
from real_jupyter import JupyterServer

from ipymcp.remote import Endpoint
from ipymcp.remote.route import (
    CONTROL,
    PROTOCOL,
    TARGET,
    Route,
    ask_comm,
    ask_kernel_info,
    create_subshell,
    delete_subshell,
    subshells_supported,
)
from ipymcp.remote.websocket import KernelWebsocket
from ipymcp.remote.wire import Message


@contextmanager
def tunnel_only_environment() -> Any:
    """Kernels started by a server launched inside this block have no HTTP listener."""
    os.environ["IPYMCP_SERVE_HTTP"] = "0"
    try:
        yield
    finally:
        os.environ.pop("IPYMCP_SERVE_HTTP", None)


def tunnel_only_server(root: Path) -> JupyterServer:
    with tunnel_only_environment():
        return JupyterServer(root)


def module_server(name: str) -> Any:
    """A module-scoped ``server`` fixture: one tunnel-only Jupyter server for the whole module
    (``server = module_server("tunnel")`` in the test module)."""

    @pytest.fixture(scope="module")
    def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
        root = tmp_path_factory.mktemp(name) / "root"
        root.mkdir()
        jupyter = tunnel_only_server(root)
        yield jupyter
        jupyter.stop()

    return server


def execute_content(code: str) -> dict[str, Any]:
    return {"code": code, "silent": False, "store_history": True, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True}  # fmt: skip


class RemoteNotebook:
    def __init__(self, server: JupyterServer, name: str):
        (server.root / name).write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
        session = server.api("POST", "/api/sessions", {"path": name, "type": "notebook", "kernel": {"name": KERNEL_NAME}})
        self.server = server
        self.session_id, self.kernel_id = session["id"], session["kernel"]["id"]
        self.endpoint = Endpoint(server.base, token=server.token)

    async def user(self) -> KernelWebsocket:
        """A websocket of its own, as a browser tab on this notebook has."""
        return await KernelWebsocket(self.endpoint, self.kernel_id, username="user").connect()

    async def run(self, code: str, timeout: float = 120) -> str:
        """Run a cell as the user; its stdout. Raises with the error when the cell fails.

        A request that arrives just after a failed or interrupted cell can be aborted unrun
        (stop_on_error; ipykernel 6 keeps aborting for a moment): it is sent again, as a user would."""
        for _ in range(5):
            status, text, reply = await self._run_once(code, timeout)
            if status != "aborted":
                break
            await asyncio.sleep(0.2)
        if status != "ok":
            raise AssertionError(f"{code!r}: {status}: {reply.get('ename')}: {reply.get('evalue')}")
        return text

    async def _run_once(self, code: str, timeout: float) -> tuple[str, str, dict[str, Any]]:
        user = await self.user()
        try:
            request = user.message("shell", "execute_request", execute_content(code))
            out: list[str] = []
            idle: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def collect(message: Message) -> None:
                if message.parent_id != request.msg_id or message.channel != "iopub":
                    return
                if message.msg_type == "stream":
                    out.append(message.content.get("text", ""))
                elif message.msg_type == "status" and message.content.get("execution_state") == "idle":
                    if not idle.done():
                        idle.set_result(None)  # sent after every output of the cell

            user.listeners.append(collect)
            reply = await user.request(request, timeout)
            await asyncio.wait_for(idle, timeout)
        finally:
            await user.close()
        return str(reply.content.get("status")), "".join(out), reply.content

    async def load_ipymcp(self) -> None:
        await self.run(
            "%load_ext ipymcp\nimport ipymcp._state as _s; assert _s.runtime.wait_ready(60), _s.runtime.state; del _s"
        )

    def audit_lines(self) -> list[dict[str, Any]]:
        path = runtime_dir() / f"kernel-{self.kernel_id}.audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []

    def close(self) -> None:
        try:
            self.server.api("DELETE", f"/api/sessions/{self.session_id}")
        except OSError:
            pass


async def start_cell(user: KernelWebsocket, code: str) -> tuple[Message, asyncio.Future[Message]]:
    """Start a cell on ``user``'s websocket and wait until the kernel runs it; the request and its reply."""
    request = user.message("shell", "execute_request", execute_content(code))
    running: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_message(message: Message) -> None:
        if message.msg_type == "execute_input" and message.parent_id == request.msg_id and not running.done():
            running.set_result(None)

    user.listeners.append(on_message)
    reply = asyncio.ensure_future(user.request(request, 600))
    await asyncio.wait_for(running, 60)
    return request, reply


async def subshells(user: KernelWebsocket) -> list[str]:
    reply = await user.request(user.message("control", "list_subshell_request", {}), 10)
    return sorted(reply.content.get("subshell_id", []))  # the reply's field for the list of ids


async def send_and_wait(ws: KernelWebsocket, message: Message, timeout: float = 30) -> None:
    """Send ``message`` and wait until the kernel has finished with it (its idle status)."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_status(m: Message) -> None:
        idle = m.msg_type == "status" and m.content.get("execution_state") == "idle"
        if idle and m.parent_id == message.msg_id and not done.done():
            done.set_result(None)

    ws.listeners.append(on_status)
    try:
        await ws.send(message)
        await asyncio.wait_for(done, timeout)
    finally:
        ws.listeners.remove(on_status)


async def interrupt(user: KernelWebsocket) -> None:
    await user.request(user.message("control", "interrupt_request", {}), 10)


class RawTunnel:
    """An ``ipymcp.mcp`` comm driven by hand (attacks, fuzzing): any payload in, every answer out."""

    def __init__(self, ws: KernelWebsocket, route: Route, comm_id: str):
        self.ws, self.route, self.comm_id = ws, route, comm_id
        self.answers: list[dict[str, Any]] = []  # the data of every comm_msg/comm_close for this comm
        self.closed: dict[str, Any] | None = None
        self._waiters: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        ws.listeners.append(self._on_message)

    @classmethod
    async def open(cls, notebook: RemoteNotebook) -> RawTunnel:
        ws = await KernelWebsocket(notebook.endpoint, notebook.kernel_id, username="raw").connect()
        info = await ask_kernel_info(ws)
        route = await create_subshell(ws) if subshells_supported(info) else CONTROL
        comm_id = uuid.uuid4().hex
        content = {"comm_id": comm_id, "target_name": TARGET, "data": {"protocol": PROTOCOL}}
        answer = await ask_comm(ws, route.message(ws, "comm_open", content), comm_id, 30)
        assert answer.outcome == "ready", answer
        return cls(ws, route, comm_id)

    def _on_message(self, message: Message) -> None:
        if message.channel != "iopub" or message.content.get("comm_id") != self.comm_id:
            return
        data = message.content.get("data")
        self.answers.append(data if isinstance(data, dict) else {"raw": data})
        if message.msg_type == "comm_close":
            self.closed = data if isinstance(data, dict) else {}
        payload = data.get("jsonrpc") if isinstance(data, dict) else None
        if isinstance(payload, dict) and "id" in payload and ("result" in payload or "error" in payload):
            waiter = self._waiters.pop(json.dumps(payload["id"]), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(payload)

    async def send(self, data: Any, msg_type: str = "ipymcp_msg", comm_id: str | None = None) -> Message:
        content = {"comm_id": comm_id or self.comm_id, "data": data}
        message = self.route.message(self.ws, msg_type, content)
        await self.ws.send(message)
        return message

    async def request(self, payload: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        """Send one JSON-RPC request; its response (result or error)."""
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[json.dumps(payload["id"])] = waiter
        await self.send({"jsonrpc": payload})
        return await asyncio.wait_for(waiter, timeout)

    async def initialize(self) -> None:
        init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}
        reply = await self.request({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": init})
        assert "result" in reply, reply
        await self.send({"jsonrpc": {"jsonrpc": "2.0", "method": "notifications/initialized"}})

    async def close(self) -> None:
        """Close the session once the kernel has handled the close, so the next test counts only
        its own sessions."""
        await send_and_wait(self.ws, self.route.message(self.ws, "comm_close", {"comm_id": self.comm_id, "data": {}}))
        await delete_subshell(self.ws, self.route)
        await self.ws.close()
