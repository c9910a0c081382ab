"""`%mcp token` in a real JupyterLab page: a dialog with a Copy button, nothing in the saved notebook.

Issue 11 item 9: cell outputs are saved with the notebook (and shared with it), so the token is
shown in a dialog of the view (the labextension's ``show_token``), never as an output. Stop sharing
also forgets the remembered port and token.
"""

from __future__ import annotations

import asyncio
import json
import time

import harness
import pytest
from conftest import runtime_dir
from harness import load_ipymcp, notebook_page, runtime_info, shutdown_kernels

pytestmark = pytest.mark.browser
server = harness.server
browser = harness.browser

DIALOG = ".jp-Dialog .ipymcp-token"
# Capture what the Copy button puts on the clipboard (headless chromium has no system clipboard):
# a window listener sees the copy event after the extension's handler on <body> filled it.
CAPTURE_COPY = (
    "() => window.addEventListener('copy', e => { window.__ipymcpCopied = e.clipboardData.getData('text'); })"
)


async def _token_in_dialog(nb, cell: int) -> str:
    await nb.run_cell(cell)
    field = nb.page.locator(f"{DIALOG} .ipymcp-token-value")
    await field.wait_for(timeout=30_000)
    value = await field.input_value()
    await nb.page.locator(f"{DIALOG} .ipymcp-copy-token").click()
    copied = await nb.page.evaluate("() => window.__ipymcpCopied ?? null")
    assert copied == value
    await nb.screenshot(f"token-dialog-{cell}.png")
    await nb.page.locator(".jp-Dialog button", has_text="Close").click()
    await field.wait_for(state="detached", timeout=10_000)
    return value


async def test_mcp_token_shows_a_dialog_and_the_saved_notebook_holds_no_token(server, browser) -> None:
    name = "token-dialog.ipynb"
    cells = ["%load_ext ipymcp", "%mcp token", "%mcp config vscode", "%mcp token --rotate", "%mcp"]
    async with notebook_page(server, browser, "lab", name, cells) as nb:
        await nb.page.evaluate(CAPTURE_COPY)
        info = await load_ipymcp(nb)
        kernel_id = await nb.kernel_id()
        assert await _token_in_dialog(nb, 1) == info["token"]
        await nb.wait_for_output("shown in a dialog")
        await nb.run_cell(2)
        await nb.wait_for_output("${input:ipymcp-token}")
        rotated = await _token_in_dialog(nb, 3)
        assert rotated != info["token"] and rotated == (await runtime_info(kernel_id))["token"]
        await nb.run_cell(4)
        await nb.wait_for_output("permissions:")
        await nb.page.evaluate("() => window.jupyterapp.shell.currentWidget.context.save()")
        saved = (server.root / name).read_text()
        assert "shown in a dialog" in saved  # the outputs are there…
        for token in (info["token"], rotated):  # …and no token in them
            assert token[:12] not in saved and token[-12:] not in saved

        # Stop sharing: the server stops and its remembered port and token are forgotten.
        def remembered() -> list[str]:
            return [p.name for p in runtime_dir().glob("remember-*.json") if rotated in p.read_text()]

        assert remembered()
        await nb.page.locator(".jp-NotebookPanel:visible .ipymcp-stop-sharing").click()
        deadline = time.monotonic() + 20
        while (runtime_dir() / f"kernel-{kernel_id}.json").exists() or remembered():
            assert time.monotonic() < deadline, remembered()
            await asyncio.sleep(0.2)
        assert json.loads((server.root / name).read_text())["metadata"].get("ipymcp") is None
    shutdown_kernels(server, name)
