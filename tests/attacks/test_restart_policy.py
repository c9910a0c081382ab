"""Attack: a restart must never loosen the user's choices (issue 11, item 2).

The user says `%mcp permissions read` and `%mcp approve on`, then restarts the kernel the ordinary
way (jupyter_client's ``restart_kernel``: the ``shutdown_request`` with ``restart: true`` that
JupyterLab's button sends). ipymcp comes back by itself (the come-back helper) and must serve its
very first request at the level and approval mode the user chose, whatever the endpoint settings
(remembered, fixed port, ``remember_endpoint`` off). Where the configuration or the notebook's
metadata speak too, the stricter wins; a notebook can only tighten.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import anyio
import nbformat
import pytest
from conftest import KernelHarness, answered_by_a_new_kernel, mcp_client, runtime_dir

pytestmark = pytest.mark.compat


def _profile(settings: str) -> dict[str, str]:
    """A private IPython dir whose kernel profile holds ``settings``: it is read again after a restart."""
    ipython_dir = Path(tempfile.mkdtemp(prefix="ipython-"))
    profile = ipython_dir / "profile_default"
    profile.mkdir()
    (profile / "ipython_kernel_config.py").write_text(settings)
    return {"IPYTHONDIR": str(ipython_dir)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _runtime_info(kernel: KernelHarness) -> dict[str, Any]:
    return json.loads((runtime_dir() / f"kernel-{kernel.kernel_id}.json").read_text())


async def _came_back(kernel: KernelHarness, old: dict[str, Any], timeout: float = 90) -> dict[str, Any]:
    """The runtime file of the ipymcp that the come-back helper loaded in the new kernel."""
    with anyio.fail_after(timeout):
        while True:
            try:
                info = _runtime_info(kernel)
                if info["pid"] != old["pid"]:
                    return info
            except (OSError, ValueError, KeyError):
                pass
            await anyio.sleep(0.1)


def _load(kernel: KernelHarness) -> dict[str, Any]:
    kernel.run("%load_ext ipymcp")
    kernel.run("import ipymcp._state as _s; assert _s.runtime.wait_ready(30); del _s")
    return _runtime_info(kernel)


async def _first_answer(kernel: KernelHarness, before: dict[str, Any], same_endpoint: bool) -> dict[str, Any]:
    """Restart as the user does; the first kernel_status the new ipymcp serves, and its tool list."""
    kernel.km.restart_kernel(now=False)
    if same_endpoint:
        # Hammer the old URL from the moment the kernel goes down: the very first answer counts.
        status = await answered_by_a_new_kernel(before["url"], before["token"], before["pid"], timeout=90)
        info = before
    else:
        info = await _came_back(kernel, before)
        async with mcp_client(info["url"], info["token"]) as client:
            status = (await client.call_tool("kernel_status", {})).structured_content
    async with mcp_client(info["url"], info["token"]) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        refused = await client.call_tool("execute", {"code": "'ran'"})
    _reconnect(kernel)
    return {"status": status, "tools": tools, "refused": refused}


def _reconnect(kernel: KernelHarness) -> None:
    """The user's frontend after a restart: fresh channels (as JupyterLab reconnects its socket);
    the old ones can miss the new kernel's first messages on a loaded machine."""
    kernel.kc.stop_channels()
    kernel.kc = kernel.km.client()
    kernel.kc.start_channels()
    kernel.kc.wait_for_ready(timeout=60)


def _assert_read_with_approval(answer: dict[str, Any]) -> None:
    status = answer["status"]
    assert (status["permissions"], status["approval"]) == ("read", "on"), status
    assert "execute" not in answer["tools"] and "write_file" not in answer["tools"]
    assert answer["refused"].is_error


@pytest.mark.parametrize(
    "variant",
    ["remembered endpoint", "fixed port", "remember_endpoint off"],
)
async def test_read_level_and_approval_survive_the_users_restart(variant: str) -> None:
    env: dict[str, str] = {}
    if variant == "fixed port":
        env = {"IPYMCP_PORT": str(_free_port())}
    elif variant == "remember_endpoint off":
        env = _profile("c.IPyMCP.remember_endpoint = False\n")
    kernel = KernelHarness(env=env)
    try:
        before = _load(kernel)
        kernel.run("%mcp permissions read")
        kernel.run("%mcp approve on")
        answer = await _first_answer(kernel, before, same_endpoint=variant != "remember_endpoint off")
        _assert_read_with_approval(answer)
        # The user's own view of it agrees with what the agent was told.
        shown = kernel.run(
            "import ipymcp._state as _s; print(_s.runtime.policy.level, _s.runtime.policy.approval); del _s"
        )["stdout"].split()
        assert shown == ["read", "True"]
    finally:
        kernel.shutdown()


async def test_read_level_and_approval_survive_the_users_restart_without_an_http_listener() -> None:
    """A kernel reached only through Jupyter (``IPYMCP_SERVE_HTTP=0``: no runtime file, no
    remembered endpoint): the come-back ipymcp starts at the user's choice all the same."""
    kernel = KernelHarness(env={"IPYMCP_SERVE_HTTP": "0"})
    try:
        kernel.run("%load_ext ipymcp")
        kernel.run("import ipymcp._state as _s; assert _s.runtime.wait_ready(30) and not _s.runtime.url; del _s")
        old_pid = kernel.run("import os; print(os.getpid())")["stdout"].strip()
        kernel.run("%mcp permissions read")
        kernel.run("%mcp approve on")
        kernel.km.restart_kernel(now=False)
        _reconnect(kernel)
        probe = (
            "import os, ipymcp._state as _s\n"
            "r = _s.runtime\n"
            "print(os.getpid(), r is not None and r.wait_ready(1), r and r.policy.level, r and r.policy.approval)\n"
            "del _s, r"
        )
        with anyio.fail_after(90):
            while True:
                pid, ready, level, approval = kernel.run(probe)["stdout"].split()
                if pid != old_pid and ready == "True":
                    break
                await anyio.sleep(0.3)
        assert (level, approval) == ("read", "True")
    finally:
        kernel.shutdown()


