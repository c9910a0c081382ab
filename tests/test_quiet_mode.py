"""Agent code never writes into the user's notebook, and loading ipymcp aborts no user cell.

What the user's frontend receives is read on its own IOPub channel, up to the end of a marker
cell run afterwards: IOPub is one ordered stream, so whatever the kernel sent during the agent's
call has arrived by then.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import KernelHarness, text_of

pytestmark = pytest.mark.compat

# As in a real notebook: ipykernel captures fd-level output (subprocesses, C code) into cells,
# which it does not do when it sees it runs under pytest.
REAL_KERNEL_ENV = {"PYTEST_CURRENT_TEST": None}


@pytest.fixture(scope="module")
def kernel() -> Any:
    harness = KernelHarness(env=REAL_KERNEL_ENV)
    harness.load_ipymcp()
    yield harness
    harness.shutdown()


# What a frontend shows in a cell; status and comm traffic are not outputs.
OUTPUT_TYPES = {"stream", "display_data", "update_display_data", "execute_result", "error", "clear_output"}


def frontend_messages(kernel: Any) -> list[dict[str, Any]]:
    """Every IOPub message the user's frontend got since the last call, up to a marker cell."""
    marker = kernel.kc.execute("pass", allow_stdin=True)  # as JupyterLab sends it
    seen = []
    while True:
        msg = kernel.kc.get_iopub_msg(timeout=30)
        if msg["parent_header"].get("msg_id") == marker:
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
            continue
        seen.append(msg)
    kernel.wait_idle(marker)
    return seen


