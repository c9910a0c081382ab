"""A real Jupyter server (serving JupyterLab at /lab and Notebook 7 at /notebooks) with the ipymcp
labextension installed, headless Debian chromium driven by Playwright, and the agent as a real
``mcp.Client`` over HTTP (URL and token from the kernel's runtime file).

The Jupyter directories are the test session's private ones (tests/conftest.py). Not a
conftest.py: a second module named ``conftest`` would shadow tests/conftest.py for the other suites.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import mcp_client, runtime_dir
from real_jupyter import JupyterServer

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
SCREENSHOTS = Path(os.environ.get("IPYMCP_SCREENSHOTS", "")) if os.environ.get("IPYMCP_SCREENSHOTS") else None
# Kernels besides the server's own python3 (ipykernel 7): name -> interpreter (mk/compat.mk builds them).
REPO = Path(__file__).resolve().parents[2]
COMPAT_KERNELS = {"ipymcp-k6": REPO / ".venvs" / "k6" / "bin" / "python"}


def compat_kernel(name: str) -> str:
    """The kernelspec ``name`` (ipykernel 6.29 for ``ipymcp-k6``), or a failure that says how to build it."""
    if not COMPAT_KERNELS[name].exists():
        pytest.fail(f"{COMPAT_KERNELS[name]} is missing: run `make .venvs/k6/.installed` (make test-browser does)")
    return name


def _write_compat_kernelspecs() -> None:
    """Kernelspecs for the compat environments, in the test session's private Jupyter data dir."""
    for name, python in COMPAT_KERNELS.items():
        spec_dir = Path(os.environ["JUPYTER_DATA_DIR"]) / "kernels" / name
        spec_dir.mkdir(parents=True, exist_ok=True)
        spec = {
            "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"Python 3 ({python.parents[1].name})",
            "language": "python",
        }
        (spec_dir / "kernel.json").write_text(json.dumps(spec))


class LabServer(JupyterServer):
    """JupyterLab and Notebook 7 (both served by ``python -m jupyterlab``), no news toast."""

    def __init__(self, root: Path):
        # No "would you like to get notified about official Jupyter news?" toast over the notebook.
        settings = (
            Path(os.environ["JUPYTER_CONFIG_DIR"]) / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
        )
        settings.mkdir(parents=True, exist_ok=True)
        (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
        _write_compat_kernelspecs()
        super().__init__(
            root,
            module="jupyterlab",
            extra_args=(
                "--LabApp.expose_app_in_browser=True",
                "--JupyterNotebookApp.expose_app_in_browser=True",
                "--LabApp.news_url=",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                "--ServerApp.disable_check_xsrf=True",
            ),
        )

    def url(self, app: str, name: str) -> str:
        if app == "lab":
            return f"{self.base}/lab/tree/{name}?reset&token={self.token}"
        return f"{self.base}/notebooks/{name}?token={self.token}"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("browser") / "root"
    root.mkdir()
    jupyter = LabServer(root)
    yield jupyter
    jupyter.stop()


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


def new_notebook(server: JupyterServer, name: str, cells: list[str], kernel: str = "python3") -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    path = server.root / name
    nbformat.write(nb, path)
    return path


class NotebookPage:
    """One browser page showing one notebook, and what a user does in it."""

    def __init__(self, server: JupyterServer, page: Any, app: str, name: str):
        self.server, self.page, self.app, self.name = server, page, app, name

    async def open(self) -> NotebookPage:
        await self.page.goto(self.server.url(self.app, self.name))
        await self.page.wait_for_selector(".jp-NotebookPanel .jp-Cell .cm-content", timeout=60_000)
        await self.page.wait_for_function(
            "() => { const w = window.jupyterapp?.shell?.currentWidget;"
            " return w?.sessionContext?.session?.kernel?.status === 'idle'; }",
            timeout=60_000,
        )
        return self

    async def reload(self) -> None:
        await self.page.reload()
        await self.page.wait_for_selector(".jp-NotebookPanel .jp-Cell .cm-content", timeout=60_000)
        await self.page.wait_for_function(
            "() => window.jupyterapp?.shell?.currentWidget?.sessionContext?.session?.kernel?.status === 'idle'",
            timeout=60_000,
        )

    def cells(self) -> Any:
        return self.page.locator(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell")

    async def run_cell(self, index: int) -> None:
        """Click into cell ``index``'s editor and press Ctrl+Enter (run in place), as a user does."""
        await self.cells().nth(index).locator(".cm-content").click()
        await self.page.keyboard.press("Control+Enter")

    async def type_into(self, index: int, text: str) -> None:
        editor = self.cells().nth(index).locator(".cm-content")
        await editor.click()
        await self.page.keyboard.press("Control+End")
        await self.page.keyboard.type(text)

    async def kernel_id(self) -> str:
        return await self.page.evaluate(
            "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.id"
        )

    async def sources(self) -> list[str]:
        return await self.page.evaluate(
            "() => window.jupyterapp.shell.currentWidget.content.widgets.map(c => c.model.sharedModel.getSource())"
        )

    async def wait_for_output(self, text: str, timeout: float = 30_000) -> None:
        await self.page.locator(
            ".jp-NotebookPanel:visible .jp-OutputArea-output", has_text=text
        ).first.wait_for(timeout=timeout)

    async def screenshot(self, name: str) -> None:
        if SCREENSHOTS is None:
            return
        if self.app == "lab":
            await self.page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
        await asyncio.sleep(0.5)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(SCREENSHOTS / name))


async def load_ipymcp(nb: NotebookPage, timeout: float = 60) -> dict[str, Any]:
    """Run the %load_ext cell (cell 0) in the browser; return the kernel's runtime info."""
    await nb.run_cell(0)
    await nb.wait_for_output("MCP server ready", timeout=timeout * 1000)
    return await runtime_info(await nb.kernel_id(), timeout)


async def runtime_info(kernel_id: str, timeout: float = 60) -> dict[str, Any]:
    """The kernel's runtime file, once ipymcp in it has written it."""
    path = runtime_dir() / f"kernel-{kernel_id}.json"
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"ipymcp did not start in kernel {kernel_id}: no {path}")
        await asyncio.sleep(0.1)
    return json.loads(path.read_text())


