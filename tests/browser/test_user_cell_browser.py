"""The user's running cell stays tracked, whatever the frontend sends while it runs (issue 12.1, 12.2).

A user cell sleeps in a real JupyterLab 4.6 / Notebook 7 page; meanwhile the frontend talks to the
kernel (the ipymcp view answering ``read_notebook``, a widget button clicked in the page, a silent
execute, an execute and a comm on subshells). ``kernel_status`` must still report that cell with
the number its prompt shows, ``execute`` must say it waits for that cell, and
``interrupt(target="user")`` must stop it. Kernels: the server's own (ipykernel 7: comms answer
on subshells while the cell runs) and ``.venvs/k6`` (ipykernel 6.29: everything queues behind it).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import harness
import pytest
from conftest import status_until, text_of, user_cell_running
from harness import NotebookPage, agent, compat_kernel, load_ipymcp, notebook_page, shutdown_kernels

pytestmark = pytest.mark.browser
server = harness.server
browser = harness.browser

LOAD = "%load_ext ipymcp"
SETUP = """\
import ipywidgets as widgets
from comm import get_comm_manager
clicks, probe_messages, subshell_runs = [], [], []
button = widgets.Button(description="Press me")
button.on_click(lambda _: clicks.append(1))
get_comm_manager().register_target(
    "celltrack.probe", lambda comm, _: comm.on_msg(lambda msg: probe_messages.append(msg["content"]["data"]))
)
button"""
SLEEPS = "import time; time.sleep(60)"
# ipykernel 7 handles a main-shell comm (a widget made by a main-shell cell) while an async cell
# awaits. Short awaits: ipykernel 7.4 cancels an async cell on SIGINT only once its loop wakes.
AWAITS = "import asyncio\nfor _ in range(600):\n    await asyncio.sleep(0.1)"
CELL_INDEX = {SLEEPS: 2, AWAITS: 3}
KERNEL = "window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"

# app, kernelspec (None: the server's own python3, ipykernel 7)
ENVIRONMENTS = {
    "lab-ipykernel7": ("lab", None),
    "lab-ipykernel6": ("lab", "ipymcp-k6"),
    "notebook7-ipykernel7": ("notebook", None),
}


@dataclass
class BusyNotebook:
    nb: NotebookPage
    info: dict[str, Any]
    subshells: bool


@pytest.fixture(scope="module", params=list(ENVIRONMENTS))
async def notebook(request: pytest.FixtureRequest, server: Any, browser: Any) -> Any:
    """One page per environment, shared by the traffic kinds: ipymcp loaded, the button shown."""
    app, kernel = ENVIRONMENTS[request.param]
    name = f"celltrack-{request.param}.ipynb"
    kernel = compat_kernel(kernel) if kernel else "python3"
    async with notebook_page(server, browser, app, name, [LOAD, SETUP, SLEEPS, AWAITS], kernel) as nb:
        info = await load_ipymcp(nb)
        await nb.run_cell(1)
        await nb.page.locator(".jp-NotebookPanel:visible .widget-button", has_text="Press me").wait_for(
            timeout=30_000
        )
        async with agent(info) as client:
            features = (await client.call_tool("kernel_status", {})).structured_content["features"]
        yield BusyNotebook(nb, info, features["subshells"])
    shutdown_kernels(server, name)


# -- what the frontend sends while the cell runs ---------------------------------------------------
# Each sends its traffic and returns a coroutine function that checks, once the cell has stopped,
# that the traffic was handled. Where the kernel has subshells it is handled while the cell runs,
# which the function checks first: otherwise the test would prove nothing.


async def read_notebook(env: BusyNotebook, client: Any) -> Any:
    read = asyncio.create_task(client.call_tool("read_notebook", {"include_outputs": False}))
    if env.subshells:
        await read  # the view answers on its comm subshell while the cell runs

    async def handled() -> None:
        result = await read  # ipykernel 6: the view's answer waited for the cell
        assert not result.is_error and SLEEPS in text_of(result), text_of(result)

    return handled


async def widget_click(env: BusyNotebook, client: Any) -> Any:
    before = await _length(client, "clicks")
    await env.nb.page.locator(".jp-NotebookPanel:visible .widget-button", has_text="Press me").click()
    if env.subshells:
        await _length_until(client, "clicks", before + 1)

    async def handled() -> None:
        await _length_until(client, "clicks", before + 1)

    return handled


async def silent_execute(env: BusyNotebook, client: Any) -> Any:
    # On the main shell a silent execute queues behind the cell, as the next user cell would.
    await env.nb.page.evaluate(
        f"""() => {{
        window.celltrackSilent = {KERNEL}.requestExecute(
            {{code: "subshell_runs.append('main silent')", silent: true, store_history: false}}
        ).done.then(reply => reply.content.status);
    }}"""
    )

    async def handled() -> None:
        # The interrupted cell's error aborts what was queued behind it (stop_on_error).
        assert await env.nb.page.evaluate("() => window.celltrackSilent") in ("ok", "aborted")

    return handled


async def subshell_execute(env: BusyNotebook, client: Any) -> Any:
    statuses = await env.nb.page.evaluate(
        f"""async () => {{
        const kernel = {KERNEL};
        const id = (await kernel.requestCreateSubshell({{}}).done).content.subshell_id;
        const run = (code, silent) => kernel.sendShellMessage({{
            header: {{msg_id: crypto.randomUUID(), msg_type: 'execute_request', session: kernel.clientId,
                     username: kernel.username, subshell_id: id, date: new Date().toISOString(), version: '5.2'}},
            parent_header: {{}}, metadata: {{}}, channel: 'shell', buffers: [],
            content: {{code, silent, store_history: false, user_expressions: {{}}, allow_stdin: false,
                      stop_on_error: false}}
        }}, true, true).done.then(reply => reply.content.status);
        const statuses = [await run("subshell_runs.append('silent')", true),
                          await run("subshell_runs.append('loud')", false)];
        await kernel.requestDeleteSubshell({{subshell_id: id}}, true).done;
        return statuses;
    }}"""
    )
    assert statuses == ["ok", "ok"]

    async def handled() -> None:
        pass

    return handled


async def subshell_comm(env: BusyNotebook, client: Any) -> Any:
    before = await _length(client, "probe_messages")
    subshell = await env.nb.page.evaluate(
        f"""async () => {{
        const comm = {KERNEL}.createComm('celltrack.probe');
        await comm.subshellStarted;
        await comm.open({{}}).done;
        await comm.send({{n: 1}}).done;
        comm.close();
        return comm.subshellId;
    }}"""
    )
    assert subshell, "the comm did not get its own subshell"
    await _length_until(client, "probe_messages", before + 1)

    async def handled() -> None:
        pass

    return handled


# traffic -> (what the frontend sends, the user's cell that runs meanwhile)
TRAFFIC = {
    "read_notebook": (read_notebook, SLEEPS),
    "widget_click": (widget_click, AWAITS),
    "silent_execute": (silent_execute, SLEEPS),
    "subshell_execute": (subshell_execute, SLEEPS),
    "subshell_comm": (subshell_comm, SLEEPS),
}
NEEDS_SUBSHELLS = {"subshell_execute", "subshell_comm"}


@pytest.mark.parametrize("traffic", list(TRAFFIC))
async def test_the_users_running_cell_survives_frontend_traffic_and_can_be_interrupted(
    notebook: BusyNotebook, traffic: str
) -> None:
    if traffic in NEEDS_SUBSHELLS and not notebook.subshells:
        pytest.skip("this kernel has no subshells (ipykernel < 7)")
    nb = notebook.nb
    send, code = TRAFFIC[traffic]
    async with agent(notebook.info) as client:
        await nb.run_cell(CELL_INDEX[code])
        try:
            await _traffic_then_interrupt(notebook, client, send, code)
        finally:
            await _stop_the_cell(nb, CELL_INDEX[code])  # a failed check must not hold up the next test


async def _traffic_then_interrupt(notebook: BusyNotebook, client: Any, send: Any, code: str) -> None:
    nb, index = notebook.nb, CELL_INDEX[code]
    head = code.splitlines()[0]
    count = (await user_cell_running(client, head))["user_cell"]["execution_count"]
    handled = await send(notebook, client)

    status = (await client.call_tool("kernel_status", {})).structured_content
    assert status["state"] == "busy", f"after {send.__name__}: {json.dumps(status.get('user_cell'))}"
    assert head in status["user_cell"]["code_head"] and status["user_cell"]["execution_count"] == count
    waited = await client.call_tool("execute", {"code": "1", "timeout": 1})
    assert waited.is_error and f"kernel busy: user cell [{count}] running" in text_of(waited), text_of(waited)

    answer = await client.call_tool("interrupt", {"target": "user"})
    assert not answer.is_error and f"cell [{count}]" in text_of(answer), text_of(answer)
    await nb.page.wait_for_function(f"() => {_CELL.format(index)}.model.executionCount !== null", timeout=10_000)
    outputs = " ".join(await nb.cells().nth(index).locator(".jp-OutputArea-output").all_inner_texts())
    assert "KeyboardInterrupt" in outputs or "CancelledError" in outputs, outputs
    # The number the agent was told is the one in the cell's prompt.
    assert await nb.page.evaluate(f"() => {_CELL.format(index)}.model.executionCount") == count
    await status_until(client, lambda s: s["state"] == "idle" and "user_cell" not in s)
    await handled()


_CELL = "window.jupyterapp.shell.currentWidget.content.widgets[{}]"


async def test_a_cell_the_agent_runs_in_the_notebook_is_the_agents_not_the_users(notebook: BusyNotebook) -> None:
    """execute_cell makes the notebook run a cell: while it runs, kernel_status, execute's wait
    sentence, interrupt and the history say it is the agent's run (they called it "user cell [n]")."""
    nb, index = notebook.nb, CELL_INDEX[SLEEPS]
    cell_id = await nb.page.evaluate(f"() => {_CELL.format(index)}.model.id")
    async with agent(notebook.info) as client:
        run = asyncio.create_task(client.call_tool("execute_cell", {"cell_id": cell_id, "timeout": 90}))
        try:
            status = await status_until(client, lambda s: "agent_cell" in s or "user_cell" in s)
            assert "user_cell" not in status, status  # nobody but the agent started a cell
            running = status["agent_cell"]
            assert running["cell_id"] == cell_id and "time.sleep(60)" in running["code_head"], running
            count = running["execution_count"]
            waited = await client.call_tool("execute", {"code": "1", "timeout": 1})
            assert f"notebook cell {cell_id} [{count}], run by the agent" in text_of(waited), text_of(waited)
            refused = await client.call_tool("interrupt", {"target": "user"})
            assert refused.is_error and "No user cell is running" in text_of(refused), text_of(refused)
            stopped = await client.call_tool("interrupt", {"target": "agent"})
            assert not stopped.is_error and f"notebook cell {cell_id} [{count}]" in text_of(stopped), text_of(stopped)
            ran = await run
            assert ran.is_error and "KeyboardInterrupt" in text_of(ran), text_of(ran)
            history = await client.call_tool("get_history", {"last": 3, "include_outputs": False, "source": "agent"})
            assert f"[In {count}] agent (notebook cell {cell_id})" in text_of(history), text_of(history)
            # The user's next run of the same cell is the user's again.
            await nb.run_cell(index)
            status = await user_cell_running(client, "import time")
            assert "agent_cell" not in status and status["user_cell"]["execution_count"] > count, status
        finally:
            if not run.done():
                run.cancel()
            await _stop_the_cell(nb, index)