async def test_the_configuration_and_the_remembered_choice_meet_at_the_stricter() -> None:
    # The profile says edit; the user goes up to full in the kernel, then restarts: edit, not full.
    kernel = KernelHarness(env=_profile("c.IPyMCP.permissions = 'edit'\n"))
    try:
        before = _load(kernel)
        kernel.run("%mcp permissions full")
        answer = await _first_answer(kernel, before, same_endpoint=True)
        assert answer["status"]["permissions"] == "edit"
        assert "run_command" not in answer["tools"] and "execute" not in answer["tools"]
        # Now the user goes down to read and turns approval on: the restart keeps both.
        kernel.run("%load_ext ipymcp")  # the user's cell after the restart (ipymcp is already back)
        kernel.run("%mcp permissions read")
        kernel.run("%mcp approve on")
        again = await _first_answer(kernel, _runtime_info(kernel), same_endpoint=True)
        _assert_read_with_approval(again)
    finally:
        kernel.shutdown()


def _notebook(directory: Path, metadata: dict[str, Any]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["ipymcp"] = metadata
    nb.cells = [nbformat.v4.new_code_cell("%load_ext ipymcp")]
    path = directory / "received.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"permissions": "read", "approval": True}, ("read", "on")),
        # A notebook received from someone else cannot raise the level nor switch approval off.
        ({"permissions": "full", "approval": False}, ("execute", "off")),
        ({"permissions": "sudo", "approval": "yes please"}, ("execute", "off")),
    ],
)
async def test_a_notebook_from_someone_else_can_only_tighten(
    metadata: dict[str, Any], expected: tuple[str, str]
) -> None:
    directory = Path(tempfile.mkdtemp(prefix="nb-received-"))
    path = _notebook(directory, metadata)
    # What Jupyter Server tells the kernel about its notebook (sessionmanager.get_kernel_env).
    kernel = KernelHarness(cwd=directory, env={"JPY_SESSION_NAME": str(path)})
    try:
        info = _load(kernel)
        async with mcp_client(info["url"], info["token"]) as client:
            status = (await client.call_tool("kernel_status", {})).structured_content
            tools = {tool.name for tool in (await client.list_tools()).tools}
        assert (status["permissions"], status["approval"]) == expected
        assert ("execute" in tools) == (expected[0] == "execute")
        assert "run_command" not in tools
    finally:
        kernel.shutdown()


async def test_the_notebook_tightens_a_remembered_full_after_the_restart() -> None:
    directory = Path(tempfile.mkdtemp(prefix="nb-received-"))
    path = _notebook(directory, {"permissions": "edit", "approval": True})
    kernel = KernelHarness(cwd=directory, env={"JPY_SESSION_NAME": str(path)})
    try:
        before = _load(kernel)
        kernel.run("%mcp permissions full")  # the user may go above the notebook's level live…
        kernel.run("%mcp approve off")
        assert kernel.run("import ipymcp._state as _s; print(_s.runtime.policy.level); del _s")[
            "stdout"
        ].strip() == "full"
        answer = await _first_answer(kernel, before, same_endpoint=True)
        # …but after a restart the notebook's stricter word holds again.
        assert (answer["status"]["permissions"], answer["status"]["approval"]) == ("edit", "on")
    finally:
        kernel.shutdown()


def test_the_policy_memory_is_owner_only_and_outside_the_notebook() -> None:
    directory = Path(tempfile.mkdtemp(prefix="nb-memory-"))
    path = _notebook(directory, {})
    before_text = path.read_text()
    kernel = KernelHarness(cwd=directory, env={"JPY_SESSION_NAME": str(path)})
    try:
        _load(kernel)
        kernel.run("%mcp permissions read")
        files = sorted(runtime_dir().glob("policy-*.json"))
        mine = [f for f in files if json.loads(f.read_text()).get("kernel_id") == kernel.kernel_id]
        assert len(mine) == 2, files  # one for this kernel (restarts), one for its notebook (reopening)
        for file in mine:
            assert os.stat(file).st_mode & 0o077 == 0, file
            assert json.loads(file.read_text())["permissions"] == "read"
        assert path.read_text() == before_text  # nothing written into the notebook
    finally:
        kernel.shutdown()


async def test_an_edit_agent_cannot_write_itself_a_higher_level_for_after_the_restart() -> None:
    # The agent's workspace root holds the Jupyter runtime dir, where the remembered choice lives.
    root = runtime_dir().parent.parent
    kernel = KernelHarness(env=_profile(f"c.IPyMCP.root_dir = {str(root)!r}\n"))
    try:
        before = _load(kernel)
        kernel.run("%mcp permissions edit")
        memory = runtime_dir() / f"policy-kernel-{kernel.kernel_id}.json"
        kept = memory.read_text()
        forged = json.dumps({"permissions": "full", "approval": False, "kernel_id": kernel.kernel_id})
        async with mcp_client(before["url"], before["token"]) as client:
            relative = str(memory.relative_to(root))
            wrote = await client.call_tool("write_file", {"path": relative, "content": forged, "overwrite": True})
            assert wrote.is_error
        assert memory.read_text() == kept
        answer = await _first_answer(kernel, before, same_endpoint=True)
        assert answer["status"]["permissions"] == "edit"
    finally:
        kernel.shutdown()
