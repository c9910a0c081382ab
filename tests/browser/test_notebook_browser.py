"""The agent reads and writes the cells the user sees, in real JupyterLab and Notebook 7 pages."""

from __future__ import annotations

import asyncio
import json
import time

import harness
import nbformat
import pytest
from conftest import text_of
from harness import NotebookPage, agent, load_ipymcp, new_notebook, notebook_page, shutdown_kernels
from mcp.types import ImageContent

pytestmark = pytest.mark.browser
# The fixtures live in harness.py (a second conftest.py would shadow tests/conftest.py).
server = harness.server
browser = harness.browser


def _version(package: str) -> tuple[int, ...]:
    from importlib.metadata import version

    return tuple(int(part) for part in version(package).split(".")[:2] if part.isdigit())


LOAD = "%load_ext ipymcp"
# ipykernel 7 + JupyterLab >= 4.4 handle comm messages on a subshell, even while a cell runs.
COMMS_WHILE_BUSY = _version("ipykernel") >= (7,) and _version("jupyterlab") >= (4, 4)
APPS = ["lab", "notebook"]


@pytest.mark.parametrize("app", APPS)
async def test_agent_inserts_and_runs_a_cell_and_the_user_sees_its_output(server, browser, app) -> None:
    name = f"insert-{app}.ipynb"
    async with notebook_page(server, browser, app, name, [LOAD]) as nb:
        info = await load_ipymcp(nb)
        async with agent(info) as client:
            result = await client.call_tool(
                "insert_cell", {"source": "print('hello from the agent', 6 * 7)", "execute": True}
            )
            assert not result.is_error, text_of(result)
            assert "hello from the agent 42" in text_of(result)
            await nb.wait_for_output("hello from the agent 42")
            assert (await nb.sources())[1] == "print('hello from the agent', 6 * 7)"
            await nb.screenshot(f"notebook-agent-{app}.png")

            status = json.loads(text_of(await client.call_tool("kernel_status", {})))["frontend"]
            assert status["extension"] == "connected" and status["notebook_tools"] == "live"
            assert [v["path"] for v in status["views"]] == [name]
            expected_app = "JupyterLab" if app == "lab" else "Jupyter Notebook"
            assert status["views"][0]["app"].startswith(expected_app)
    shutdown_kernels(server, name)


@pytest.mark.parametrize("app", APPS)
async def test_markdown_cell_inserted_by_the_agent_is_rendered(server, browser, app) -> None:
    name = f"markdown-{app}.ipynb"
    async with notebook_page(server, browser, app, name, [LOAD]) as nb:
        async with agent(await load_ipymcp(nb)) as client:
            result = await client.call_tool(
                "insert_cell",
                {"source": "# Agent heading\n\nSome *text*.", "cell_type": "markdown", "index": 0},
            )
            assert not result.is_error, text_of(result)
            heading = nb.page.locator(
                ".jp-NotebookPanel:visible .jp-MarkdownOutput h1", has_text="Agent heading"
            )
            await heading.wait_for(timeout=10_000)
            assert (await nb.sources())[0].startswith("# Agent heading")
    shutdown_kernels(server, name)


async def test_edit_move_and_delete_change_the_cells_the_user_sees(server, browser) -> None:
    name = "edit-move-delete.ipynb"
    async with notebook_page(server, browser, "lab", name, [LOAD]) as nb:
        async with agent(await load_ipymcp(nb)) as client:
            first = (await client.call_tool("insert_cell", {"source": "a = 1"})).meta["cell_id"]
            second = (await client.call_tool("insert_cell", {"source": "b = 2"})).meta["cell_id"]
            assert (await nb.sources())[1:] == ["a = 1", "b = 2"]

            edited = await client.call_tool("edit_cell", {"cell_id": first, "source": "a = 100"})
            assert not edited.is_error, text_of(edited)
            assert (await nb.sources())[1:] == ["a = 100", "b = 2"]
            await nb.page.locator(".jp-NotebookPanel:visible .cm-content", has_text="a = 100").wait_for()

            moved = await client.call_tool("move_cell", {"cell_id": second, "to_index": 0})
            assert not moved.is_error, text_of(moved)
            assert await nb.sources() == ["b = 2", LOAD, "a = 100"]

            deleted = await client.call_tool("delete_cell", {"cell_id": first})
            assert not deleted.is_error, text_of(deleted)
            assert await nb.sources() == ["b = 2", LOAD]
            await nb.page.locator(".jp-NotebookPanel:visible .cm-content", has_text="a = 100").wait_for(
                state="detached"
            )

            listing = text_of(await client.call_tool("read_notebook", {"include_outputs": False}))
            assert f"id {second}" in listing and "written by the agent" in listing and first not in listing
    shutdown_kernels(server, name)


