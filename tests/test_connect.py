"""``ipymcp connect`` (a real subprocess) driven by the SDK's stdio client, against real kernels.

Two kernels with ipymcp loaded, each with its own notebook and working directory; the bridge picks
by notebook, kernel id, current directory or recency, switches with select_notebook, and survives
a kernel restart. Plus ``ipymcp list`` and ``ipymcp config --write``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from conftest import KernelHarness, runtime_dir, text_of
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

IPYMCP = Path(sys.executable).parent / "ipymcp"
COMMAND = [str(IPYMCP)] if IPYMCP.exists() else [sys.executable, "-m", "ipymcp.cli"]


class Bridge:
    """A running ``ipymcp connect`` with its SDK client and its stderr."""

    def __init__(self, client: Client, stderr_path: Path, notifications: list[Any]):
        self.client = client
        self.stderr_path = stderr_path
        self.notifications = notifications

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    async def run(self, code: str) -> str:
        result = await self.client.call_tool("execute", {"code": code})
        assert not result.is_error, text_of(result)
        return text_of(result).strip()


@asynccontextmanager
async def connect(
    *args: str, cwd: Path | str | None = None, mode: str = "auto", env: dict[str, str] | None = None, **client: Any
) -> AsyncIterator[Bridge]:
    stderr_path = Path(tempfile.mkstemp(prefix="connect-", suffix=".log")[1])
    params = StdioServerParameters(
        command=COMMAND[0],
        args=[*COMMAND[1:], "connect", *args],
        env={**os.environ, **(env or {})},
        cwd=str(cwd or tempfile.mkdtemp(prefix="elsewhere-")),
    )
    notifications: list[Any] = []

    async def on_message(message: Any) -> None:
        notifications.append(message)

    with open(stderr_path, "w") as errlog:
        transport = stdio_client(params, errlog=errlog)
        async with Client(transport, mode=mode, message_handler=on_message, **client) as session:
            yield Bridge(session, stderr_path, notifications)


def _notebook_kernel(root: Path, name: str) -> KernelHarness:
    cwd = root / name
    cwd.mkdir()
    notebook = cwd / f"{name}.ipynb"
    notebook.write_text("{}")
    harness = KernelHarness(cwd=cwd, env={"JPY_SESSION_NAME": str(notebook)})
    harness.load_ipymcp(f"who = {name!r}")
    harness.notebook = notebook
    return harness


@pytest.fixture(scope="module")
def two_kernels() -> Any:
    """alpha started first, beta second (the newest)."""
    root = Path(tempfile.mkdtemp(prefix="two-kernels-"))
    alpha = _notebook_kernel(root, "alpha")
    time.sleep(1.1)  # runtime files order by a timestamp with one-second resolution
    beta = _notebook_kernel(root, "beta")
    yield root, alpha, beta
    alpha.shutdown()
    beta.shutdown()


# -- choosing a kernel ------------------------------------------------------------------------


async def test_connect_picks_the_kernel_of_the_named_notebook(two_kernels: Any) -> None:
    root, alpha, beta = two_kernels
    async with connect("--notebook", "alpha.ipynb") as bridge:
        assert await bridge.run("who") == "'alpha'"
        assert "alpha.ipynb" in bridge.client.instructions
        assert "notebook alpha.ipynb" in bridge.stderr
    async with connect("--notebook", str(beta.notebook)) as bridge:
        assert await bridge.run("who") == "'beta'"


@pytest.mark.compat
async def test_connect_picks_by_kernel_id(two_kernels: Any) -> None:
    root, alpha, beta = two_kernels
    async with connect("--kernel-id", alpha.kernel_id) as bridge:
        assert await bridge.run("who") == "'alpha'"
        assert alpha.kernel_id in bridge.stderr


async def test_connect_prefers_the_notebook_under_the_current_directory(two_kernels: Any) -> None:
    root, alpha, beta = two_kernels
    async with connect(cwd=root / "alpha") as bridge:
        assert await bridge.run("who") == "'alpha'"
        assert "under the current directory" in bridge.client.instructions


async def test_connect_falls_back_to_the_newest_kernel(two_kernels: Any) -> None:
    async with connect() as bridge:  # a directory with no notebook under it
        assert await bridge.run("who") == "'beta'"
        assert "most recently started" in bridge.stderr
    async with connect(cwd="/") as bridge:  # every notebook is under /: that decides nothing
        assert await bridge.run("who") == "'beta'"
        assert "most recently started" in bridge.stderr


async def test_connect_takes_url_and_token_from_the_environment(two_kernels: Any) -> None:
    root, alpha, beta = two_kernels
    async with connect(env={"IPYMCP_URL": alpha.url, "IPYMCP_TOKEN": alpha.token}) as bridge:
        assert await bridge.run("who") == "'alpha'"
    # the seed's variable names
    async with connect(env={"SERVER_URL": beta.url, "TOKEN": beta.token}) as bridge:
        assert await bridge.run("who") == "'beta'"
    async with connect(env={"NOTEBOOK_PATH": str(alpha.notebook)}) as bridge:
        assert await bridge.run("who") == "'alpha'"


async def test_a_stale_runtime_file_of_a_dead_kernel_is_ignored(two_kernels: Any) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = runtime_dir() / "kernel-dead-kernel.json"
    stale.write_text(
        json.dumps(
            {
                "url": "http://127.0.0.1:9/mcp",
                "token": "x",
                "pid": dead.pid,
                "kernel_id": "dead-kernel",
                "notebook_path": None,
                "cwd": "/",
                "started": "2999-01-01T00:00:00+00:00",  # the "newest"
            }
        )
    )
    stale.chmod(0o600)  # as its kernel wrote it: skipped because the kernel is dead, not untrusted
    unreadable = runtime_dir() / "kernel-garbage.json"
    unreadable.write_text("{not json")
    unreadable.chmod(0o600)
    try:
        async with connect(cwd="/") as bridge:
            assert await bridge.run("who") == "'beta'"
            listed = (await bridge.client.call_tool("list_notebooks", {})).structured_content
            assert "dead-kernel" not in {row["kernel_id"] for row in listed["notebooks"]}
        listing = subprocess.run([*COMMAND, "list", "--json"], capture_output=True, text=True, check=True)
        assert "dead-kernel" not in {info["kernel_id"] for info in json.loads(listing.stdout)}
        assert f"{unreadable}: it is not valid JSON" in listing.stderr
        assert "of kernels that are no longer running" in listing.stderr and str(stale) not in listing.stderr
    finally:
        stale.unlink()
        unreadable.unlink()


# -- the bridge's own tools -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_list_notebooks_and_select_notebook_switch_targets(two_kernels: Any, mode: str) -> None:
    root, alpha, beta = two_kernels
    async with connect(cwd="/", mode=mode) as bridge:
        expected = "2025-11-25" if mode == "legacy" else "2026-07-28"
        assert bridge.client.protocol_version == expected
        names = {tool.name for tool in (await bridge.client.list_tools()).tools}
        assert {"execute", "list_variables", "list_notebooks", "select_notebook"} <= names

        listed = (await bridge.client.call_tool("list_notebooks", {})).structured_content
        rows = {row["kernel_id"]: row for row in listed["notebooks"]}
        assert rows[alpha.kernel_id]["notebook_path"] == str(alpha.notebook)
        assert rows[beta.kernel_id]["selected"] and not rows[alpha.kernel_id]["selected"]
        assert rows[alpha.kernel_id]["state"] == "idle"
        assert rows[alpha.kernel_id]["started"] < rows[beta.kernel_id]["started"]

        selected = await bridge.client.call_tool("select_notebook", {"notebook": "alpha.ipynb"})
        assert not selected.is_error and selected.structured_content["kernel_id"] == alpha.kernel_id
        assert await bridge.run("who") == "'alpha'"
        selected = await bridge.client.call_tool("select_notebook", {"kernel_id": beta.kernel_id})
        assert await bridge.run("who") == "'beta'"

        missing = await bridge.client.call_tool("select_notebook", {"notebook": "nope.ipynb"})
        assert missing.is_error and "list_notebooks" in text_of(missing)
        assert await bridge.run("who") == "'beta'"  # unchanged


async def test_select_notebook_announces_that_the_tool_list_changed(two_kernels: Any) -> None:
    root, alpha, beta = two_kernels
    async with connect(cwd="/", mode="legacy") as bridge:
        await bridge.client.list_tools()
        await bridge.client.call_tool("select_notebook", {"kernel_id": alpha.kernel_id})
        with anyio.fail_after(5):
            while not any(isinstance(n, types.ToolListChangedNotification) for n in bridge.notifications):
                await anyio.sleep(0.05)
    async with connect(cwd="/", mode="auto") as bridge:
        async with bridge.client.listen(tools_list_changed=True) as subscription:
            await bridge.client.call_tool("select_notebook", {"kernel_id": alpha.kernel_id})
            with anyio.fail_after(5):
                event = await subscription.__anext__()
        assert type(event).__name__ == "ToolsListChanged"


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_the_kernels_list_changed_notifications_pass_through(fresh_kernel: KernelHarness, mode: str) -> None:
    kernel = fresh_kernel
    kernel.load_ipymcp()
    async with connect("--kernel-id", kernel.kernel_id, mode=mode) as bridge:
        assert "execute" in {tool.name for tool in (await bridge.client.list_tools()).tools}
        if mode == "legacy":
            kernel.run("%mcp permissions read")
            with anyio.fail_after(10):
                while not any(isinstance(n, types.ToolListChangedNotification) for n in bridge.notifications):
                    await anyio.sleep(0.05)
        else:
            async with bridge.client.listen(tools_list_changed=True) as subscription:
                kernel.run("%mcp permissions read")
                with anyio.fail_after(10):
                    await subscription.__anext__()
        names = {tool.name for tool in (await bridge.client.list_tools(cache_mode="bypass")).tools}
        assert "execute" not in names and {"list_variables", "list_notebooks"} <= names


# -- pass-through -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_progress_and_results_pass_through(two_kernels: Any, mode: str) -> None:
    root, alpha, beta = two_kernels
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async with connect("--kernel-id", alpha.kernel_id, mode=mode) as bridge:
        result = await bridge.client.call_tool(
            "execute", {"code": "import time; time.sleep(2.5); print('slept')"}, progress_callback=on_progress
        )
        assert text_of(result).strip() == "slept"
        assert progress and all("running for" in (message or "") or "waiting" in (message or "") for *_, message in progress)
        failed = await bridge.client.call_tool("execute", {"code": "1/0"})
        assert failed.is_error and "ZeroDivisionError" in text_of(failed)
        variables = types.ResourceTemplateReference(uri="ipymcp://variables/{name}")
        completed = await bridge.client.complete(variables, {"name": "name", "value": "wh"})
        assert completed.completion.values == ["who"]
        async with alpha.client() as direct:
            assert [r.uri for r in (await bridge.client.list_resources()).resources] == [
                r.uri for r in (await direct.list_resources()).resources
            ]
            assert [p.name for p in (await bridge.client.list_prompts()).prompts] == [
                p.name for p in (await direct.list_prompts()).prompts
            ]


async def test_cancelling_a_call_interrupts_the_agent_code_in_the_kernel(two_kernels: Any) -> None:
    root, alpha, beta = two_kernels
    async with connect("--kernel-id", alpha.kernel_id, mode="legacy") as bridge:
        with anyio.move_on_after(1.5):
            await bridge.client.call_tool("execute", {"code": "import time; time.sleep(30); done = True"})
        started = time.monotonic()
        assert await bridge.run("'done' in dir()") == "False"
        assert time.monotonic() - started < 10  # the sleeping job was interrupted, not waited for


async def test_approval_questions_reach_the_client_through_the_bridge(fresh_kernel: KernelHarness) -> None:
    kernel = fresh_kernel
    kernel.load_ipymcp()
    kernel.run("%mcp approve on")
    asked: list[str] = []
    answer = {"action": "accept", "content": {"decision": "allow"}}

    async def elicitation(context: Any, params: Any) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(**answer)

    async with connect("--kernel-id", kernel.kernel_id, mode="legacy", elicitation_callback=elicitation) as bridge:
        assert await bridge.run("6 * 7") == "42"
        assert asked and "execute" in asked[0]
        answer.update(action="decline", content=None)
        denied = await bridge.client.call_tool("execute", {"code": "x = 1"})
        assert denied.is_error and "Not approved" in text_of(denied)
    async with connect("--kernel-id", kernel.kernel_id, mode="legacy") as bridge:  # cannot answer
        refused = await bridge.client.call_tool("execute", {"code": "x = 1"})
        assert refused.is_error and "cannot answer" in text_of(refused)


# -- restarts and late kernels ----------------------------------------------------------------


@pytest.mark.compat
async def test_kernel_restart_gives_one_clear_error_then_works(fresh_kernel: KernelHarness) -> None:
    kernel = fresh_kernel
    async with connect("--kernel-id", kernel.kernel_id) as bridge:
        # Started before the kernel loaded ipymcp: only the bridge's tools, and a clear error.
        names = {tool.name for tool in (await bridge.client.list_tools()).tools}
        assert names == {"list_notebooks", "select_notebook"}
        with anyio.fail_after(15):
            early = await bridge.client.call_tool("execute", {"code": "1"})
        assert early.is_error and "%load_ext ipymcp" in text_of(early)

        kernel.load_ipymcp("x = 1")
        with anyio.fail_after(15):  # the bridge notices the new kernel by itself
            while "execute" not in {tool.name for tool in (await bridge.client.list_tools()).tools}:
                await anyio.sleep(0.5)
        assert await bridge.run("x") == "1"

        kernel.km.restart_kernel(now=True)
        kernel.kc.wait_for_ready(timeout=60)
        kernel.load_ipymcp("y = 2")
        # Clients refetch listings on list-changed: those are answered, and do not use up the error.
        with anyio.fail_after(15):
            while "execute" not in {tool.name for tool in (await bridge.client.list_tools()).tools}:
                await anyio.sleep(0.2)
        with anyio.fail_after(20):
            first = await bridge.client.call_tool("execute", {"code": "y"})
        assert first.is_error
        assert "restarted" in text_of(first) and "variables are gone" in text_of(first)
        assert await bridge.run("y") == "2"
        assert await bridge.run("'x' in dir()") == "False"


async def test_an_unpinned_bridge_stays_with_its_notebook_while_its_kernel_restarts() -> None:
    """What the README's Claude Code line runs: chosen by the working directory, then bound to that
    notebook. While its kernel restarts no call may run in the other notebook; then they go to the
    same notebook's new kernel."""
    root = Path(tempfile.mkdtemp(prefix="bound-"))
    home = _notebook_kernel(root, "home")
    time.sleep(1.1)  # runtime files order by a timestamp with one-second resolution: other is newest
    other = _notebook_kernel(root, "other")
    other_pid = int(other.run("import os; print(os.getpid())")["stdout"])
    try:
        async with connect(cwd=root / "home") as bridge:
            assert await bridge.run("who") == "'home'"

            home.km.restart_kernel(now=True)  # killed and started again; ipymcp not loaded there yet
            home.kc.wait_for_ready(timeout=60)
            for _ in range(3):
                with anyio.fail_after(20):
                    away = await bridge.client.call_tool("execute", {"code": "who"})
                assert away.is_error, f"a call ran while home.ipynb was away: {text_of(away)}"
                assert "home.ipynb" in text_of(away) and "other.ipynb" not in text_of(away)
                assert "did not run" in text_of(away) or "did not complete" in text_of(away)
                assert "select_notebook" in text_of(away)
            status = await bridge.client.call_tool("kernel_status", {})
            assert status.is_error and "did not run" in text_of(status)

            home.load_ipymcp("who = 'home again'")
            home_pid = int(home.run("import os; print(os.getpid())")["stdout"])
            with anyio.fail_after(30):
                while (back := await bridge.client.call_tool("execute", {"code": "who"})).is_error:
                    assert "other.ipynb" not in text_of(back)
                    await anyio.sleep(0.2)
            assert text_of(back).strip() == "'home again'"
            status = (await bridge.client.call_tool("kernel_status", {})).structured_content
            assert status["pid"] == home_pid != other_pid
            listed = (await bridge.client.call_tool("list_notebooks", {})).structured_content
            selected = [row["notebook_path"] for row in listed["notebooks"] if row["selected"]]
            assert selected == [str(home.notebook)]
    finally:
        home.shutdown()
        other.shutdown()


