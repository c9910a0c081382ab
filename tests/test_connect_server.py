"""``ipymcp connect --server``: the real bridge subprocess, the real SDK stdio client, a real
``jupyter server`` on loopback whose kernels run ipymcp with no HTTP listener.

The bridge gets a runtime directory of its own (empty: it finds nothing on this machine) and the
Jupyter token in its environment only, so every call goes bridge → jupyter_server → kernel
websocket → ``ipymcp.mcp`` comm. Another websocket plays the user's browser tab. Marked
``compat`` where the kernel's version matters (subshell on ipykernel 7, control channel on 6).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import KernelHarness, runtime_dir, text_of
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from real_jupyter import start_https_server
from remote_notebook import RemoteNotebook, interrupt, module_server, start_cell, tunnel_only_environment
from test_connect import COMMAND

from ipymcp.remote import Endpoint


class Bridge:
    def __init__(self, client: Client, stderr_path: Path, results: list[str]):
        self.client = client
        self.stderr_path = stderr_path
        self.results = results  # the text of every tool result, for the token test

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    async def call(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        result = await self.client.call_tool(name, arguments or {})
        self.results.append(text_of(result) + repr(result.structured_content) + repr(result.meta))
        return result

    async def run(self, code: str) -> str:
        result = await self.call("execute", {"code": code})
        assert not result.is_error, text_of(result)
        return text_of(result).strip()


@asynccontextmanager
async def bridge(*args: str, env: dict[str, str] | None = None, **client: Any) -> AsyncIterator[Bridge]:
    """``ipymcp connect ARGS`` with an empty runtime dir of its own: only the server can work."""
    private = tempfile.mkdtemp(prefix="bridge-runtime-")
    stderr_path = Path(tempfile.mkstemp(prefix="connect-server-", suffix=".log")[1])
    environment = {k: v for k, v in os.environ.items() if k not in ("SERVER_URL", "TOKEN", "NOTEBOOK_PATH", "JUPYTER_TOKEN")}
    environment.update(JUPYTER_RUNTIME_DIR=private, **(env or {}))
    params = StdioServerParameters(command=COMMAND[0], args=[*COMMAND[1:], "connect", *args], env=environment, cwd=private)
    with open(stderr_path, "w") as errlog:
        async with Client(stdio_client(params, errlog=errlog), **client) as session:
            yield Bridge(session, stderr_path, [])


def server_args(server: Any) -> tuple[list[str], dict[str, str]]:
    return ["--server", server.base + "/"], {"JUPYTER_TOKEN": server.token}


server = module_server("connect-server")


@pytest.fixture(scope="module")
async def alpha(server: Any) -> Any:
    nb = RemoteNotebook(server, "alpha.ipynb")
    await nb.load_ipymcp()
    await nb.run("who = 'alpha'; precious = {'user': 'data'}")
    yield nb
    nb.close()


@pytest.fixture(scope="module")
async def plain(server: Any, alpha: RemoteNotebook) -> Any:
    """Started after alpha, so it is the most recently active: it must still not count."""
    nb = RemoteNotebook(server, "plain.ipynb")
    await nb.run("who = 'plain'")
    yield nb
    nb.close()


async def test_tools_and_execute_reach_a_tunnel_only_kernel_through_the_bridge(
    server: Any, alpha: RemoteNotebook, plain: RemoteNotebook
) -> None:
    args, env = server_args(server)
    async with bridge(*args, env=env) as b:
        names = {tool.name for tool in (await b.client.list_tools()).tools}
        assert {"execute", "list_variables", "restart_kernel", "list_notebooks", "select_notebook"} <= names
        assert await b.run("who") == "'alpha'"  # plain.ipynb is newer, but has no ipymcp
        assert await b.run("precious['user']") == "'data'"
        assert "alpha.ipynb" in b.client.instructions
    assert "alpha.ipynb" in b.stderr and "most recently active notebook with ipymcp" in b.stderr


@pytest.mark.compat
async def test_list_variables_answers_within_a_second_while_another_clients_cell_sleeps(
    server: Any, alpha: RemoteNotebook
) -> None:
    args, env = server_args(server)
    user = await alpha.user()
    async with bridge(*args, "--notebook", "alpha.ipynb", env=env) as b:
        await b.call("kernel_status")
        _cell, reply = await start_cell(user, "import time; time.sleep(60)")
        try:
            started = time.perf_counter()
            result = await b.call("list_variables")
            elapsed = time.perf_counter() - started
            status = await b.call("kernel_status")
        finally:
            await interrupt(user)
            await reply
    await user.close()
    assert not result.is_error and "precious" in text_of(result)
    assert elapsed < 1.0, f"list_variables took {elapsed:.2f} s"
    assert status.structured_content["state"] == "busy"


async def test_list_and_select_notebooks_count_only_kernels_with_ipymcp(
    server: Any, alpha: RemoteNotebook, plain: RemoteNotebook
) -> None:
    beta = RemoteNotebook(server, "beta.ipynb")
    try:
        await beta.load_ipymcp()
        await beta.run("who = 'beta'")
        args, env = server_args(server)
        async with bridge(*args, "--notebook", "alpha.ipynb", env=env) as b:
            listed = (await b.call("list_notebooks")).structured_content
            rows = {row["notebook_path"]: row for row in listed["notebooks"]}
            assert set(rows) == {"alpha.ipynb", "beta.ipynb"}, listed  # plain.ipynb has no ipymcp
            assert rows["alpha.ipynb"]["selected"] and not rows["beta.ipynb"]["selected"]
            assert rows["alpha.ipynb"]["state"] == "idle" and rows["beta.ipynb"]["kernel_id"] == beta.kernel_id
            chosen = await b.call("select_notebook", {"notebook": "beta.ipynb"})
            assert not chosen.is_error and chosen.structured_content["kernel_id"] == beta.kernel_id
            assert await b.run("who") == "'beta'"
            refused = await b.call("select_notebook", {"notebook": "plain.ipynb"})
            assert refused.is_error and "list_notebooks" in text_of(refused)
            assert await b.run("who") == "'beta'"  # still there
    finally:
        beta.close()


async def test_restart_kernel_is_decided_in_the_kernel_and_carried_out_by_the_bridge(server: Any) -> None:
    nb = RemoteNotebook(server, "restart.ipynb")
    try:
        await nb.load_ipymcp()
        await nb.run("doomed = 1")
        args, env = server_args(server)
        async with bridge(*args, "--notebook", "restart.ipynb", env=env) as b:
            old_pid = await b.run("import os; os.getpid()")
            await nb.run("%mcp permissions read")
            refused = await b.call("restart_kernel")  # the kernel's level decides: no restart
            assert refused.is_error
            assert await nb.run("print(doomed)") == "1\n"
            await nb.run("%mcp permissions execute")

            result = await b.call("restart_kernel")
            assert not result.is_error, text_of(result)
            assert result.structured_content["state"] == "back"
            assert "restarted and ipymcp is back" in text_of(result)
            assert await b.run("import os; os.getpid()") != old_pid  # the new kernel, same kernel id
            missing = await b.call("execute", {"code": "doomed"})
            assert "NameError" in text_of(missing)
        assert nb.kernel_id in b.stderr
    finally:
        nb.close()
    lines = [line for line in nb.audit_lines() if line.get("tool") == "restart_kernel"]
    assert [line["outcome"] for line in lines] == ["error", "ok"], lines


class Forwarder:
    """A TCP forwarder in front of the Jupyter server: ``drop()`` cuts every connection, as a
    network failure would (the server and the kernel stay up)."""

    def __init__(self, port: int):
        self.target = port
        self.connections: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self.connections += [writer, upstream_writer]

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pump(reader, upstream_writer), pump(upstream_reader, writer))

    def drop(self) -> None:
        for writer in self.connections:
            writer.transport.abort()
        self.connections.clear()

    async def stop(self) -> None:
        self.drop()
        if self.server is not None:
            self.server.close()


@pytest.mark.compat
async def test_a_dropped_websocket_is_reopened_and_the_call_in_flight_is_never_sent_twice(
    server: Any, alpha: RemoteNotebook
) -> None:
    forwarder = Forwarder(server.port)
    port = await forwarder.start()
    try:
        hits = Path(tempfile.mkdtemp()) / "hits"  # the agent's code appends to it each time it runs
        env = {"JUPYTER_TOKEN": server.token}
        async with bridge("--server", f"http://127.0.0.1:{port}/", "--notebook", "alpha.ipynb", env=env) as b:
            assert await b.run("who") == "'alpha'"
            code = f"open({str(hits)!r}, 'a').write('x'); import time; time.sleep(3); 'slow'"
            slow = asyncio.ensure_future(b.call("execute", {"code": code}))
            deadline = time.monotonic() + 30
            while not hits.exists():  # the call is running in the kernel
                assert time.monotonic() < deadline and not slow.done()
                await asyncio.sleep(0.02)
            forwarder.drop()
            result = await slow
            assert result.is_error and "may or may not have run" in text_of(result), text_of(result)
            assert await b.run("who") == "'alpha'"  # the websocket was re-opened; same session
            await b.run("import time; time.sleep(3.5)")  # whatever was under way has finished
            assert hits.read_text() == "x"  # never re-sent
    finally:
        await forwarder.stop()


async def test_a_kernel_that_is_gone_gives_one_error_then_the_notebooks_new_kernel(server: Any) -> None:
    first = RemoteNotebook(server, "reborn.ipynb")
    second: RemoteNotebook | None = None
    try:
        await first.load_ipymcp()
        await first.run("generation = 1")
        args, env = server_args(server)
        async with bridge(*args, "--notebook", "reborn.ipynb", env=env) as b:
            assert await b.run("generation") == "1"
            first.close()  # the session and its kernel are shut down
            second = RemoteNotebook(server, "reborn.ipynb")  # the notebook opened again: a new kernel
            await second.load_ipymcp()
            await second.run("generation = 2")
            lost = await b.call("execute", {"code": "generation"})
            assert lost.is_error and "reborn.ipynb" in text_of(lost), text_of(lost)
            assert "shut down" in text_of(lost) and "did not run" in text_of(lost)
            assert second.kernel_id in text_of(lost)  # where calls go now
            assert await b.run("generation") == "2"
    finally:
        first.close()
        if second is not None:
            second.close()


async def test_a_wrong_token_is_a_clear_error_that_does_not_show_the_token(server: Any) -> None:
    wrong = "wrong-" + server.token[:8] + "-token"
    environment = {**os.environ, "JUPYTER_TOKEN": wrong, "JUPYTER_RUNTIME_DIR": tempfile.mkdtemp()}
    done = subprocess.run(
        [*COMMAND, "connect", "--server", server.base], env=environment, capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 1
    assert "refused the token" in done.stderr and "JUPYTER_TOKEN" in done.stderr
    assert wrong not in done.stderr + done.stdout


async def test_the_jupyter_token_never_reaches_the_kernel_the_logs_or_the_agent(
    server: Any, alpha: RemoteNotebook
) -> None:
    token = server.token
    token_file = Path(tempfile.mkdtemp()) / "token"
    token_file.write_text(token + "\n")
    async with bridge("--server", server.base, "--server-token-file", str(token_file), "-q") as b:
        await b.run("who")
        await b.call("list_notebooks")
        await b.call("kernel_status")
        await b.call("list_variables")
        assert await b.run("import os; os.environ.get('JUPYTER_TOKEN', 'absent')") == "'absent'"
        seen_by_agent = "\n".join(b.results) + b.client.instructions + repr(await b.client.list_tools())
    async with bridge("--server", server.base, "--notebook", "alpha.ipynb", env={"JUPYTER_TOKEN": token}) as verbose:
        await verbose.run("who")
    assert token not in seen_by_agent
    assert token not in b.stderr + verbose.stderr
    for path in runtime_dir().rglob("*"):  # the kernels' audit logs and log files
        if path.is_file():
            assert token not in path.read_text(errors="replace"), path
    # The Jupyter server's own log (where the kernels' stderr goes too).
    assert token not in (server.root.parent / "jupyter-server.log").read_text().replace(
        f"--IdentityProvider.token={token}", ""
    )


async def test_server_url_token_and_notebook_path_take_the_seed_projects_meaning(
    server: Any, alpha: RemoteNotebook
) -> None:
    env = {"SERVER_URL": server.base, "TOKEN": server.token, "NOTEBOOK_PATH": "alpha.ipynb"}
    async with bridge(env=env) as b:
        assert await b.run("who") == "'alpha'"


@pytest.mark.parametrize("suffix", ["/mcp", "/mcp/"])
async def test_a_server_url_ending_in_mcp_keeps_todays_meaning_with_a_note(suffix: str) -> None:
    harness = KernelHarness()
    try:
        harness.load_ipymcp("who = 'local'")
        url = harness.url.rstrip("/").removesuffix("/mcp") + suffix
        async with bridge(env={"SERVER_URL": url, "TOKEN": harness.token}) as b:
            assert await b.run("who") == "'local'"
        assert "SERVER_URL ends in /mcp" in b.stderr
    finally:
        harness.shutdown()


async def test_an_https_server_is_verified_and_ca_file_makes_the_bridge_trust_it(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with tunnel_only_environment():
        https, ca = start_https_server(tmp_path_factory.mktemp("tls-connect"))
    nb = None
    try:
        nb = RemoteNotebook(https, "tls.ipynb")
        nb.endpoint = Endpoint(https.base, token=https.token, ca_file=str(ca))  # the user's tab trusts the CA
        await nb.load_ipymcp()
        args, env = server_args(https)
        # Without the CA the certificate is not trusted: a configuration error, said before serving.
        refused = subprocess.run(
            [*COMMAND, "connect", *args], env={**os.environ, **env, "JUPYTER_RUNTIME_DIR": tempfile.mkdtemp()},
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert refused.returncode == 1, refused.stderr
        assert "is not trusted" in refused.stderr and "--ca-file" in refused.stderr, refused.stderr
        assert https.token not in refused.stderr + refused.stdout
        async with bridge(*args, "--ca-file", str(ca), env=env) as b:
            assert await b.run("6 * 7") == "42"
            assert b.results and https.token not in b.stderr
    finally:
        if nb is not None:
            nb.close()
        https.stop()


async def test_route_framing_and_message_type_can_be_chosen_on_the_command_line(
    server: Any, alpha: RemoteNotebook
) -> None:
    args, env = server_args(server)
    chosen = ("--route", "control", "--framing", "legacy", "--message-type", "comm_msg")
    async with bridge(*args, "--notebook", "alpha.ipynb", *chosen, env=env) as b:
        assert await b.run("who") == "'alpha'"
        opened = next(line for line in b.stderr.splitlines() if "tunnel open to kernel" in line)
        assert "through the kernel's control channel" in opened and "(legacy framing, comm_msg messages)" in opened, opened
    via = [line["client"]["via"] for line in alpha.audit_lines() if line.get("tool") == "execute"][-1]
    assert via.startswith("jupyter-server (control,"), via


def test_server_options_are_checked_before_anything_is_sent() -> None:
    def connect(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*COMMAND, "connect", *args], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)

    bad_header = connect("--server", "http://127.0.0.1:9/", "--header", "no-colon")
    assert bad_header.returncode == 2 and "--header NAME:VALUE" in bad_header.stderr
    both = connect("--server", "http://127.0.0.1:9/", "--url", "http://127.0.0.1:9/mcp")
    assert both.returncode == 2 and "one of them" in both.stderr
    in_url = connect("--server", "http://user:secret@127.0.0.1:9/")
    assert in_url.returncode == 2 and "JUPYTER_TOKEN" in in_url.stderr and "secret" not in in_url.stderr
    alone = connect("--ca-file", "/nonexistent")
    assert alone.returncode == 2 and "need --server" in alone.stderr
    local = connect("--route", "control")
    assert local.returncode == 2 and "need --server" in local.stderr
    unknown = connect("--server", "http://127.0.0.1:9/", "--framing", "v2")
    assert unknown.returncode == 2 and "invalid choice" in unknown.stderr


@pytest.mark.compat
async def test_on_the_main_shell_the_agent_is_told_that_calls_wait_behind_the_users_cell(server: Any) -> None:
    nb = RemoteNotebook(server, "shell.ipynb")
    try:
        await nb.load_ipymcp()
        if "7." == (await nb.run("import ipykernel; print(ipykernel.__version__)"))[:2]:
            pytest.skip("ipykernel >= 7 always offers a subshell; the main shell is for older kernels")
        # An ipymcp that does not handle its comms on control (as an older version would not).
        await nb.run(
            "_k = get_ipython().kernel\n"
            "for _t in ('comm_open', 'comm_msg', 'comm_close', 'ipymcp_msg'): _k.control_handlers.pop(_t, None)"
        )
        args, env = server_args(server)
        async with bridge(*args, "--notebook", "shell.ipynb", env=env) as b:
            assert not (await b.call("kernel_status")).is_error
            assert "waits until the user's running cell has finished" in b.client.instructions
        assert "waits until the user's running cell has finished" in b.stderr
    finally:
        nb.close()