async def test_read_notebook_returns_sources_outputs_and_images(server, browser) -> None:
    name = "read.ipynb"
    plot = (
        "import io\nfrom PIL import Image as P\nfrom IPython.display import Image, display\n"
        "buf = io.BytesIO(); P.new('RGB', (40, 30), (0, 90, 200)).save(buf, format='PNG')\n"
        "print('before the image'); display(Image(data=buf.getvalue()))"
    )
    async with notebook_page(server, browser, "notebook", name, [LOAD, plot]) as nb:
        async with agent(await load_ipymcp(nb)) as client:
            await nb.run_cell(1)
            await nb.wait_for_output("before the image")
            await nb.page.locator(".jp-NotebookPanel:visible .jp-OutputArea-output img").first.wait_for()
            result = await client.call_tool("read_notebook", {})
            text = text_of(result)
            assert not result.is_error, text
            assert "live from the open notebook view (Jupyter Notebook" in text
            assert LOAD in text and "print('before the image')" in text and "before the image\n" in text
            assert "In [2]" in text
            images = [b for b in result.content if isinstance(b, ImageContent)]
            assert len(images) == 1 and images[0].mime_type == "image/png"
            active = await client.call_tool("get_active_cell", {})
            assert not active.is_error, text_of(active)
    shutdown_kernels(server, name)


async def test_agent_reads_and_writes_while_the_users_cell_sleeps(server, browser) -> None:
    name = "busy.ipynb"
    async with notebook_page(
        server, browser, "lab", name, [LOAD, "import time; time.sleep(12); print('user done')"]
    ) as nb:
        async with agent(await load_ipymcp(nb)) as client:
            await nb.run_cell(1)
            busy_prompt = nb.cells().nth(1).locator(".jp-InputPrompt", has_text="[*]")
            await busy_prompt.wait_for(timeout=10_000)
            await asyncio.sleep(0.5)
            result = await client.call_tool("read_notebook", {"include_outputs": False})
            assert not result.is_error, text_of(result)
            assert "time.sleep(12)" in text_of(result)
            inserted = await client.call_tool("insert_cell", {"source": "x = 'agent while busy'"})
            assert not inserted.is_error, text_of(inserted)
            if COMMS_WHILE_BUSY:
                # Both answered while the user's cell was still running.
                assert await busy_prompt.count() == 1
            else:
                # No comm subshells (ipykernel 6 or JupyterLab < 4.4): they waited for the cell.
                assert await busy_prompt.count() == 0
            assert "x = 'agent while busy'" in await nb.sources()
            # Running a cell queues behind the user's cell, then returns its output.
            cell_id = inserted.meta["cell_id"]
            ran = await client.call_tool("execute_cell", {"cell_id": cell_id, "timeout": 60})
            assert not ran.is_error, text_of(ran)
            await nb.wait_for_output("user done")
    shutdown_kernels(server, name)


async def test_a_page_reload_reconnects_and_the_stale_view_is_dropped(server, browser) -> None:
    name = "reload.ipynb"
    async with notebook_page(server, browser, "notebook", name, [LOAD]) as nb:
        async with agent(await load_ipymcp(nb)) as client:
            assert not (await client.call_tool("read_notebook", {})).is_error
            reloaded = time.monotonic()
            await nb.reload()
            for _ in range(50):  # until the new page's view is connected
                status = json.loads(text_of(await client.call_tool("kernel_status", {})))["frontend"]
                if any(v["connected_s_ago"] < time.monotonic() - reloaded for v in status["views"]):
                    break
                await asyncio.sleep(0.1)
            # The old page said goodbye as it unloaded, or (if that last message was lost) does not
            # acknowledge the request: either way the call goes to the new page without a long wait.
            started = time.monotonic()
            result = await client.call_tool(
                "insert_cell", {"source": "print('after reload')", "execute": True}
            )
            assert not result.is_error, text_of(result)
            assert time.monotonic() - started < 10
            await nb.wait_for_output("after reload")
            status = json.loads(text_of(await client.call_tool("kernel_status", {})))["frontend"]
            assert len(status["views"]) == 1
    shutdown_kernels(server, name)