async def test_a_call_while_the_kernel_is_down_fails_fast(fresh_kernel: KernelHarness) -> None:
    kernel = fresh_kernel
    kernel.load_ipymcp()
    async with connect("--kernel-id", kernel.kernel_id, mode="legacy") as bridge:
        assert await bridge.run("1 + 1") == "2"
        kernel.run("%unload_ext ipymcp")
        with anyio.fail_after(20):
            first = await bridge.client.call_tool("execute", {"code": "1"})
            second = await bridge.client.call_tool("execute", {"code": "1"})
        assert first.is_error and "went away" in text_of(first)
        assert second.is_error and "%load_ext ipymcp" in text_of(second)


# -- ipymcp list / config ---------------------------------------------------------------------


def test_list_shows_each_kernel_without_tokens(two_kernels: Any) -> None:
    root, alpha, beta = two_kernels
    table = subprocess.run([*COMMAND, "list"], capture_output=True, text=True, check=True).stdout
    assert alpha.kernel_id in table and "beta.ipynb" in table
    listed = json.loads(subprocess.run([*COMMAND, "list", "--json"], capture_output=True, text=True, check=True).stdout)
    assert [info["kernel_id"] for info in listed][:2] == [beta.kernel_id, alpha.kernel_id]
    assert all("token" not in info for info in listed)


