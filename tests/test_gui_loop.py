"""Agent code still runs when the kernel's main thread sits in a GUI event loop (%gui tk)."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
from conftest import KernelHarness, text_of

pytestmark = pytest.mark.skipif(shutil.which("Xvfb") is None, reason="needs Xvfb (make test installs it)")


@pytest.fixture
def display():
    number = ":93"
    server = subprocess.Popen(["Xvfb", number, "-nolisten", "tcp"], stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    yield number
    server.terminate()
    server.wait(5)


async def test_execute_runs_while_the_main_thread_is_in_the_tk_loop(display):
    kernel = KernelHarness(env={"DISPLAY": display})
    try:
        kernel.load_ipymcp()
        assert kernel.run("import tkinter\n%gui tk")["status"] == "ok"
        async with kernel.client() as c:
            started = time.monotonic()
            result = await c.call_tool("execute", {"code": "'ran under tk'", "timeout": 10})
            elapsed = time.monotonic() - started
            status = await c.call_tool("kernel_status", {})
        assert text_of(result).strip() == "'ran under tk'"
        assert elapsed < 5
        assert status.structured_content["features"]["gui_event_loop"] is True
        assert kernel.run("print('user cell under tk')")["stdout"] == "user cell under tk\n"
    finally:
        kernel.shutdown()