@asynccontextmanager
async def agent(info: dict[str, Any]) -> AsyncIterator[Any]:
    async with mcp_client(info["url"], info["token"]) as client:
        yield client


@asynccontextmanager
async def notebook_page(
    server: JupyterServer, browser: Any, app: str, name: str, cells: list[str] | None = None, kernel: str = "python3"
) -> AsyncIterator[NotebookPage]:
    if cells is not None:
        new_notebook(server, name, cells, kernel)
    context = await browser.new_context(viewport={"width": 1200, "height": 800})
    page = await context.new_page()
    try:
        yield await NotebookPage(server, page, app, name).open()
    finally:
        await context.close()


def shutdown_kernels(server: JupyterServer, name: str) -> None:
    for session in server.api("GET", "/api/sessions"):
        if session.get("path") == name:
            server.api("DELETE", f"/api/sessions/{session['id']}")


# -- the user at the keyboard while the agent works (issue 12 item 8) ------------------------------
# Words only: no brackets or quotes (the editor closes them), no newline (it indents). In command
# mode nearly every one of these letters is a shortcut (a, b: new cells; d d: delete; m: markdown).
WORDS = "the quick brown fox jumps over a lazy dog and types on while an agent adds cells".split()


async def user_place(nb: NotebookPage) -> dict[str, Any]:
    """Mode, active cell, whether the editor has the keyboard, and the cells as the page has them."""
    return await nb.page.evaluate(
        """() => {
            const nb = window.jupyterapp.shell.currentWidget.content;
            const cell = nb.activeCell;
            return {
                mode: nb.mode,
                active_id: cell ? cell.model.id : null,
                editor_focused: !!(cell && cell.editor && cell.editor.hasFocus()),
                selected: nb.widgets.filter(w => nb.isSelected(w)).map(w => w.model.id),
                sources: nb.widgets.map(w => w.model.sharedModel.getSource()),
            };
        }"""
    )


async def type_while(nb: NotebookPage, work: asyncio.Task) -> str:
    """Type word after word, as a user does, until the agent's work is done; return what was typed."""
    typed = ""
    for word in itertools.cycle(WORDS):
        text = word + " "
        await nb.page.keyboard.type(text, delay=15)
        typed += text
        if work.done():
            return typed
    raise AssertionError("unreachable")