def test_config_write_merges_without_losing_other_servers(tmp_path: Path) -> None:
    home = tmp_path / "home"
    config = home / ".cursor" / "mcp.json"
    config.parent.mkdir(parents=True)
    existing = {"mcpServers": {"other": {"command": "other-server", "args": ["--x"]}}, "theme": "dark"}
    config.write_text(json.dumps(existing))
    env = {**os.environ, "HOME": str(home)}
    run = subprocess.run(
        [*COMMAND, "config", "cursor", "--write", "--notebook", "a.ipynb"], capture_output=True, text=True, env=env
    )
    assert run.returncode == 0, run.stderr
    merged = json.loads(config.read_text())
    assert merged["mcpServers"]["other"] == existing["mcpServers"]["other"] and merged["theme"] == "dark"
    assert merged["mcpServers"]["ipymcp"]["args"] == ["connect", "--notebook", "a.ipynb"]
    backups = list(config.parent.glob("mcp.json.bak-*"))
    assert len(backups) == 1 and json.loads(backups[0].read_text()) == existing

    # the same entry that `ipymcp config cursor` prints
    printed = subprocess.run([*COMMAND, "config", "cursor", "--notebook", "a.ipynb"], capture_output=True, text=True, env=env)
    assert json.loads(printed.stdout)["mcpServers"]["ipymcp"] == merged["mcpServers"]["ipymcp"]

    # VS Code keeps servers under "servers"; a file that is not plain JSON is left alone
    vscode = tmp_path / "mcp.json"
    vscode.write_text('{"servers": {"x": {"type": "http", "url": "http://h"}}, "inputs": []}')
    subprocess.run([*COMMAND, "config", "vscode", "--write", "--file", str(vscode)], check=True, env=env, capture_output=True)
    data = json.loads(vscode.read_text())
    assert set(data["servers"]) == {"x", "ipymcp"} and data["servers"]["ipymcp"]["type"] == "stdio"
    commented = tmp_path / "commented.json"
    commented.write_text('// my settings\n{"servers": {}}')
    refused = subprocess.run(
        [*COMMAND, "config", "vscode", "--write", "--file", str(commented)], capture_output=True, text=True, env=env
    )
    assert refused.returncode == 1 and "not plain JSON" in refused.stderr
    assert commented.read_text().startswith("// my settings")


