"""ipymcp's Jupyter server extension (``ipymcp/serverext.py``), in real Jupyter servers.

It is enabled by the package's own ``jupyter-config`` file (installed with ``pip install -e .`` in
this environment: no test flag turns it on). While the user's cell runs, an agent that connects,
calls tools and leaves through the tunnel leaves the server's REST ``execution_state`` busy (the
browser suite checks JupyterLab's indicator); its calls still count as activity for idle culling;
kernel websockets get ``TCP_NODELAY`` unless the user configured a connection class of their own,
which is left in place with a log line.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from jupyter_server.serverapp import ServerApp
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from real_jupyter import JupyterServer
from remote_notebook import RemoteNotebook, interrupt, start_cell, tunnel_only_environment
from serverext_probe import UserConnection

from ipymcp.remote import connect_kernel
from ipymcp.serverext import NoDelayKernelWebsocketConnection, use_nodelay_connections

TESTS = Path(__file__).resolve().parent
PROBE = ("--ServerApp.jpserver_extensions=serverext_probe=True",)


def probed_server(root: Path, *extra_args: str) -> JupyterServer:
    """A jupyter server with the probe extension (tests/ on its path) and tunnel-only kernels."""
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), path) if p)
    try:
        with tunnel_only_environment():
            return JupyterServer(root, extra_args=(*PROBE, *extra_args))
    finally:
        os.environ.pop("PYTHONPATH") if path is None else os.environ.__setitem__("PYTHONPATH", path)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("serverext") / "root"
    root.mkdir()
    jupyter = probed_server(root)
    yield jupyter
    jupyter.stop()


@pytest.fixture(scope="module")
async def notebook(server: JupyterServer) -> Any:
    nb = RemoteNotebook(server, "serverext.ipynb")
    await nb.load_ipymcp()
    yield nb
    nb.close()


def execution_state(server: JupyterServer, kernel_id: str) -> str:
    return server.api("GET", f"/api/kernels/{kernel_id}")["execution_state"]


@pytest.mark.compat
async def test_rest_execution_state_stays_busy_while_an_agent_connects_calls_and_leaves(
    server: JupyterServer, notebook: RemoteNotebook
) -> None:
    user = await notebook.user()
    cell, reply = await start_cell(user, "import time; time.sleep(60)")
    try:
        seen = [execution_state(server, notebook.kernel_id)]
        async with connect_kernel(notebook.endpoint, notebook.kernel_id) as kernel:
            seen.append(execution_state(server, notebook.kernel_id))
            for _ in range(5):
                result = await kernel.client.call_tool("list_variables", {})
                assert not result.is_error
                seen.append(execution_state(server, notebook.kernel_id))
        seen.append(execution_state(server, notebook.kernel_id))
    finally:
        await interrupt(user)
        await reply
        await user.close()
    assert seen == ["busy"] * len(seen), seen


@pytest.mark.compat
async def test_the_agents_calls_still_count_as_kernel_activity(server: JupyterServer, notebook: RemoteNotebook) -> None:
    async with connect_kernel(notebook.endpoint, notebook.kernel_id) as kernel:
        before = server.api("GET", f"/api/kernels/{notebook.kernel_id}")["last_activity"]
        await kernel.client.call_tool("kernel_status", {})
        after = server.api("GET", f"/api/kernels/{notebook.kernel_id}")["last_activity"]
    # An idle culler must not stop a kernel an agent is working in (the replies are tracked).
    assert dt.datetime.fromisoformat(after) > dt.datetime.fromisoformat(before)
    assert execution_state(server, notebook.kernel_id) == "idle"


async def test_kernel_websockets_get_tcp_nodelay(server: JupyterServer, notebook: RemoteNotebook) -> None:
    async with connect_kernel(notebook.endpoint, notebook.kernel_id):
        probe = server.api("GET", "/ipymcp-probe")
    assert probe["connection_class"] == "NoDelayKernelWebsocketConnection"
    assert probe["sockets"] and all(s["nodelay"] for s in probe["sockets"]), probe


async def test_a_connection_class_the_user_configured_is_left_in_place_and_the_log_says_so(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    jupyter = probed_server(root, "--ServerApp.kernel_websocket_connection_class=serverext_probe.UserConnection")
    try:
        probe = jupyter.api("GET", "/ipymcp-probe")
        log = (root.parent / "jupyter-server.log").read_text()
    finally:
        jupyter.stop()
    assert probe["connection_class"] == "UserConnection"
    assert "kernel_websocket_connection_class is serverext_probe.UserConnection, so ipymcp leaves it" in log
    assert "NoDelayKernelWebsocketConnection" in log  # how to have both


@pytest.mark.parametrize(
    ("configured", "expected", "warns"),
    [
        (None, NoDelayKernelWebsocketConnection, False),
        (ZMQChannelsWebsocketConnection, NoDelayKernelWebsocketConnection, False),
        (UserConnection, UserConnection, True),
        (type("Theirs", (NoDelayKernelWebsocketConnection,), {}), "same", False),
    ],
    ids=["default", "default-by-name", "users-own", "derived-from-ours"],
)
def test_the_connection_class_choice(configured: Any, expected: Any, warns: bool, caplog: Any) -> None:
    app = ServerApp()
    app.init_configurables()  # what the server has done when it loads extensions (the gateway settings)
    if configured is not None:
        app.kernel_websocket_connection_class = configured
    log = logging.getLogger("test-serverext")
    with caplog.at_level(logging.INFO, logger="test-serverext"):
        use_nodelay_connections(app, log)
    assert app.kernel_websocket_connection_class is (configured if expected == "same" else expected)
    assert any(r.levelno == logging.WARNING for r in caplog.records) is warns


def test_the_installed_config_enables_the_extension() -> None:
    from jupyter_core.paths import jupyter_config_path
    from jupyter_server.extension.config import ExtensionConfigManager

    enabled = ExtensionConfigManager(read_config_path=jupyter_config_path()).get_jpserver_extensions()
    assert enabled.get("ipymcp.serverext") is True, json.dumps(enabled)