async def _stop_the_cell(nb: NotebookPage, index: int) -> None:
    if await nb.page.evaluate(f"() => {_CELL.format(index)}.model.executionCount") is None:
        await nb.page.evaluate(f"() => {KERNEL}.interrupt()")
    await nb.page.wait_for_function(f"() => {KERNEL}.status === 'idle'", timeout=30_000)


async def _length(client: Any, name: str) -> int:
    preview = (await client.call_tool("inspect_variable", {"name": name})).structured_content
    return int(preview["length"])


async def _length_until(client: Any, name: str, length: int, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while await _length(client, name) < length:
        assert asyncio.get_running_loop().time() < deadline, f"{name} never reached {length} items"
        await asyncio.sleep(0.2)


RUNS_ONCE = "runs = globals().get('runs', 0) + 1\nimport time; time.sleep(6)\nprint('slow cell done, run', runs)"


async def test_a_page_reload_while_execute_cell_runs_says_the_cell_still_runs(server: Any, browser: Any) -> None:
    """The page that runs the agent's cell reloads mid-run. The agent must be told that the cell
    still runs in the kernel and not to run it again (a retry would run it twice), and where its
    outputs are: the notebook does not show them, the history does. It ran exactly once."""
    name = "reload-mid-run.ipynb"
    async with notebook_page(server, browser, "lab", name, [LOAD, RUNS_ONCE]) as nb:
        async with agent(await load_ipymcp(nb)) as client:
            cell_id = await nb.page.evaluate(f"() => {_CELL.format(1)}.model.id")
            run = asyncio.create_task(client.call_tool("execute_cell", {"cell_id": cell_id, "timeout": 60}))
            try:
                count = (await status_until(client, lambda s: "agent_cell" in s))["agent_cell"]["execution_count"]
                await nb.page.reload()
                result = await asyncio.wait_for(run, 20)  # the goodbye, not the 60 s timeout
                told = text_of(result)
                assert result.is_error and "still running in the kernel" in told and f"In [{count}]" in told, told
                assert "Do not run it again" in told and "retry" not in told, told
                await status_until(client, lambda s: s["state"] == "idle", timeout=30)
                history = await client.call_tool("get_history", {"last": 3, "source": "agent"})
                assert f"[In {count}] agent (notebook cell {cell_id})" in text_of(history), text_of(history)
                assert "slow cell done, run 1" in text_of(history), text_of(history)
                runs = await client.call_tool("execute", {"code": "runs"})
                assert text_of(runs).strip() == "1", text_of(runs)
                # What the agent was told about the notebook: the reloaded page shows no output there.
                await nb.page.wait_for_selector(".jp-NotebookPanel .jp-Cell .cm-content", timeout=60_000)
                read = await client.call_tool("read_notebook", {})
                assert read.structured_content["live"] and cell_id in text_of(read), text_of(read)
                assert "slow cell done, run 1" not in text_of(read), text_of(read)
            finally:
                if not run.done():
                    run.cancel()
    shutdown_kernels(server, name)


QUEUED_ONCE = (
    "queued_runs = globals().get('queued_runs', 0) + 1\nimport time; time.sleep(3)  # long enough to be seen running\n"
    "print('queued cell ran', queued_runs)"
)


async def test_a_page_reload_while_execute_cell_waits_in_the_kernels_queue_keeps_it_the_agents(
    server: Any, browser: Any
) -> None:
    """The agent's cell waits behind the user's running cell when the page reloads. The request is
    in the kernel's queue: the agent is told so (labelled a guess), and when the cell runs it is
    reported as the agent's cell, not the user's."""
    name = "reload-queued.ipynb"
    async with notebook_page(server, browser, "lab", name, [LOAD, "import time; time.sleep(8)", QUEUED_ONCE]) as nb:
        async with agent(await load_ipymcp(nb)) as client:
            cell_id = await nb.page.evaluate(f"() => {_CELL.format(2)}.model.id")
            await nb.run_cell(1)
            user = (await user_cell_running(client, "time.sleep(8)"))["user_cell"]
            run = asyncio.create_task(client.call_tool("execute_cell", {"cell_id": cell_id, "timeout": 60}))
            try:
                # The page has sent the execute_request: the cell shows [*] as it waits.
                await nb.cells().nth(2).locator(".jp-InputPrompt", has_text="*").wait_for(timeout=20_000)
                await nb.page.reload()
                result = await asyncio.wait_for(run, 20)
                told = text_of(result)
                assert result.is_error and "queued in the kernel" in told and "a guess" in told, told
                assert f"user cell [{user['execution_count']}]" in told and "retry" not in told, told
                status = await status_until(client, lambda s: "agent_cell" in s, timeout=30)
                assert status["agent_cell"]["cell_id"] == cell_id and "user_cell" not in status, status
                await status_until(client, lambda s: s["state"] == "idle", timeout=30)
                history = await client.call_tool("get_history", {"last": 3, "source": "agent"})
                assert f"agent (notebook cell {cell_id})" in text_of(history), text_of(history)
                assert "queued cell ran 1" in text_of(history), text_of(history)
            finally:
                if not run.done():
                    run.cancel()
    shutdown_kernels(server, name)
