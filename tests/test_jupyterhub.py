"""An agent reaches a kernel on a real JupyterHub only through the hub's URL, with a user token
scoped to nothing but that user's server (``access:servers!server=alice/``).

Hub, proxy and single-user server run on 127.0.0.1 (``tests/real_hub.py``; ``make
install-hub-tools`` installs the proxy); the kernel runs ipymcp with no HTTP listener. The agent's
transport is one fixture, ``agent``: ``ipymcp.remote`` (find the notebook's kernel through the
server's REST API, then the tunnel) and ``ipymcp connect --server`` (the command an agent's
client config runs, with the token in ``JUPYTER_TOKEN``). The tests list tools, execute, read while the user's cell sleeps, and check that tokens
the hub refuses are refused with a sentence that names neither them nor any secret. One hub for
the module (it spawns in ~10 s). ``make test`` sets ``IPYMCP_REQUIRE_HUB``: there a missing proxy
fails the test instead of skipping it.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import urllib.error
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import text_of
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from real_hub import HubUserServer, JupyterHub, missing_tools
from remote_notebook import RemoteNotebook, interrupt, start_cell
from test_connect import COMMAND

from ipymcp.remote import Endpoint, ServerAPI, ServerError, TunnelError, connect_kernel
from ipymcp.remote.websocket import KernelConnectionError

USER = "alice"
SCOPE = f"access:servers!server={USER}/"
NOTEBOOK = "analysis.ipynb"

# (user server URL, token, notebook path) -> an initialized MCP client (``list_tools``, ``call_tool``).
Agent = Callable[[str, str, str], AbstractAsyncContextManager[Any]]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Any:
    reason = missing_tools()
    if reason:
        if os.environ.get("IPYMCP_REQUIRE_HUB") or os.environ.get("CI"):
            pytest.fail(f"{reason} (IPYMCP_REQUIRE_HUB or CI is set: the hub test must run here)")
        pytest.skip(reason)
    jupyterhub = JupyterHub(tmp_path_factory.mktemp("hub"), {"IPYMCP_SERVE_HTTP": "0"})  # the tunnel only
    yield jupyterhub
    jupyterhub.stop()


@pytest.fixture(scope="module")
def alice(hub: JupyterHub) -> HubUserServer:
    hub.add_user(USER)
    url = hub.start_server(USER)
    return HubUserServer(hub, USER, url, hub.token(USER, [SCOPE]))


@pytest.fixture(scope="module")
async def notebook(alice: HubUserServer) -> Any:
    nb = RemoteNotebook(alice, NOTEBOOK)  # created with alice's scoped token, through the proxy
    await nb.load_ipymcp()
    await nb.run("precious = {'user': 'data'}")
    yield nb
    nb.close()


@asynccontextmanager
async def library_agent(url: str, token: str, notebook_path: str) -> AsyncIterator[Any]:
    """``ipymcp.remote``: the notebook's kernel from the server's sessions (REST), then the tunnel."""
    endpoint = Endpoint(url, token=token)
    async with ServerAPI(endpoint) as api:
        sessions = await api.sessions()
    kernel_id = next(s["kernel"]["id"] for s in sessions if s["path"] == notebook_path)
    async with connect_kernel(endpoint, kernel_id) as kernel:
        yield kernel.client


class BridgeExited(Exception):
    """``ipymcp connect`` ended before the agent could talk to it: its stderr says why."""


@asynccontextmanager
async def cli_agent(url: str, token: str, notebook_path: str) -> AsyncIterator[Any]:
    """``ipymcp connect --server URL --notebook PATH`` as the agent's stdio server, the token in
    ``JUPYTER_TOKEN``, an empty runtime dir of its own (nothing local to find)."""
    private = tempfile.mkdtemp(prefix="hub-bridge-")
    stderr = Path(private) / "stderr.log"
    environment = {k: v for k, v in os.environ.items() if k not in ("SERVER_URL", "TOKEN", "NOTEBOOK_PATH")}
    environment.update(JUPYTER_RUNTIME_DIR=private, JUPYTER_TOKEN=token)
    arguments = [*COMMAND[1:], "connect", "--server", url, "--notebook", notebook_path]
    params = StdioServerParameters(command=COMMAND[0], args=arguments, env=environment, cwd=private)
    with open(stderr, "w") as errlog:
        async with AsyncExitStack() as stack:
            try:
                client = await stack.enter_async_context(Client(stdio_client(params, errlog=errlog)))
            except Exception as exc:  # the bridge exited (a refused token): what it told the user
                raise BridgeExited(stderr.read_text()) from exc
            yield client


TRANSPORTS: dict[str, Agent] = {"library": library_agent, "cli": cli_agent}


@pytest.fixture(params=sorted(TRANSPORTS))
def agent(request: pytest.FixtureRequest) -> Agent:
    return TRANSPORTS[request.param]


def test_the_token_is_scoped_to_the_users_server_only(hub: JupyterHub, alice: HubUserServer) -> None:
    """The hub made the token with exactly the one scope, and it opens nothing else of the hub."""
    # Expanded by the hub: the scope, plus reading one's own name and groups (every token may identify its owner).
    identify = {f"read:users:name!user={USER}", f"read:users:groups!user={USER}"}
    assert set(hub.call(alice.token, "GET", "/hub/api/user")["scopes"]) - identify == {SCOPE}
    tokens = hub.admin("GET", f"/hub/api/users/{USER}/tokens")["api_tokens"]
    assert [set(t["scopes"]) - identify for t in tokens if t["note"] == "ipymcp test"] == [{SCOPE}]
    # Everything but reaching the server is refused: starting, stopping, listing, more tokens.
    for method, path in [("POST", f"/hub/api/users/{USER}/server"), ("DELETE", f"/hub/api/users/{USER}/server"),
                         ("GET", "/hub/api/users"), ("GET", f"/hub/api/users/{USER}/tokens"),
                         ("POST", f"/hub/api/users/{USER}/tokens")]:  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as refused:
            hub.call(alice.token, method, path, {} if method == "POST" else None)
        assert refused.value.code == 403, (method, path, refused.value.code)
    assert "servers" not in hub.call(alice.token, "GET", f"/hub/api/users/{USER}")  # only the name and groups


async def test_the_agent_works_through_the_hub_with_a_token_scoped_to_the_users_server(
    alice: HubUserServer, notebook: RemoteNotebook, agent: Agent
) -> None:
    assert alice.base.startswith(alice.hub.url + "/user/alice")  # the proxy, not the server's own port
    state = await notebook.run("import ipymcp._state as _s; print(repr(_s.runtime.url), _s.runtime.state)")
    assert state.split() == ["''", "running"]  # no HTTP listener: Jupyter is the only way in

    user = await notebook.user()
    try:
        async with agent(alice.base + "/", alice.token, NOTEBOOK) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert {"execute", "list_variables", "kernel_status"} <= names
            result = await client.call_tool("execute", {"code": "1 + 1"})
            assert not result.is_error and text_of(result).strip() == "2"

            _, reply = await start_cell(user, "import time; time.sleep(60)")
            try:
                seen = [execution_state(alice, notebook.kernel_id)]
                listed = await client.call_tool("list_variables", {})
                seen.append(execution_state(alice, notebook.kernel_id))
                status = await client.call_tool("kernel_status", {})
                seen.append(execution_state(alice, notebook.kernel_id))
                assert not reply.done()  # answered while the user's cell runs
            finally:
                await interrupt(user)
                await reply
            assert not listed.is_error and "precious" in text_of(listed)
            assert status.structured_content["state"] == "busy"
            # The user server loaded ipymcp's server extension: the tunnel's requests leave the
            # kernel's state as the user's tab shows it.
            assert seen == ["busy"] * 3, seen
    finally:
        await user.close()


def execution_state(server: HubUserServer, kernel_id: str) -> str:
    return server.api("GET", f"/api/kernels/{kernel_id}")["execution_state"]


@pytest.fixture(scope="module")
def refused_tokens(hub: JupyterHub) -> dict[str, str]:
    hub.add_user("bob")
    return {
        "a wrong token": "not-a-token-" + "0" * 20,
        "another user's token, scoped to their own server": hub.token("bob", ["access:servers!server=bob/"]),
        "the admin service's token (admin:users, admin:servers, tokens; no access)": hub.service_token,
        "alice's token without access to servers": hub.token(USER, [f"read:users!user={USER}"]),
    }


async def test_tokens_the_hub_refuses_are_refused_with_a_sentence(
    hub: JupyterHub,
    alice: HubUserServer,
    notebook: RemoteNotebook,
    agent: Agent,
    refused_tokens: dict[str, str],
) -> None:
    for label, token in refused_tokens.items():
        with pytest.raises(Exception) as refused:  # noqa: PT011 - each transport raises its own type
            async with agent(alice.base + "/", token, NOTEBOOK):
                pass
        error = str(refused.value)
        assert "refused the token (403)" in error and "JupyterHub" in error, (label, error)
        assert token not in error and hub.service_token not in error and alice.token not in error
    assert (await notebook.run("print(precious)")).strip() == "{'user': 'data'}"  # nothing lost


async def test_the_kernel_websocket_refuses_them_too(
    hub: JupyterHub, alice: HubUserServer, notebook: RemoteNotebook, refused_tokens: dict[str, str]
) -> None:
    """An agent that knows the kernel id and skips REST discovery meets the same refusal."""
    for label, token in refused_tokens.items():
        endpoint = Endpoint(alice.base + "/", token=token)
        with pytest.raises(ServerError):
            async with ServerAPI(endpoint) as api:
                await api.kernel(notebook.kernel_id)
        with pytest.raises((TunnelError, KernelConnectionError)) as tunnel:
            async with connect_kernel(endpoint, notebook.kernel_id):
                pass
        error = str(tunnel.value)
        assert "refused the token (403)" in error and "JupyterHub" in error, (label, error)
        assert token not in error and hub.service_token not in error and alice.token not in error


async def test_when_the_hub_stops_the_users_server_the_agent_is_told_so(
    hub: JupyterHub, alice: HubUserServer, notebook: RemoteNotebook
) -> None:
    """The hub culls or the admin stops alice's server under a connected bridge (last in this
    module: the server stays stopped). The next call answers at once with a sentence saying what
    happened and what to do, naming no token."""
    async with cli_agent(alice.base + "/", alice.token, NOTEBOOK) as client:
        assert text_of(await client.call_tool("execute", {"code": "1 + 1"})).strip() == "2"
        hub.admin("DELETE", f"/hub/api/users/{USER}/server")
        deadline = time.monotonic() + 60
        while hub.admin("GET", f"/hub/api/users/{USER}").get("servers"):
            assert time.monotonic() < deadline, "the hub did not stop the server"
            await asyncio.sleep(0.25)
        started = time.monotonic()
        result = await client.call_tool("execute", {"code": "1 + 1"})
        told, elapsed = text_of(result), time.monotonic() - started
        assert result.is_error and f"The JupyterHub server at {alice.base}/ is not running" in told, told
        assert f"{hub.url}/hub/home" in told and "%load_ext ipymcp" in told, told
        assert "retry in a moment" not in told and "new kernel" not in told, told  # no kernel is coming back
        assert elapsed < 10, f"{elapsed:.1f} s to tell that the server is gone"
        listed = await client.call_tool("list_notebooks", {})
        assert listed.is_error and "is not running" in text_of(listed), text_of(listed)
        for text in (told, text_of(listed)):
            assert alice.token not in text and hub.service_token not in text