def leaked_outputs(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Outputs and frontend requests, leaving out ipymcp's own status line (updated by display id)."""
    leaked = []
    for msg in messages:
        kind = msg["msg_type"]
        if kind == "update_display_data" and "ipymcp" in str(
            msg["content"].get("data", {}).get("text/plain", "")
        ):
            continue
        if kind in OUTPUT_TYPES or kind in ("colab_request", "input_request"):
            leaked.append((kind, str(msg["content"])[:200]))
    return leaked


async def test_agent_clear_output_clears_only_the_agents_output(kernel):
    kernel.run("print('the user keeps this')")
    frontend_messages(kernel)
    async with kernel.client() as c:
        result = await c.call_tool(
            "execute",
            {
                "code": "from IPython.display import clear_output\nprint('gone')\nclear_output()\nprint('kept')"
            },
        )
        waited = await c.call_tool(
            "execute",
            {"code": "print('old')\nclear_output(wait=True)\nprint('new')"},
        )
    assert not result.is_error and text_of(result) == "kept\n"
    assert text_of(waited) == "new\n"
    assert leaked_outputs(frontend_messages(kernel)) == []


async def test_every_agent_output_stays_in_the_capture_in_both_modes(kernel):
    frontend_messages(kernel)
    code = (
        "import sys\n"
        "from IPython.display import display, HTML, update_display\n"
        "print('out'); print('err', file=sys.stderr)\n"
        "handle = display(HTML('<b>first</b>'), display_id=True)\n"
        "handle.update(HTML('<b>second</b>'))\n"
        "'the value'"
    )
    async with kernel.client() as c:
        quiet = await c.call_tool("execute", {"code": code})
        cell = await c.call_tool("execute", {"code": code, "mode": "cell"})
        failed = await c.call_tool("execute", {"code": "1/0", "mode": "cell"})
    for result in (quiet, cell):
        text = text_of(result)
        assert "out" in text and "[stderr] err" in text and "second" in text and "'the value'" in text
        assert "first" not in text
    assert failed.is_error and "ZeroDivisionError" in text_of(failed)
    assert leaked_outputs(frontend_messages(kernel)) == []


async def test_subprocess_and_fd_level_output_belongs_to_the_agent(kernel):
    frontend_messages(kernel)
    code = (
        "import os, subprocess, sys\n"
        "os.system('echo from-os-system')\n"
        "subprocess.run(['echo', 'from-subprocess'])\n"
        # more than the pipe's 1000-byte reads, less than the answer's budget (the order of fd
        # output against the final value is the watcher thread's, so nothing may be cut)
        "os.system('head -c 15000 /dev/zero | tr \"\\\\0\" y; echo; echo last-line-of-a-big-output')\n"
        "os.write(2, b'straight-to-fd-2\\n')"
    )
    async with kernel.client() as c:
        result = await c.call_tool("execute", {"code": code})
    text = text_of(result)
    for line in ("from-os-system", "from-subprocess", "last-line-of-a-big-output", "straight-to-fd-2"):
        assert line in text, text[-500:]
    assert "ipymcp-drained" not in text
    assert leaked_outputs(frontend_messages(kernel)) == []
    assert kernel.run("import os; os.system('echo user-fd-output')")["stdout"].startswith("user-fd-output")


async def test_agent_input_fails_fast_with_a_clear_error(kernel):
    # The user's frontend allows stdin (as JupyterLab does): a request would wait for them forever.
    reply = kernel.wait_idle(kernel.kc.execute("print('stdin allowed')", allow_stdin=True))
    assert reply["content"]["status"] == "ok"
    frontend_messages(kernel)
    async with kernel.client() as c:
        for code in (
            "input('name? ')",
            "import getpass\ngetpass.getpass()",
            "get_ipython().kernel.raw_input('x? ')",
        ):
            started = time.monotonic()
            result = await c.call_tool("execute", {"code": code, "timeout": 20})
            assert result.is_error, code
            assert "StdinNotImplementedError" in text_of(result) and "agent" in text_of(result), text_of(
                result
            )
            assert time.monotonic() - started < 10, code
    assert leaked_outputs(frontend_messages(kernel)) == []
    assert kernel.run("print('user ok')")["stdout"] == "user ok\n"


async def test_a_user_thread_keeps_its_output_while_the_agent_runs(kernel):
    frontend_messages(kernel)
    started = kernel.kc.execute(
        "import threading, time\n"
        "from IPython.display import display\n"
        "def _ticker():\n"
        "    for i in range(40):\n"
        "        print(f'tick {i}', flush=True)\n"
        "        if i % 10 == 0:\n"
        "            display(f'shown {i}')\n"
        "        time.sleep(0.02)\n"
        "ticker = threading.Thread(target=_ticker)\n"
        "ticker.start()"
    )
    assert kernel.wait_idle(started)["content"]["status"] == "ok"
    async with kernel.client() as c:
        result = await c.call_tool("execute", {"code": "import time\nticker.join(5)\nprint('agent done')"})
    assert text_of(result) == "agent done\n"
    seen = frontend_messages(kernel)
    printed = "".join(m["content"]["text"] for m in seen if m["msg_type"] == "stream")
    shown = [m for m in seen if m["msg_type"] == "display_data"]
    # Everything the user's thread wrote before and during the agent's run reached the frontend.
    assert all(f"tick {i}\n" in printed for i in range(40)), printed
    assert len(shown) == 4


SLOW_AFTER_ERROR = """
import time
_kernel = get_ipython().kernel
_had_its_own = "_publish_status" in vars(_kernel)
_publish_status = _kernel._publish_status
def _slow_after_idle(status, *args, **kwargs):
    # The main thread is slow to come back to its event loop after the error's idle (GIL
    # contention from a server thread, a loaded machine) while the user's next cell is on its way.
    result = _publish_status(status, *args, **kwargs)
    if status == "idle":
        if _had_its_own:
            _kernel._publish_status = _publish_status
        else:
            del _kernel._publish_status
        time.sleep(0.5)
    return result
_kernel._publish_status = _slow_after_idle
1/0
"""


def run_until_idle(kernel: Any, code: str) -> str:
    """Send a cell and wait, as a frontend does, until IOPub says the kernel is idle again."""
    msg_id = kernel.kc.execute(code)
    while True:
        msg = kernel.kc.get_iopub_msg(timeout=30)
        if msg["parent_header"].get("msg_id") == msg_id and msg["content"].get("execution_state") == "idle":
            return msg_id


def test_a_cell_sent_after_an_error_is_not_aborted(kernel):
    """stop_on_error must cancel only the requests sent before the error was known.

    ipykernel before 6.29.3 (Colab pins 6.17.1) ends the abort one event-loop turn after the
    error; a request that arrives before that turn is aborted. ipymcp's threads make the turn
    late (1 to 9 in 40 tries right after %load_ext); the sleep here makes it late every time.
    """
    frontend_messages(kernel)
    for attempt in range(3):
        error = kernel.wait_idle(run_until_idle(kernel, SLOW_AFTER_ERROR))
        assert error["content"]["status"] == "error"
        follow_up = kernel.wait_idle(kernel.kc.execute("after_the_error = 1"))
        assert follow_up["content"]["status"] == "ok", (attempt, follow_up["content"])
