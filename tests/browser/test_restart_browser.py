"""restart_kernel and the persistent opt-in (%mcp share on|off) in a real JupyterLab page."""

from __future__ import annotations

import asyncio
import json
import time

import harness
import pytest
from conftest import answered_by_a_new_kernel, runtime_dir, text_of
from harness import agent, load_ipymcp, new_notebook, notebook_page, runtime_info, shutdown_kernels

pytestmark = pytest.mark.browser
server = harness.server
browser = harness.browser

LOAD = "%load_ext ipymcp"
NOTICE = ".jp-NotebookPanel:visible .ipymcp-share-notice"
METADATA = "() => window.jupyterapp.shell.currentWidget.context.model.getMetadata('ipymcp') ?? null"


async def _gone(kernel_id: str, timeout: float = 20) -> None:
    path = runtime_dir() / f"kernel-{kernel_id}.json"
    deadline = time.monotonic() + timeout
    while path.exists():
        assert time.monotonic() < deadline, "ipymcp is still running"
        await asyncio.sleep(0.2)


async def test_agent_restarts_the_kernel_and_ipymcp_is_back_at_the_same_url(server, browser) -> None:
    name = "agent-restart.ipynb"
    async with notebook_page(server, browser, "lab", name, [LOAD, "before = 41"]) as nb:
        info = await load_ipymcp(nb)
        kernel_id = await nb.kernel_id()
        await nb.run_cell(1)
        async with agent(info) as client:
            for _ in range(50):
                names = json.loads(text_of(await client.call_tool("list_variables", {})))["variables"]
                if any(row["name"] == "before" for row in names):
                    break
                await asyncio.sleep(0.2)
            result = await client.call_tool("restart_kernel", {})
            assert not result.is_error, text_of(result)
            assert "JupyterLab" in text_of(result)

        status = await answered_by_a_new_kernel(info["url"], info["token"], info["pid"])
        assert status["kernel_id"] == kernel_id == await nb.kernel_id()  # restarted, not replaced
        notice = nb.page.locator(NOTICE)
        await notice.filter(has_text="after the kernel restart").wait_for(timeout=20_000)
        await nb.screenshot("restart-notice.png")
        async with agent(info) as client:  # the same URL and token
            gone = await client.call_tool("execute", {"code": "'before' in dir()"})
            assert text_of(gone).strip() == "False"
            ran = await client.call_tool("execute", {"code": "print('after', 6 * 7)"})
            assert not ran.is_error and text_of(ran).strip() == "after 42"
    shutdown_kernels(server, name)


async def test_a_shared_notebook_is_shared_again_when_reopened_until_sharing_is_turned_off(
    server, browser
) -> None:
    name = "shared.ipynb"
    path = new_notebook(server, name, [LOAD, "%mcp share on", "%mcp share off"])

    # 1. The user opts in and saves.
    async with notebook_page(server, browser, "lab", name) as nb:
        first = await load_ipymcp(nb)
        await nb.run_cell(1)
        await nb.wait_for_output("is shared")
        assert await nb.page.evaluate(METADATA) == {"share": True}
        await nb.page.evaluate("() => window.jupyterapp.shell.currentWidget.context.save()")
    shutdown_kernels(server, name)
    on_disk = json.loads(path.read_text())["metadata"]
    assert on_disk["ipymcp"] == {"share": True} and first["token"] not in path.read_text()

    # 2. Reopened: ipymcp is loaded by the extension, with the notice; same URL and token.
    async with notebook_page(server, browser, "lab", name) as nb:
        kernel_id = await nb.kernel_id()
        info = await runtime_info(kernel_id)
        await nb.page.locator(NOTICE).filter(has_text="shared").wait_for(timeout=20_000)
        await nb.page.locator(f"{NOTICE} .ipymcp-stop-sharing").wait_for(state="visible")
        assert (info["url"], info["token"]) == (first["url"], first["token"])
        async with agent(info) as client:
            ran = await client.call_tool("execute", {"code": "6 * 7"})
            assert text_of(ran).strip() == "42"
        # 3. %mcp share off: stops the server and removes the opt-in.
        await nb.run_cell(2)
        await _gone(kernel_id)
        assert await nb.page.evaluate(METADATA) is None
        await nb.page.locator(NOTICE).wait_for(state="detached", timeout=10_000)
        await nb.page.evaluate("() => window.jupyterapp.shell.currentWidget.context.save()")
    shutdown_kernels(server, name)
    assert "ipymcp" not in json.loads(path.read_text())["metadata"]

    # 4. Reopened after share off: not shared. Opting in again, then the notice's Stop sharing.
    async with notebook_page(server, browser, "lab", name) as nb:
        kernel_id = await nb.kernel_id()
        await asyncio.sleep(3)
        assert not (runtime_dir() / f"kernel-{kernel_id}.json").exists()
        assert await nb.page.locator(NOTICE).count() == 0
        await load_ipymcp(nb)
        await nb.run_cell(1)
        await nb.wait_for_output("is shared")
        button = nb.page.locator(f"{NOTICE} .ipymcp-stop-sharing")
        await button.click()
        await _gone(kernel_id)
        assert await nb.page.evaluate(METADATA) is None
        await nb.page.locator(NOTICE).wait_for(state="detached", timeout=10_000)
    shutdown_kernels(server, name)