def test_config_writes_a_new_claude_desktop_file(tmp_path: Path) -> None:
    target = tmp_path / "Claude" / "claude_desktop_config.json"
    subprocess.run(
        [*COMMAND, "config", "claude-desktop", "--write", "--file", str(target)], check=True, capture_output=True
    )
    entry = json.loads(target.read_text())["mcpServers"]["ipymcp"]
    assert entry["args"] == ["connect"] and Path(entry["command"]).name.startswith("ipymcp")


async def test_mcp_config_in_the_notebook_prints_the_entry_ipymcp_config_prints(two_kernels: Any) -> None:
    root, alpha, beta = two_kernels
    printed = alpha.run("%mcp config cursor")["stdout"]
    entry, _ = json.JSONDecoder().raw_decode(printed[printed.index("{") :])
    cli = subprocess.run(
        [*COMMAND, "config", "cursor", "--notebook", str(alpha.notebook)], capture_output=True, text=True, check=True
    ).stdout
    assert entry == json.loads(cli)
    server = entry["mcpServers"]["ipymcp"]
    async with connect(*server["args"][1:]) as bridge:  # the printed entry reaches this notebook
        assert await bridge.run("who") == "'alpha'"
    assert alpha.token not in printed  # the direct-HTTP variant reads it from the environment
    assert "Bearer ${env:IPYMCP_TOKEN}" in printed


def test_claude_desktop_has_no_direct_http_variant_and_names_the_bridge_instead() -> None:
    from ipymcp.clients import http_snippet

    text = http_snippet("claude-desktop", "http://127.0.0.1:1/mcp", ["ipymcp", "token", "--kernel-id", "k"])
    assert text.startswith("#") and "ipymcp connect" in text
