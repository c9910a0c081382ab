"""MCP through the kernel's own Jupyter websocket, where nothing else can work.

A real ``jupyter server`` on loopback; the notebook's kernel runs ipymcp with no HTTP listener
(``IPYMCP_SERVE_HTTP=0``) and writes no runtime file, so every call below goes client →
jupyter_server → kernel websocket → ``ipymcp.mcp`` comm → the kernel's MCP server and back.
Another websocket plays the user's browser tab. Marked ``compat``: ipykernel 7 answers through a
subshell of the tunnel's own, 6.29 and 6.17 (Colab) through the control channel.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from conftest import KernelHarness, runtime_dir, text_of
from mcp.shared.exceptions import MCPError
from remote_notebook import RemoteNotebook, interrupt, module_server, start_cell, subshells

from ipymcp.remote import ServerAPI, TunnelOptions, connect_kernel, probe_kernel
from ipymcp.remote.wire import Message

server = module_server("tunnel-server")


@pytest.fixture(scope="module")
async def notebook(server: Any) -> Any:
    nb = RemoteNotebook(server, "tunnel.ipynb")
    await nb.load_ipymcp()
    await nb.run("precious = {'user': 'data'}")
    yield nb
    nb.close()


async def kernel_version(nb: RemoteNotebook) -> tuple[int, ...]:
    text = await nb.run("import ipykernel; print(ipykernel.__version__)")
    return tuple(int(p) for p in text.strip().split(".")[:2])


@pytest.mark.compat
async def test_tools_and_execute_reach_a_kernel_that_has_no_http_listener(notebook: RemoteNotebook) -> None:
    state = await notebook.run(
        "import ipymcp._state as _s; print(type(_s.runtime.server).__name__, repr(_s.runtime.url), _s.runtime.state)"
    )
    assert state.split() == ["TunnelOnlyServer", "''", "running"]
    assert not (runtime_dir() / f"kernel-{notebook.kernel_id}.json").exists()  # nothing for `ipymcp connect`

    async with connect_kernel(notebook.endpoint, notebook.kernel_id) as kernel:
        names = {tool.name for tool in (await kernel.client.list_tools()).tools}
        assert {"execute", "list_variables", "inspect_variable", "kernel_status"} <= names
        result = await kernel.client.call_tool("execute", {"code": "1 + 1"})
        assert not result.is_error and text_of(result).strip() == "2"
        result = await kernel.client.call_tool("execute", {"code": "precious['user']"})
        assert text_of(result).strip() == "'data'"  # the user's live namespace
        assert kernel.route.answers_while_busy


@pytest.mark.compat
async def test_list_variables_answers_within_a_second_while_another_clients_cell_sleeps(
    notebook: RemoteNotebook,
) -> None:
    user = await notebook.user()
    async with connect_kernel(notebook.endpoint, notebook.kernel_id) as kernel:
        tunnel_ws = kernel.transport.ws
        assert tunnel_ws is not None
        parents: list[dict[str, Any]] = []
        tunnel_ws.listeners.append(
            lambda m: parents.append(m.parent_header)
            if m.msg_type == "comm_msg" and m.content.get("comm_id") == kernel.transport.comm_id
            else None
        )
        await kernel.client.call_tool("kernel_status", {})  # the client's first-call costs (tools/list) are not the kernel's
        cell, reply = await start_cell(user, "import time; time.sleep(60)")
        try:
            started = time.perf_counter()
            result = await kernel.client.call_tool("list_variables", {})
            elapsed = time.perf_counter() - started
            status = await kernel.client.call_tool("kernel_status", {})
        finally:
            await interrupt(user)
            await reply
        assert not result.is_error and "precious" in text_of(result)
        assert elapsed < 1.0, f"list_variables took {elapsed:.2f} s through {kernel.route.describe()}"
        assert status.structured_content["state"] == "busy"  # it was answered while the cell ran
    await user.close()
    # Every reply names the tunnel's own request as its parent, never the user's running cell.
    assert parents and all(p.get("session") == tunnel_ws.session_id for p in parents)
    assert all(p.get("msg_id") != cell.msg_id for p in parents)


@pytest.mark.compat
async def test_a_dropped_websocket_is_reopened_and_no_subshell_is_left_behind(notebook: RemoteNotebook) -> None:
    user = await notebook.user()
    on_subshells = await kernel_version(notebook) >= (7, 0)
    before = await subshells(user) if on_subshells else []
    async with connect_kernel(notebook.endpoint, notebook.kernel_id) as kernel:
        transport = kernel.transport
        first_route = kernel.route
        slow = asyncio.ensure_future(kernel.client.call_tool("execute", {"code": "import time; time.sleep(3); 'slow'"}))
        while transport.in_flight == 0:
            await asyncio.sleep(0.01)
        assert transport.ws is not None
        transport.ws.abort()  # the network drops the connection

        with pytest.raises(MCPError, match="may or may not have run"):
            await slow
        deadline = time.monotonic() + 30
        while transport.reconnects == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert transport.reconnects == 1, transport.ended
        result = await kernel.client.call_tool("execute", {"code": "precious['user']"})
        assert text_of(result).strip() == "'data'"  # the same MCP session goes on
        if on_subshells:
            assert kernel.route.subshell_id != first_route.subshell_id
            assert await subshells(user) == sorted([*before, kernel.route.subshell_id])  # the lost one is gone
    if on_subshells:
        assert await subshells(user) == before  # and the tunnel's own on close
    await user.close()


@pytest.mark.compat
async def test_the_level_refusal_and_the_audit_line_come_through_the_tunnel(notebook: RemoteNotebook) -> None:
    await notebook.run("%mcp permissions read")
    try:
        async with connect_kernel(notebook.endpoint, notebook.kernel_id) as kernel:
            names = {tool.name for tool in (await kernel.client.list_tools()).tools}
            result = await kernel.client.call_tool("execute", {"code": "precious.clear()"})
    finally:
        await notebook.run("%mcp permissions execute")
    assert "execute" not in names and "list_variables" in names
    assert result.is_error and "read" in text_of(result)
    assert (await notebook.run("print(precious)")).strip() == "{'user': 'data'}"  # not cleared
    line = next(entry for entry in reversed(notebook.audit_lines()) if entry.get("tool") == "execute")
    assert line["outcome"] == "error" and line["approval"] == "-"
    assert line["client"]["via"].startswith("jupyter-server (")
    assert kernel.transport.comm_id[:8] in line["client"]["via"]


@pytest.mark.compat
async def test_probe_tells_a_kernel_without_ipymcp_from_one_with_it(server: Any, notebook: RemoteNotebook) -> None:
    plain = RemoteNotebook(server, "plain.ipynb")
    try:
        await plain.run("x = 1")  # started, ipymcp not loaded
        probe = await probe_kernel(plain.endpoint, plain.kernel_id)
        assert not probe.loaded and "ipymcp is not loaded" in probe.detail and "%load_ext ipymcp" in probe.detail
        assert "x" in await plain.run("print(dir())")  # the kernel is unharmed
    finally:
        plain.close()
    probe = await probe_kernel(notebook.endpoint, notebook.kernel_id)
    assert probe.loaded and probe.answers_while_busy, probe


async def test_the_jupyter_token_is_never_sent_into_the_kernel_nor_logged(
    notebook: RemoteNotebook, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ipymcp.remote import websocket

    sent: list[Message] = []
    real_send = websocket.KernelWebsocket.send

    async def recording_send(self: Any, message: Message) -> None:
        sent.append(message)
        await real_send(self, message)

    monkeypatch.setattr(websocket.KernelWebsocket, "send", recording_send)
    caplog.set_level("DEBUG")
    async with connect_kernel(notebook.endpoint, notebook.kernel_id) as kernel:
        await kernel.client.call_tool("kernel_status", {})
        assert notebook.server.token not in repr(kernel.transport.endpoint)
    async with ServerAPI(notebook.endpoint) as api:
        assert any(s["kernel"]["id"] == notebook.kernel_id for s in await api.sessions())
    token = notebook.server.token
    assert sent and not any(token in json.dumps(m.__dict__, default=str) for m in sent)
    assert token not in caplog.text


async def test_a_message_over_the_size_limit_is_refused_and_the_session_goes_on(notebook: RemoteNotebook) -> None:
    async with connect_kernel(notebook.endpoint, notebook.kernel_id) as kernel:
        with pytest.raises(MCPError, match="Message too large"):
            await kernel.client.call_tool("inspect_variable", {"name": "x" * 5_000_000})
        result = await kernel.client.call_tool("inspect_variable", {"name": "precious"})
        assert not result.is_error


async def test_the_legacy_framing_and_the_comm_msg_type_work_too(notebook: RemoteNotebook) -> None:
    options = TunnelOptions(framing="legacy", message_type="comm_msg")
    async with connect_kernel(notebook.endpoint, notebook.kernel_id, options) as kernel:
        assert kernel.transport.ws is not None and kernel.transport.ws.subprotocol is None
        result = await kernel.client.call_tool("execute", {"code": "6 * 7"})
        assert text_of(result).strip() == "42"


def test_serve_http_false_beside_a_port_is_an_error_that_says_so() -> None:
    harness = KernelHarness(env={"IPYMCP_SERVE_HTTP": "0", "IPYMCP_PORT": "45678"})
    try:
        failed = harness.run("%load_ext ipymcp", allow_error=True)
        error = "".join(
            m["content"].get("evalue", "") for m in failed["outputs"] if m["msg_type"] == "error"
        ) or json.dumps(failed["reply"]["content"])
        assert "serve_http" in error and "port" in error, error
        assert harness.run("import ipymcp._state as s; print(s.runtime)")["stdout"].strip() == "None"
    finally:
        harness.shutdown()


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_level_change_tells_tunnel_clients_the_tool_list_changed(notebook: RemoteNotebook, mode: str) -> None:
    from mcp import types

    seen: list[Any] = []

    async def on_message(message: Any) -> None:
        seen.append(message)

    async with connect_kernel(notebook.endpoint, notebook.kernel_id, mode=mode, message_handler=on_message) as kernel:
        assert "execute" in {tool.name for tool in (await kernel.client.list_tools()).tools}
        try:
            if mode == "legacy":
                await notebook.run("%mcp permissions read")
                deadline = time.monotonic() + 10
                while not any(isinstance(m, types.ToolListChangedNotification) for m in seen):
                    assert time.monotonic() < deadline, seen
                    await asyncio.sleep(0.05)
            else:
                async with kernel.client.listen(tools_list_changed=True) as subscription:
                    await notebook.run("%mcp permissions read")
                    await asyncio.wait_for(subscription.__anext__(), 10)
            names = {tool.name for tool in (await kernel.client.list_tools(cache_mode="bypass")).tools}
        finally:
            await notebook.run("%mcp permissions execute")
    assert "execute" not in names and "list_variables" in names


async def test_a_session_the_kernel_ends_fails_later_calls_with_the_reason(notebook: RemoteNotebook) -> None:
    async with connect_kernel(notebook.endpoint, notebook.kernel_id) as kernel:
        assert not (await kernel.client.call_tool("kernel_status", {})).is_error
        await notebook.run("import time, ipymcp._state as _s; _s.runtime.tunnel.expire_idle(time.monotonic() + 10**6)")
        with pytest.raises(MCPError, match=r"idle for more than 600 s \(c.IPyMCP.session_idle_timeout\).*did not run"):
            await kernel.client.call_tool("kernel_status", {})
        assert "idle" in kernel.transport.ended
    async with connect_kernel(notebook.endpoint, notebook.kernel_id) as kernel:  # a new session works
        assert not (await kernel.client.call_tool("kernel_status", {})).is_error


async def test_a_kernel_restart_ends_the_session_with_a_sentence(server: Any) -> None:
    nb = RemoteNotebook(server, "restarted.ipynb")
    try:
        await nb.load_ipymcp()
        async with connect_kernel(nb.endpoint, nb.kernel_id) as kernel:
            assert not (await kernel.client.call_tool("kernel_status", {})).is_error
            nb.server.api("POST", f"/api/kernels/{nb.kernel_id}/restart")
            deadline = time.monotonic() + 30
            while not kernel.transport.ended and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            # ipymcp closes its tunnels at the shutdown request; the server's "restarting" comes after.
            with pytest.raises(MCPError, match=r"(ipymcp was stopped in the kernel .*a restart|the kernel is restarting).*did not run"):
                await kernel.client.call_tool("kernel_status", {})
    finally:
        nb.close()


async def test_the_main_shell_route_works_and_says_that_calls_wait_behind_the_users_cell(
    notebook: RemoteNotebook,
) -> None:
    async with connect_kernel(notebook.endpoint, notebook.kernel_id, TunnelOptions(route="shell")) as kernel:
        assert not kernel.route.answers_while_busy
        assert "waits until the user's running cell has finished" in kernel.route.describe()
        assert text_of(await kernel.client.call_tool("execute", {"code": "precious['user']"})).strip() == "'data'"


@pytest.mark.compat
async def test_without_subshells_or_control_handling_the_tunnel_falls_back_to_the_main_shell(
    notebook: RemoteNotebook,
) -> None:
    if await kernel_version(notebook) >= (7, 0):
        pytest.skip("ipykernel >= 7 always offers a subshell; the fallback is for older kernels")
    # An ipymcp that does not handle its comms on control (as an older version would not).
    await notebook.run(
        "import ipymcp._state as _s; _k = get_ipython().kernel\n"
        "for _t in ('comm_open', 'comm_msg', 'comm_close', 'ipymcp_msg'): _k.control_handlers.pop(_t, None)"
    )
    try:
        async with connect_kernel(notebook.endpoint, notebook.kernel_id) as kernel:
            assert kernel.route.kind == "shell" and not kernel.route.answers_while_busy
            assert not (await kernel.client.call_tool("kernel_status", {})).is_error
    finally:
        await notebook.run("_s.runtime.tunnel.install()")  # puts the control handlers back