async def test_two_views_of_one_notebook_the_agent_writes_to_the_one_last_used(server, browser) -> None:
    name = "two-views.ipynb"
    async with notebook_page(server, browser, "lab", name, [LOAD]) as lab:
        async with agent(await load_ipymcp(lab)) as client:
            async with notebook_page(server, browser, "notebook", name) as classic:
                for _ in range(50):
                    status = json.loads(text_of(await client.call_tool("kernel_status", {})))["frontend"]
                    if len(status["views"]) == 2:
                        break
                    await asyncio.sleep(0.1)
                assert len(status["views"]) == 2
                # The Notebook 7 page connected last and nobody focused a view since: it is chosen.
                await client.call_tool("insert_cell", {"source": "# into the latest view"})
                assert "# into the latest view" in await classic.sources()
                assert "# into the latest view" not in await lab.sources()
                # The user clicks into the JupyterLab page: now that view is the one.
                await lab.cells().nth(0).locator(".cm-content").click()
                await asyncio.sleep(0.3)
                await client.call_tool("insert_cell", {"source": "# into the focused view"})
                assert "# into the focused view" in await lab.sources()
                assert "# into the focused view" not in await classic.sources()
    shutdown_kernels(server, name)


async def test_a_write_is_refused_after_the_user_edited_the_cell(server, browser) -> None:
    name = "stale.ipynb"
    async with notebook_page(server, browser, "lab", name, [LOAD]) as nb:
        async with agent(await load_ipymcp(nb)) as client:
            cell_id = (await client.call_tool("insert_cell", {"source": "total = 1"})).meta["cell_id"]
            await nb.type_into(1, "  # the user's comment")
            assert (await nb.sources())[1] == "total = 1  # the user's comment"
            refused = await client.call_tool("edit_cell", {"cell_id": cell_id, "source": "total = 2"})
            assert refused.is_error
            assert "the user changed this cell, read it again" in text_of(refused)
            assert (await nb.sources())[1] == "total = 1  # the user's comment"
            refused_delete = await client.call_tool("delete_cell", {"cell_id": cell_id})
            assert refused_delete.is_error and len(await nb.sources()) == 2

            await client.call_tool("read_notebook", {})
            accepted = await client.call_tool(
                "edit_cell", {"cell_id": cell_id, "source": "total = 2  # agent"}
            )
            assert not accepted.is_error, text_of(accepted)
            assert (await nb.sources())[1] == "total = 2  # agent"
    shutdown_kernels(server, name)


async def test_save_notebook_writes_the_agents_cells_with_provenance_to_disk(server, browser) -> None:
    name = "save.ipynb"
    async with notebook_page(server, browser, "notebook", name, [LOAD]) as nb:
        async with agent(await load_ipymcp(nb)) as client:
            await client.call_tool("insert_cell", {"source": "saved_by_agent = True"})
            saved = await client.call_tool("save_notebook", {})
            assert not saved.is_error and name in text_of(saved)
    on_disk = nbformat.read(server.root / name, as_version=4)
    cell = next(c for c in on_disk.cells if c.source == "saved_by_agent = True")
    provenance = cell.metadata["ipymcp"]
    assert provenance["by"] == "agent" and provenance["tool"] == "insert_cell"
    assert provenance.get("client")
    shutdown_kernels(server, name)


async def test_approval_prompt_in_the_notebook_allows_and_denies_the_agents_code(server, browser) -> None:
    name = "approve.ipynb"
    async with notebook_page(server, browser, "lab", name, [LOAD, "%mcp approve on"]) as nb:
        async with agent(await load_ipymcp(nb)) as client:
            await nb.run_cell(1)
            await nb.page.wait_for_function(
                "() => window.jupyterapp.shell.currentWidget.content.widgets[1].model.executionCount !== null"
            )
            dialog = nb.page.locator(".jp-Dialog", has_text="approve the agent")

            call = asyncio.create_task(
                client.call_tool("execute", {"code": "approved_value = 6 * 7; approved_value"})
            )
            await dialog.wait_for(timeout=20_000)
            assert "approved_value = 6 * 7" in await dialog.locator("pre").inner_text()
            await nb.screenshot("notebook-approval.png")
            await dialog.get_by_role("button", name="Allow", exact=True).click()
            result = await call
            assert not result.is_error and text_of(result).strip() == "42"

            call = asyncio.create_task(client.call_tool("execute", {"code": "import os; os.remove('x')"}))
            await dialog.wait_for(timeout=20_000)
            await dialog.get_by_role("button", name="Deny").click()
            result = await call
            assert result.is_error and "denied" in text_of(result)
    shutdown_kernels(server, name)


