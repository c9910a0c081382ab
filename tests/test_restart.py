"""restart_kernel and reset_namespace, under a real Jupyter Server without the notebook extension.

The server is ``jupyter server`` on a free port with its own token, in the test session's private
Jupyter dirs; the notebook's kernel is started through its REST API (``POST /api/sessions``) and
ipymcp is loaded by a client on the kernel's connection file, as a frontend would. The restart
goes through the server's REST API; ipymcp comes back by itself in the new kernel.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest
from conftest import (
    KERNEL_NAME,
    KernelHarness,
    answered_by_a_new_kernel,
    mcp_client,
    runtime_dir,
    text_of,
    wait_until_ready,
)
from real_jupyter import JupyterServer
from test_connect import connect

from ipymcp.server.discovery import pid_alive


class NotebookKernel:
    """A notebook session of the server; ``kc`` plays the user's frontend on its connection file."""

    def __init__(self, server: JupyterServer, name: str):
        from jupyter_client import BlockingKernelClient

        (server.root / name).write_text(
            json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
        )
        self.server = server
        session = server.api(
            "POST", "/api/sessions", {"path": name, "type": "notebook", "kernel": {"name": KERNEL_NAME}}
        )
        self.session_id, self.kernel_id = session["id"], session["kernel"]["id"]
        connection_file = Path(os.environ["JUPYTER_RUNTIME_DIR"]) / f"kernel-{self.kernel_id}.json"
        self.kc = BlockingKernelClient(connection_file=str(connection_file))
        self.kc.load_connection_file()
        self.kc.start_channels()
        wait_until_ready(self.kc)

    def run(self, code: str) -> str:
        out: list[str] = []
        reply = self.kc.execute_interactive(
            code,
            timeout=60,
            output_hook=lambda m: (
                out.append(m["content"].get("text", "")) if m["msg_type"] == "stream" else None
            ),
        )
        assert reply["content"]["status"] == "ok", reply["content"]
        return "".join(out)

    def load_ipymcp(self) -> dict[str, Any]:
        self.run("%load_ext ipymcp")
        self.run("import ipymcp._state as _s; assert _s.runtime.wait_ready(30); del _s")
        return self.info()

    def info(self) -> dict[str, Any]:
        return json.loads((runtime_dir() / f"kernel-{self.kernel_id}.json").read_text())

    def close(self) -> None:
        self.kc.stop_channels()
        try:
            self.server.api("DELETE", f"/api/sessions/{self.session_id}")
        except OSError:
            pass


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("jupyter-server") / "root"
    root.mkdir()
    jupyter = JupyterServer(root)
    yield jupyter
    jupyter.stop()


@pytest.fixture
def notebook(server: JupyterServer, request: pytest.FixtureRequest) -> Any:
    nb = NotebookKernel(server, f"{request.node.name[:40]}.ipynb")
    yield nb
    nb.close()


@pytest.mark.compat
async def test_restart_kernel_goes_through_the_jupyter_server_and_ipymcp_comes_back_at_the_same_url(
    server: JupyterServer, notebook: NotebookKernel
) -> None:
    info = notebook.load_ipymcp()
    notebook.run("before_restart = 41")
    async with mcp_client(info["url"], info["token"]) as client:
        result = await client.call_tool("restart_kernel", {})
    assert not result.is_error, text_of(result)
    assert "Jupyter Server API" in text_of(result) and "variables" in text_of(result)
    assert server.token not in json.dumps(result.model_dump(mode="json"))  # the server's token stays private
    assert result.meta["restarting"] is True

    status = await answered_by_a_new_kernel(info["url"], info["token"], info["pid"])
    assert status["kernel_id"] == notebook.kernel_id
    assert not pid_alive(info["pid"])
    after = notebook.info()
    assert (after["url"], after["token"]) == (info["url"], info["token"])
    async with mcp_client(info["url"], info["token"]) as client:
        gone = await client.call_tool("execute", {"code": "'before_restart' in dir()"})
        assert text_of(gone).strip() == "False"
        came_back = await client.call_tool(
            "execute", {"code": "import ipymcp._state as s; s.runtime.came_back['by']"}
        )
        assert text_of(came_back).strip() == "'agent'"
    # The port and token are remembered outside the notebook, owner-only.
    memory = list(runtime_dir().glob(f"remember-kernel-{notebook.kernel_id}.json"))
    assert memory and stat.S_IMODE(memory[0].stat().st_mode) == 0o600
    assert info["token"] not in "".join(p.read_text() for p in server.root.glob("*.ipynb"))


