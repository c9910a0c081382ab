"""Real-time collaboration (jupyter-collaboration): two people on one notebook, and an agent.

The server runs from .venvs/rtc (mk/frontend.mk), where jupyter-collaboration is installed: it
changes every notebook of the JupyterLab it is installed in, so the other browser suites keep a
plain JupyterLab. Two browser contexts are two collaborators; the user types in one while the
agent inserts, runs, edits and moves cells, first through the user's own view, then through the
collaborator's (its changes reach the user's view from the server).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import harness
import pytest
from conftest import text_of
from harness import (
    LabServer,
    NotebookPage,
    agent,
    load_ipymcp,
    new_notebook,
    shutdown_kernels,
    type_while,
    user_place,
)

pytestmark = pytest.mark.browser
browser = harness.browser

RTC_PYTHON = Path(__file__).resolve().parents[2] / ".venvs" / "rtc" / "bin" / "python"
LOAD = "%load_ext ipymcp"
TAGGED = ".jp-NotebookPanel:visible .jp-Cell.ipymcp-agent-cell"
NOTICE = ".jp-NotebookPanel:visible .ipymcp-share-notice"


class CollaborationServer(LabServer):
    python = str(RTC_PYTHON)


@pytest.fixture(scope="module")
def rtc_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if not RTC_PYTHON.exists():
        pytest.fail(f"{RTC_PYTHON} is missing: run `make .venvs/rtc/.installed` (make test-browser does)")
    root = tmp_path_factory.mktemp("collaboration") / "root"
    root.mkdir()
    jupyter = CollaborationServer(root)
    yield jupyter
    jupyter.stop()


async def _open(server: Any, browser: Any, name: str) -> NotebookPage:
    context = await browser.new_context(viewport={"width": 1200, "height": 800})
    return await NotebookPage(server, await context.new_page(), "lab", name).open()


async def _agent_adds_runs_edits_and_moves(client: Any, tag: str) -> list[str]:
    first = await client.call_tool("insert_cell", {"source": f"{tag} = 6 * 7\n{tag}", "index": 0, "execute": True})
    assert not first.is_error, text_of(first)
    second = await client.call_tool("insert_cell", {"source": f"print('{tag}', {tag})", "execute": True})
    assert not second.is_error and f"{tag} 42" in text_of(second), text_of(second)
    ran = await client.call_tool("execute_cell", {"cell_id": first.meta["cell_id"]})
    assert not ran.is_error, text_of(ran)
    edited = await client.call_tool("edit_cell", {"cell_id": first.meta["cell_id"], "source": f"{tag} = 42"})
    assert not edited.is_error, text_of(edited)
    moved = await client.call_tool("move_cell", {"cell_id": second.meta["cell_id"], "to_index": 0})
    assert not moved.is_error, text_of(moved)
    return [f"{tag} = 42", f"print('{tag}', {tag})"]


async def _active_id(page: NotebookPage) -> str:
    return await page.page.evaluate("() => window.jupyterapp.shell.currentWidget.content.activeCell.model.id")


async def test_collaborators_the_typing_user_keeps_every_keystroke_and_both_views_tag_the_agents_cells(
    rtc_server, browser
) -> None:
    name = "collaboration.ipynb"
    new_notebook(rtc_server, name, [LOAD, ""])
    user = await _open(rtc_server, browser, name)
    collaborator = await _open(rtc_server, browser, name)
    try:
        async with agent(await load_ipymcp(user)) as client:
            deadline = time.monotonic() + 20
            while len(json.loads(text_of(await client.call_tool("kernel_status", {})))["frontend"]["views"]) < 2:
                assert time.monotonic() < deadline, "the collaborator's view did not connect"
                await asyncio.sleep(0.1)
            await user.cells().nth(1).locator(".cm-content").click()
            users_cell = await _active_id(user)

            # 1. The agent addresses the view the user types in (focused last).
            work = asyncio.create_task(_agent_adds_runs_edits_and_moves(client, "mine"))
            typed = await type_while(user, work)
            agent_sources = await work

            # 2. The collaborator clicks into their view: the agent now works through it, and its
            # changes reach the user's view from the server while the user types on.
            await collaborator.cells().nth(0).locator(".cm-content").click()
            await asyncio.sleep(0.3)
            active = await client.call_tool("get_active_cell", {})
            assert active.structured_content["cell"]["id"] == await _active_id(collaborator)
            work = asyncio.create_task(_agent_adds_runs_edits_and_moves(client, "theirs"))
            typed += await type_while(user, work)
            agent_sources += await work

            expected = sorted([LOAD, typed, *agent_sources])
            for page in (user, collaborator):
                deadline = time.monotonic() + 10
                while sorted(await page.sources()) != expected and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
            place = await user_place(user)
            assert sorted(place["sources"]) == expected, place["sources"]  # no junk cells, no lost keys
            assert (place["mode"], place["active_id"], place["editor_focused"]) == ("edit", users_cell, True)
            assert sorted(await collaborator.sources()) == expected

            # Every view tags the agent's cells from their metadata, after the moves too.
            for page in (user, collaborator):
                tagged = page.page.locator(TAGGED)
                await tagged.nth(len(agent_sources) - 1).wait_for(timeout=5_000)
                assert await tagged.count() == len(agent_sources)
            # And shows the same banner.
            texts = [await page.page.locator(f"{NOTICE} span").inner_text() for page in (user, collaborator)]
            assert texts[0] == texts[1], texts
    finally:
        for page in (user, collaborator):
            await page.page.context.close()
        shutdown_kernels(rtc_server, name)
