"""The user's running cell, as the agent is told about it (issue 12.1, 12.2).

The cell is the main shell's non-silent execute_request, known by that request: what a frontend
sends meanwhile (comm messages, silent executes, executes on subshells) cannot end it, and its
number is the one the user's prompt, traceback and history show. The browser suite
(tests/browser/test_user_cell_browser.py) does the same from real JupyterLab / Notebook 7 pages.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from conftest import text_of, user_cell_running

pytestmark = pytest.mark.compat

# Short sleeps: SIGINT lands between them at once (sync), and the loop wakes for it (async).
SLEEPS = "import time\nfor _ in range(300):\n    time.sleep(0.1)"
AWAITS = "import asyncio\nfor _ in range(300):\n    await asyncio.sleep(0.1)"


def _iopub_until(kernel: Any, msg_id: str, msg_type: str, timeout: float = 30) -> dict[str, Any]:
    """The first IOPub message of ``msg_type`` whose parent is ``msg_id`` (others are skipped)."""
    while True:
        msg = kernel.kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == msg_type:
            return msg


async def test_cell_numbers_are_the_ones_the_user_sees(kernel) -> None:
    kernel.run("before = 1")  # a cell that ran after ipymcp loaded: the counts have moved on
    progress: list[str] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    async with kernel.client() as c:
        ipython = (await c.call_tool("kernel_status", {})).structured_content["versions"]["ipython"]
        msg_id = kernel.send(SLEEPS)
        count = _iopub_until(kernel, msg_id, "execute_input")["content"]["execution_count"]
        status = await user_cell_running(c, "import time")
        waited = await c.call_tool("execute", {"code": "1", "timeout": 2}, progress_callback=on_progress)
        history = await c.call_tool("get_history", {"last": 1, "source": "user", "include_outputs": False})
        answer = await c.call_tool("interrupt", {"target": "user"})
        error = _iopub_until(kernel, msg_id, "error")["content"]
        reply = kernel.wait_idle(msg_id)["content"]

    assert status["user_cell"]["execution_count"] == count
    assert f"kernel busy: user cell [{count}] running" in text_of(waited), text_of(waited)
    assert any(m.startswith(f"waiting: user cell [{count}] running") for m in progress), progress
    assert history.meta["ids"] == [count]
    assert f"cell [{count}]" in text_of(answer), text_of(answer)
    assert reply["execution_count"] == count and error["ename"] == "KeyboardInterrupt"
    if int(ipython.split(".")[0]) >= 8:  # IPython 7 names the cell by a file, not by its number
        cells_named = set(re.findall(r"Cell In\s*\[(\d+)\]", re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error["traceback"]))))
        assert cells_named == {str(count)}, error["traceback"]


async def test_kernel_status_execution_count_is_the_next_cells_number_on_every_ipython(kernel) -> None:
    """IPython 9 counts a cell as it starts, 7 and 8 as it ends: kernel_status says the same anyway."""
    async with kernel.client() as c:
        idle = (await c.call_tool("kernel_status", {})).structured_content
        msg_id = kernel.send(SLEEPS)
        count = _iopub_until(kernel, msg_id, "execute_input")["content"]["execution_count"]
        busy = await user_cell_running(c, "import time")
        await c.call_tool("interrupt", {"target": "user"})
        kernel.wait_idle(msg_id)
        after = (await c.call_tool("kernel_status", {})).structured_content
    assert idle["execution_count"] == count  # the number the next cell got
    assert busy["user_cell"]["execution_count"] == count
    assert busy["execution_count"] == count + 1, (busy["versions"], busy["execution_count"], count)
    assert after["execution_count"] == count + 1


async def test_frontend_traffic_while_the_cell_runs_does_not_end_it(kernel) -> None:
    """A comm message, a silent execute and (ipykernel 7) executes on a subshell, during an async
    cell: ipykernel 7 handles main-shell comms while an async cell awaits, subshells at any time."""
    kernel.run(
        "from ipykernel.kernelbase import Kernel as _K\n"
        "probe_messages, subshell_runs = [], []\n"
        "_K.instance().comm_manager.register_target(\n"
        "    'celltrack.probe', lambda comm, _: comm.on_msg(lambda m: probe_messages.append(m['content']['data'])))\n"
        "del _K"
    )
    async with kernel.client() as c:
        features = (await c.call_tool("kernel_status", {})).structured_content["features"]
        msg_id = kernel.send(AWAITS)
        count = (await user_cell_running(c, "import asyncio"))["user_cell"]["execution_count"]

        comm_id = uuid.uuid4().hex
        _send_shell(kernel.kc, "comm_open", {"comm_id": comm_id, "target_name": "celltrack.probe", "data": {}})
        _send_shell(kernel.kc, "comm_msg", {"comm_id": comm_id, "data": {"n": 1}})
        silent_id = kernel.kc.execute("subshell_runs.append('main, silent')", silent=True)
        if features["subshells"]:
            await _wait_length(c, "probe_messages", 1)  # handled while the cell runs
            assert _run_on_a_subshell(kernel) == ["ok", "ok"]
            assert await _length(c, "subshell_runs") == 2

        status = (await c.call_tool("kernel_status", {})).structured_content
        assert status["state"] == "busy", status
        assert status["user_cell"]["execution_count"] == count and "import asyncio" in status["user_cell"]["code_head"]
        answer = await c.call_tool("interrupt", {"target": "user"})
        assert not answer.is_error and f"cell [{count}]" in text_of(answer), text_of(answer)
        reply = kernel.wait_idle(msg_id, timeout=10)["content"]
        assert reply["status"] == "error"
        # The interrupted cell aborts what was queued behind it (stop_on_error); the comm still ran.
        assert kernel.wait_idle(silent_id)["content"]["status"] in ("ok", "aborted")
        await _wait_length(c, "probe_messages", 1)
        status = (await c.call_tool("kernel_status", {})).structured_content
        assert status["state"] == "idle" and "user_cell" not in status


async def test_unloading_gives_the_kernel_its_own_handler_back(fresh_kernel) -> None:
    handler = "get_ipython().kernel.shell_handlers['execute_request']"
    original = "get_ipython().kernel.execute_request"
    fresh_kernel.load_ipymcp()
    assert fresh_kernel.run(f"print({handler} == {original})")["stdout"] == "False\n"
    fresh_kernel.run("%unload_ext ipymcp")
    assert fresh_kernel.run(f"print({handler} == {original})")["stdout"] == "True\n"
    fresh_kernel.load_ipymcp()  # loads again with one wrapper, and tracks cells
    async with fresh_kernel.client() as c:
        msg_id = fresh_kernel.send(SLEEPS)
        await user_cell_running(c, "import time")
        await c.call_tool("interrupt", {"target": "user"})
        assert fresh_kernel.wait_idle(msg_id)["content"]["status"] == "error"


def _send_shell(client: Any, msg_type: str, content: dict[str, Any]) -> None:
    client.shell_channel.send(client.session.msg(msg_type, content))


def _run_on_a_subshell(kernel: Any) -> list[str]:
    """A silent and a non-silent execute on a new subshell, from a second frontend (its own session)."""
    from jupyter_client import BlockingKernelClient

    frontend = BlockingKernelClient()
    frontend.load_connection_file(kernel.km.connection_file)
    frontend.start_channels()
    try:
        frontend.control_channel.send(frontend.session.msg("create_subshell_request", {}))
        subshell_id = frontend.control_channel.get_msg(timeout=10)["content"]["subshell_id"]
        statuses = []
        for silent in (True, False):
            request = frontend.session.msg(
                "execute_request",
                {"code": f"subshell_runs.append('subshell, silent={silent}')", "silent": silent,
                 "store_history": False, "user_expressions": {}, "allow_stdin": False, "stop_on_error": False},
            )  # fmt: skip
            request["header"]["subshell_id"] = subshell_id
            frontend.shell_channel.send(request)
            statuses.append(frontend.shell_channel.get_msg(timeout=10)["content"]["status"])
        return statuses
    finally:
        frontend.stop_channels()


async def _length(client: Any, name: str) -> int:
    return int((await client.call_tool("inspect_variable", {"name": name})).structured_content["length"])


async def _wait_length(client: Any, name: str, length: int, timeout: float = 10) -> None:
    import anyio

    with anyio.fail_after(timeout):
        while await _length(client, name) < length:
            await anyio.sleep(0.1)