async def test_a_restart_by_the_user_brings_ipymcp_back_and_a_rotated_token_stays_rotated(
    server: JupyterServer, notebook: NotebookKernel
) -> None:
    info = notebook.load_ipymcp()
    notebook.run("%mcp token --rotate")
    rotated = notebook.info()["token"]
    assert rotated != info["token"]
    server.api("POST", f"/api/kernels/{notebook.kernel_id}/restart")  # the user's Restart button
    status = await answered_by_a_new_kernel(info["url"], rotated, info["pid"])
    assert status["kernel_id"] == notebook.kernel_id
    assert notebook.info()["token"] == rotated
    refused = False  # the old token does not come back with the restart
    try:
        async with mcp_client(info["url"], info["token"]) as client:
            await client.call_tool("kernel_status", {})
    except Exception:  # noqa: BLE001
        refused = True
    assert refused


async def test_a_taken_port_gives_a_new_port_and_token_after_the_restart(
    server: JupyterServer, notebook: NotebookKernel
) -> None:
    info = notebook.load_ipymcp()
    port = int(info["url"].rsplit(":", 1)[1].split("/")[0])
    server.api("POST", f"/api/kernels/{notebook.kernel_id}/restart")
    squatter = socket.socket()
    deadline = time.monotonic() + 30
    while True:  # take the port the moment the old server lets go of it
        try:
            squatter.bind(("127.0.0.1", port))
            squatter.listen()
            break
        except OSError:
            if time.monotonic() > deadline:
                pytest.skip("the new server took the port first")
            time.sleep(0.01)
    try:
        with anyio.fail_after(60):
            while True:
                try:
                    after = notebook.info()
                    if after["pid"] != info["pid"]:
                        break
                except (OSError, ValueError):
                    pass
                await anyio.sleep(0.3)
        assert after["url"] != info["url"] and after["token"] != info["token"]
        async with mcp_client(after["url"], after["token"]) as client:
            assert not (await client.call_tool("kernel_status", {})).is_error
    finally:
        squatter.close()


@pytest.mark.compat
async def test_an_ipymcp_connect_session_gets_restart_kernel_answered_once_ipymcp_is_back(
    server: JupyterServer, notebook: NotebookKernel
) -> None:
    info = notebook.load_ipymcp()
    async with connect("--kernel-id", notebook.kernel_id) as bridge:
        assert await bridge.run("x = 5; x") == "5"
        with anyio.fail_after(90):
            result = await bridge.client.call_tool("restart_kernel", {})
        assert not result.is_error, text_of(result)
        assert "restarted and ipymcp is back" in text_of(result)
        assert notebook.info()["pid"] != info["pid"]
        # The answer matches restart_kernel's output schema (the SDK client checked it too).
        schema = next(t.output_schema for t in (await bridge.client.list_tools()).tools if t.name == "restart_kernel")
        jsonschema.validate(result.structured_content, schema)
        assert result.structured_content["state"] == "back"
        assert result.structured_content["pid"] == notebook.info()["pid"]
        # No error at all afterwards: the restart was asked for.
        assert await bridge.run("'x' in dir()") == "False"
        assert await bridge.run("6 * 7") == "42"


@pytest.mark.compat
async def test_reset_namespace_clears_the_user_variables_and_keeps_ipymcp(
    fresh_kernel: KernelHarness,
) -> None:
    kernel = fresh_kernel
    kernel.load_ipymcp("import math\nalpha = 1\nbeta = [1, 2]\ngamma = 'kept'")
    kernel.run("alpha + 1")  # Out[...] and _
    async with kernel.client() as client:
        result = await client.call_tool("reset_namespace", {"keep": ["gamma", "nope"]})
        assert not result.is_error, text_of(result)
        outcome = json.loads(text_of(result))
        assert outcome["kept"] == ["gamma"] and outcome["not_found"] == ["nope"] and outcome["removed"] >= 3
        listed = json.loads(text_of(await client.call_tool("list_variables", {})))
        names = {row["name"] for row in listed["variables"]}
        assert names == {"gamma"}
        ran = await client.call_tool(
            "execute", {"code": "print(gamma, 'alpha' in dir(), 'math' in dir(), len(Out))"}
        )
        assert text_of(ran).strip() == "kept False False 0"
    assert kernel.run("print(gamma)")["stdout"].strip() == "kept"  # the user's next cell works too


async def test_restart_without_a_frontend_or_server_says_why_and_offers_reset_namespace(
    fresh_kernel: KernelHarness,
) -> None:
    kernel = fresh_kernel
    kernel.load_ipymcp("keep_me = 1")
    async with kernel.client() as client:
        result = await client.call_tool("restart_kernel", {})
        assert result.is_error and "not possible" in text_of(result) and "reset_namespace" in text_of(result)
        assert text_of(await client.call_tool("execute", {"code": "keep_me"})).strip() == "1"
