"""Accidents in agent code do not break the user's later cells.

An agent at the execute level can always end the kernel on purpose (``os._exit``); these are
the accidents that used to do it, or that silently broke the user's next cells.
"""

from __future__ import annotations

import threading
import time

import psutil
import pytest
from conftest import text_of

pytestmark = pytest.mark.compat


async def test_stdout_set_to_none_is_put_back(kernel):
    async with kernel.client() as c:
        result = await c.call_tool("execute", {"code": "import sys\nsys.stdout = None\nsys.stderr = None"})
        after = await c.call_tool("execute", {"code": "print('agent prints again')"})
    assert "sys.stdout" in text_of(result) and "restored" in text_of(result)
    assert text_of(after) == "agent prints again\n"
    user = kernel.run("import sys\nprint('user prints'); print('user warns', file=sys.stderr)")
    assert user["stdout"] == "user prints\n"
    assert any(
        m["content"].get("text") == "user warns\n" for m in user["outputs"] if m["msg_type"] == "stream"
    )


async def test_stdout_and_stderr_replaced_by_other_objects_are_put_back(kernel):
    code = (
        "import io, os, sys\n"
        "sys.stdout = io.StringIO()\n"
        "sys.stderr = open(os.devnull, 'w')\n"
        "print('into the void')"
    )
    async with kernel.client() as c:
        result = await c.call_tool("execute", {"code": code})
    assert "sys.stdout" in text_of(result) and "sys.stderr" in text_of(result)
    assert kernel.run("print('user prints')")["stdout"] == "user prints\n"


async def test_a_users_own_stdout_wrapper_is_left_alone(kernel):
    kernel.run(
        "import sys\n"
        "class UserTee:\n"
        "    def __init__(self, inner): self.inner, self.lines = inner, []\n"
        "    def write(self, text): self.lines.append(text); return self.inner.write(text)\n"
        "    def flush(self): self.inner.flush()\n"
        "    def __getattr__(self, name): return getattr(self.inner, name)\n"
        "user_tee = sys.stdout = UserTee(sys.stdout)"
    )
    try:
        async with kernel.client() as c:
            result = await c.call_tool("execute", {"code": "print('agent')"})
        assert text_of(result) == "agent\n"
        assert kernel.run("print(type(sys.stdout).__name__, user_tee.lines[-1:] != ['agent'])")["stdout"] == (
            "UserTee True\n"
        )
    finally:
        kernel.run("sys.stdout = user_tee.inner")


async def test_a_300_mb_print_is_cut_while_capturing(kernel):
    """The capture keeps head and tail within the output budget; it never holds the whole text."""
    process = psutil.Process(kernel.km.provisioner.process.pid)
    baseline = process.memory_info().rss
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        async with kernel.client() as c:
            result = await c.call_tool(
                "execute",
                {
                    "code": "for i in range(300):\n    print(f'{i:04d}' + 'x' * 999_991 + f'{i:04d}')",
                    "timeout": 120,
                },
            )
    finally:
        done.set()
        sampler.join()
    text = text_of(result)
    assert text.startswith("0000" + "x" * 1000) and "x" * 1000 + "0299\n" in text
    # 300 lines of 1 MB: the whole text was counted though not kept
    assert "300,000,000 characters" in text, text[-400:]
    # Holding the text (and joining it) took +570 MB; a bounded capture needs a few MB.
    assert peak - baseline < 150 * 2**20, f"peak RSS grew by {(peak - baseline) / 2**20:.0f} MB"


# The kernel-ending accidents come last: if one of them slips through, the module's kernel is gone.


async def test_exit_now_is_refused(kernel):
    async with kernel.client() as c:
        result = await c.call_tool("execute", {"code": "get_ipython().exit_now = True"})
        cell = await c.call_tool("execute", {"code": "get_ipython().exit_now = True", "mode": "cell"})
        after = await c.call_tool("execute", {"code": "'ipymcp still serving'"})
    for refused in (result, cell):
        assert refused.is_error and "shut down the user's kernel" in text_of(refused), text_of(refused)
    assert "ipymcp still serving" in text_of(after)
    assert kernel.run("print(get_ipython().exit_now)")["stdout"] == "False\n"


async def test_kernel_do_shutdown_is_refused(kernel):
    async with kernel.client() as c:
        result = await c.call_tool("execute", {"code": "get_ipython().kernel.do_shutdown(False)"})
        after = await c.call_tool("execute", {"code": "'ipymcp still serving'"})
    assert result.is_error and "shut down the user's kernel" in text_of(result), text_of(result)
    assert "ipymcp still serving" in text_of(after)
    assert kernel.run("print('user cell runs')")["stdout"] == "user cell runs\n"