async def test_the_approval_dialog_shows_every_argument_in_full_scrollable_and_without_fences(
    server, browser
) -> None:
    name = "approve-detail.ipynb"
    hidden = "precious = 'stolen'"
    padded = "# just a comment, nothing to see\n" * 160 + "x = 1  # \u202e } hidden {\n" + hidden
    async with notebook_page(server, browser, "lab", name, [LOAD, "%mcp approve on"]) as nb:
        async with agent(await load_ipymcp(nb)) as client:
            await nb.run_cell(1)
            # %mcp approve on tells the truth: the prompt is this dialog, not the MCP client.
            await nb.wait_for_output("asked in a dialog in the notebook")
            dialog = nb.page.locator(".jp-Dialog", has_text="approve the agent")
            call = asyncio.create_task(client.call_tool("execute", {"code": padded, "mode": "cell"}))
            await dialog.wait_for(timeout=20_000)
            body = dialog.locator(".ipymcp-approval")
            text = await body.inner_text()
            assert hidden in text and "⟦U+202E RIGHT-TO-LEFT OVERRIDE⟧" in text and "\u202e" not in text
            assert "```" not in text
            assert 'mode: "cell"' in text  # every argument, not only the code
            scroll = await body.evaluate(
                "el => ({overflow: getComputedStyle(el).overflowY, more: el.scrollHeight > el.clientHeight})"
            )
            assert scroll == {"overflow": "auto", "more": True}  # the rest is a scroll away, not cut
            await body.evaluate("el => { el.scrollTop = el.scrollHeight; }")
            await nb.screenshot("notebook-approval-long.png")
            await dialog.get_by_role("button", name="Deny").click()
            result = await call
            assert result.is_error and "denied" in text_of(result)

            # An edit is shown as a diff against the source the agent read.
            assert not (await client.call_tool("read_notebook", {"include_outputs": False})).is_error
            cell_id = await nb.page.evaluate(
                "() => window.jupyterapp.shell.currentWidget.content.widgets[1].model.id"
            )
            call = asyncio.create_task(
                client.call_tool("edit_cell", {"cell_id": cell_id, "source": "%mcp approve off"})
            )
            await dialog.wait_for(timeout=20_000)
            diff = dialog.locator(".ipymcp-approval-diff")
            assert await diff.locator(".ipymcp-removed").inner_text() == "-%mcp approve on\n"
            assert await diff.locator(".ipymcp-added").inner_text() == "+%mcp approve off\n"
            await dialog.get_by_role("button", name="Deny").click()
            assert (await call).is_error
    shutdown_kernels(server, name)


async def test_after_a_kernel_restart_the_view_reconnects_to_the_new_ipymcp(server, browser) -> None:
    name = "restart.ipynb"
    async with notebook_page(server, browser, "lab", name, [LOAD]) as nb:
        first = await load_ipymcp(nb)
        await nb.page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.restartKernel()")
        await nb.page.wait_for_function(
            "() => window.jupyterapp.shell.currentWidget.sessionContext.session?.kernel?.status === 'idle'"
        )
        second = await load_ipymcp(nb)
        assert second["url"] != first["url"] or second["pid"] != first["pid"]
        async with agent(second) as client:
            result = await client.call_tool(
                "insert_cell", {"source": "print('after restart')", "execute": True}
            )
            assert not result.is_error, text_of(result)
            await nb.wait_for_output("after restart")
    shutdown_kernels(server, name)


async def test_jupyterlab_without_the_extension_falls_back_and_shows_the_activity_output(
    server, browser
) -> None:
    name = "no-extension.ipynb"
    path = new_notebook(server, name, [LOAD, "saved_cell = 1"])
    context = await browser.new_context(viewport={"width": 1200, "height": 800})
    # This page never loads the ipymcp labextension: a JupyterLab without it.
    await context.route("**/lab/extensions/ipymcp/**", lambda route: route.abort())
    page = await context.new_page()
    try:
        nb = await NotebookPage(server, page, "lab", name).open()
        async with agent(await load_ipymcp(nb)) as client:
            status = json.loads(text_of(await client.call_tool("kernel_status", {})))["frontend"]
            assert status["extension"] == "no-extension"  # closed back at once, not after 2 s
            read = await client.call_tool("read_notebook", {})
            assert not read.is_error and "SAVED FILE" in text_of(read) and "saved_cell = 1" in text_of(read)
            refused = await client.call_tool("edit_cell", {"cell_id": "x", "source": "y", "revision": "0"})
            assert refused.is_error and "extension is not active" in text_of(refused)
            ran = await client.call_tool("execute", {"code": "print('agent was here')"})
            assert text_of(ran).strip() == "agent was here"
            activity = nb.page.locator(".jp-OutputArea-output", has_text="Agent activity")
            await activity.filter(has_text="agent was here").wait_for(timeout=10_000)
        assert path.exists()
    finally:
        await context.close()
    shutdown_kernels(server, name)
