"""Attacks on the Jupyter tunnel's kernel side (``ipymcp/server/tunnel.py``).

Whoever holds the Jupyter token can run code in the kernel directly, so these are not about
keeping them out: they prove the tunnel adds no way around ipymcp's own rules and harms nothing
else in the kernel. The control-channel hooks ipymcp adds (so ipykernel 6 answers while a cell
runs) must never reach a widget's comm; a message for a session the kernel does not have gets a
clear close, not a crash; hostile openings are refused with a sentence. A real jupyter server,
a kernel without an HTTP listener, raw websocket messages.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from remote_notebook import RawTunnel, RemoteNotebook, module_server, send_and_wait

from ipymcp.remote.route import CONTROL, SHELL, TARGET, ask_comm

pytestmark = pytest.mark.compat

# A widget-like comm target in the user's namespace that records what reaches it, and on which thread.
RECORDER = """
import threading
got = []
def _recorder(comm, msg):
    got.append(("open", threading.current_thread().name))
    comm.on_msg(lambda m: got.append((m["content"]["data"].get("n"), threading.current_thread().name)))
get_ipython().kernel.comm_manager.register_target("recorder", _recorder)
"""


server = module_server("tunnel-attacks")


@pytest.fixture(scope="module")
async def notebook(server: Any) -> Any:
    nb = RemoteNotebook(server, "attacks.ipynb")
    await nb.load_ipymcp()
    await nb.run(RECORDER)
    yield nb
    nb.close()


async def test_a_widgets_comm_messages_on_the_control_channel_never_reach_it(notebook: RemoteNotebook) -> None:
    ws = await notebook.user()
    comm_id = uuid.uuid4().hex
    opened = ws.message("shell", "comm_open", {"comm_id": comm_id, "target_name": "recorder", "data": {}})
    await send_and_wait(ws, opened)
    on_control = ws.message("control", "comm_msg", {"comm_id": comm_id, "data": {"n": "control"}})
    await send_and_wait(ws, on_control)
    other_open = ws.message(
        "control", "comm_open", {"comm_id": uuid.uuid4().hex, "target_name": "recorder", "data": {}}
    )
    await send_and_wait(ws, other_open)
    on_shell = ws.message("shell", "comm_msg", {"comm_id": comm_id, "data": {"n": "shell"}})
    await send_and_wait(ws, on_shell)
    await ws.close()
    got = (await notebook.run("print([g[0] for g in got])")).strip()
    # One open (the shell's), one message (the shell's): control delivered nothing to the widget.
    assert got == "['open', 'shell']", got


async def test_a_message_for_a_session_the_kernel_does_not_have_is_closed_back(notebook: RemoteNotebook) -> None:
    raw = await RawTunnel.open(notebook)
    try:
        stranger = uuid.uuid4().hex
        closed: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        def on_message(m: Any) -> None:
            if m.msg_type == "comm_close" and m.content.get("comm_id") == stranger and not closed.done():
                closed.set_result(m.content.get("data") or {})

        raw.ws.listeners.append(on_message)
        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "execute", "arguments": {"code": "pwned = 1"}}}
        await raw.send({"jsonrpc": call}, comm_id=stranger)
        data = await asyncio.wait_for(closed, 30)
        assert "no such MCP session" in data["error"]
        await raw.initialize()  # the real session is untouched
        reply = await raw.request({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        assert reply["result"]["tools"]
    finally:
        await raw.close()
    assert (await notebook.run("print('pwned' in dir())")).strip() == "False"


@pytest.mark.parametrize("data", [{"protocol": 99}, {}, {"protocol": "1"}], ids=["future", "missing", "string"])
async def test_an_opening_with_another_protocol_is_refused_with_a_sentence(
    notebook: RemoteNotebook, data: dict[str, Any]
) -> None:
    ws = await notebook.user()
    comm_id = uuid.uuid4().hex
    route = CONTROL if "6." in await notebook.run("import ipykernel; print(ipykernel.__version__)") else SHELL
    content = {"comm_id": comm_id, "target_name": TARGET, "data": data}
    answer = await ask_comm(ws, route.message(ws, "comm_open", content), comm_id, 30)
    await ws.close()
    assert answer.outcome == "closed"
    assert "tunnel protocol 1" in answer.error and "same ipymcp version" in answer.error
    assert (await notebook.run("import ipymcp._state as s; print(len(s.runtime.tunnel.tunnels))")).strip() == "0"


async def test_unloading_ipymcp_closes_open_tunnels_and_removes_its_handlers(server: Any) -> None:
    nb = RemoteNotebook(server, "unload.ipynb")
    try:
        await nb.load_ipymcp()
        raw = await RawTunnel.open(nb)
        await nb.run("%unload_ext ipymcp")
        deadline = asyncio.get_running_loop().time() + 30
        while raw.closed is None and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        assert raw.closed is not None and "ipymcp was stopped" in raw.closed["error"]
        left = await nb.run(
            "k = get_ipython().kernel\n"
            "print(sorted(t for t in ('ipymcp_msg', 'comm_open', 'comm_msg', 'comm_close') if t in k.control_handlers),"
            " 'ipymcp_msg' in k.shell_handlers, 'ipymcp.mcp' in k.comm_manager.targets)"
        )
        assert left.strip() == "[] False False", left
        await raw.ws.close()
    finally:
        nb.close()


async def test_sessions_beyond_the_cap_are_refused_and_the_open_ones_keep_working(notebook: RemoteNotebook) -> None:
    # c.IPyMCP.max_sessions arrives with the HTTP session cap (issue 11.1); the tunnel's own limit is set here.
    await notebook.run("import ipymcp._state as _s; _s.runtime.tunnel.max_sessions = 2")
    opened = [await RawTunnel.open(notebook), await RawTunnel.open(notebook)]
    try:
        ws = await notebook.user()
        comm_id = uuid.uuid4().hex
        route = opened[0].route
        content = {"comm_id": comm_id, "target_name": TARGET, "data": {"protocol": 1}}
        answer = await ask_comm(ws, route.message(ws, "comm_open", content), comm_id, 30)
        await ws.close()
        assert answer.outcome == "closed" and "Too many open MCP sessions through Jupyter (2" in answer.error
        for raw in opened:
            await raw.initialize()
            assert (await raw.request({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))["result"]["tools"]
    finally:
        for raw in opened:
            await raw.close()
        await notebook.run("_s.runtime.tunnel.max_sessions = 100")


async def test_ipymcp_msg_naming_a_widgets_comm_neither_closes_nor_takes_it_over(notebook: RemoteNotebook) -> None:
    sessions = await open_sessions(notebook)
    ws = await notebook.user()
    widget = uuid.uuid4().hex
    closes: list[str] = []
    ws.listeners.append(lambda m: closes.append(m.content.get("comm_id")) if m.msg_type == "comm_close" else None)
    opened = ws.message("shell", "comm_open", {"comm_id": widget, "target_name": "recorder", "data": {}})
    await send_and_wait(ws, opened)
    await notebook.run("got.clear()")
    hostile = [
        {"comm_id": widget, "op": "open", "target_name": TARGET, "data": {"protocol": 1}},  # take over its id
        {"comm_id": widget, "data": {"jsonrpc": {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}}},
        {"comm_id": widget, "op": "close"},
    ]
    for content in hostile:
        message = ws.message("shell", "ipymcp_msg", content)
        await send_and_wait(ws, message)
    still_there = ws.message("shell", "comm_msg", {"comm_id": widget, "data": {"n": "after"}})
    await send_and_wait(ws, still_there)
    await ws.close()
    assert widget not in closes  # a comm_close on IOPub would close the widget in every tab
    assert (await notebook.run("print([g[0] for g in got])")).strip() == "['after']"
    assert await open_sessions(notebook) == sessions


@pytest.mark.parametrize("comm_id", [7, "", "x" * 65, None], ids=["int", "empty", "long", "none"])
async def test_an_ipymcp_msg_opening_without_a_usable_comm_id_is_refused_with_a_sentence(
    notebook: RemoteNotebook, comm_id: Any
) -> None:
    sessions = await open_sessions(notebook)
    ws = await notebook.user()
    content = {"comm_id": comm_id, "op": "open", "target_name": TARGET, "data": {"protocol": 1}}
    route = CONTROL if "6." in await notebook.run("import ipykernel; print(ipykernel.__version__)") else SHELL
    answer = await ask_comm(ws, route.message(ws, "ipymcp_msg", content), str(comm_id)[:64], 30)
    await ws.close()
    assert answer.outcome == "closed" and "a string of 1 to 64 characters" in answer.error
    assert await open_sessions(notebook) == sessions


async def open_sessions(notebook: RemoteNotebook) -> int:
    return int(await notebook.run("import ipymcp._state as s; print(len(s.runtime.tunnel.tunnels))"))
