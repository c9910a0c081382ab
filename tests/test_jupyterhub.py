"""An agent reaches a kernel on a real JupyterHub only through the hub's URL, with a user token
scoped to nothing but that user's server (``access:servers!server=alice/``).

Hub, proxy and single-user server run on 127.0.0.1 (``tests/real_hub.py``; ``make
install-hub-tools`` installs them); the kernel runs ipymcp with no HTTP listener. The agent uses
``ipymcp.remote`` (``agent_session`` below is the one place to switch to ``ipymcp connect
--server`` once that command exists): finds the notebook's kernel through the server's REST API,
lists tools, executes, and reads while the user's cell sleeps. Tokens the hub refuses are refused
with a sentence that names neither them nor any secret. One hub for the module (it spawns in ~7 s).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from conftest import text_of
from real_hub import HubUserServer, JupyterHub, missing_tools
from remote_notebook import RemoteNotebook, interrupt, start_cell

from ipymcp.remote import Endpoint, RemoteKernel, ServerAPI, ServerError, TunnelError, connect_kernel
from ipymcp.remote.websocket import KernelConnectionError

USER = "alice"
SCOPE = f"access:servers!server={USER}/"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Any:
    reason = missing_tools()
    if reason:
        pytest.skip(reason)
    jupyterhub = JupyterHub(tmp_path_factory.mktemp("hub"))
    yield jupyterhub
    jupyterhub.stop()


@pytest.fixture(scope="module")
def alice(hub: JupyterHub) -> HubUserServer:
    hub.add_user(USER)
    url = hub.start_server(USER)
    return HubUserServer(hub, USER, url, hub.token(USER, [SCOPE]))


@pytest.fixture(scope="module")
async def notebook(alice: HubUserServer) -> Any:
    nb = RemoteNotebook(alice, "analysis.ipynb")  # created with alice's scoped token, through the proxy
    await nb.load_ipymcp()
    await nb.run("precious = {'user': 'data'}")
    yield nb
    nb.close()


@asynccontextmanager
async def agent_session(url: str, token: str, notebook_path: str) -> AsyncIterator[RemoteKernel]:
    """What an agent does: find the notebook's kernel over REST, then the tunnel to it."""
    endpoint = Endpoint(url, token=token)
    async with ServerAPI(endpoint) as api:
        sessions = await api.sessions()
    kernel_id = next(s["kernel"]["id"] for s in sessions if s["path"] == notebook_path)
    async with connect_kernel(endpoint, kernel_id) as kernel:
        yield kernel


async def test_the_agent_works_through_the_hub_with_a_token_scoped_to_the_users_server(
    alice: HubUserServer, notebook: RemoteNotebook
) -> None:
    assert alice.base.startswith(alice.hub.url + "/user/alice")  # the proxy, not the server's own port
    state = await notebook.run("import ipymcp._state as _s; print(repr(_s.runtime.url), _s.runtime.state)")
    assert state.split() == ["''", "running"]  # no HTTP listener: Jupyter is the only way in

    user = await notebook.user()
    async with agent_session(alice.base + "/", alice.token, "analysis.ipynb") as kernel:
        names = {tool.name for tool in (await kernel.client.list_tools()).tools}
        assert {"execute", "list_variables", "kernel_status"} <= names
        result = await kernel.client.call_tool("execute", {"code": "1 + 1"})
        assert not result.is_error and text_of(result).strip() == "2"

        _, reply = await start_cell(user, "import time; time.sleep(60)")
        try:
            listed = await kernel.client.call_tool("list_variables", {})
            status = await kernel.client.call_tool("kernel_status", {})
            assert not reply.done()  # answered while the user's cell runs
        finally:
            await interrupt(user)
            await reply
        assert not listed.is_error and "precious" in text_of(listed)
        assert status.structured_content["state"] == "busy"
        assert kernel.route.answers_while_busy, kernel.route.describe()
    await user.close()


def refused_tokens(hub: JupyterHub) -> dict[str, str]:
    hub.add_user("bob")
    return {
        "a wrong token": "not-a-token-" + "0" * 20,
        "another user's token, scoped to their own server": hub.token("bob", ["access:servers!server=bob/"]),
        "the admin service's token (admin:users, admin:servers, tokens; no access)": hub.service_token,
        "alice's token without access to servers": hub.token(USER, [f"read:users!user={USER}"]),
    }


async def test_tokens_the_hub_refuses_are_refused_with_a_sentence(
    hub: JupyterHub, alice: HubUserServer, notebook: RemoteNotebook
) -> None:
    for label, token in refused_tokens(hub).items():
        endpoint = Endpoint(alice.base + "/", token=token)
        with pytest.raises(ServerError) as rest:
            async with ServerAPI(endpoint) as api:
                await api.sessions()
        with pytest.raises((TunnelError, KernelConnectionError)) as tunnel:
            async with connect_kernel(endpoint, notebook.kernel_id):
                pass
        for error in (str(rest.value), str(tunnel.value)):
            assert "refused the token (403)" in error and "JupyterHub" in error, (label, error)
            assert token not in error and hub.service_token not in error and alice.token not in error
