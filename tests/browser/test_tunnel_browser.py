"""JupyterLab open on a notebook while an agent works in its kernel through the Jupyter tunnel.

The kernel runs ipymcp with no HTTP listener; the agent reaches it only through the Jupyter
server (``ipymcp.remote.connect_kernel``). While the user's cell runs, JupyterLab's own kernel
status (``kernel.status``, which drives the toolbar's indicator) and the server's REST
``execution_state`` stay busy while the agent connects, calls tools and leaves; the agent's
inserted cell still appears (the labextension's comm and the tunnel share the kernel). ipymcp's
server extension is enabled in this environment (``jupyter-config/``); without it every call
flips the indicator to idle (``benchmarks/bench_tunnel.py`` measures both).
"""

from __future__ import annotations

import json
from typing import Any

import harness
import pytest
from conftest import text_of
from harness import notebook_page, shutdown_kernels

from ipymcp.remote import Endpoint, connect_kernel

pytestmark = pytest.mark.browser
server = harness.server
browser = harness.browser

LOAD = "get_ipython().config.IPyMCP.serve_http = False\n%load_ext ipymcp"
KERNEL = "window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"

# Every status JupyterLab's kernel connection takes, and every IOPub status it receives with the
# session and type of the request it answers (to tell the tunnel's traffic from JupyterLab's own).
RECORD = f"""() => {{
  const kernel = {KERNEL};
  window.__taken = [kernel.status];
  window.__received = [];
  kernel.statusChanged.connect((_, status) => window.__taken.push(status));
  kernel.iopubMessage.connect((_, msg) => {{
    if (msg.header.msg_type === 'status') {{
      window.__received.push({{session: msg.parent_header.session, type: msg.parent_header.msg_type,
                              state: msg.content.execution_state}});
    }}
  }});
}}"""


async def taken(nb: Any) -> list[str]:
    return await nb.page.evaluate("() => window.__taken")


async def test_the_agent_works_through_the_tunnel_and_the_indicator_stays_busy(server, browser) -> None:
    name = "tunnel-indicator.ipynb"
    cells = [LOAD, "import time; time.sleep(60); print('user done')"]
    async with notebook_page(server, browser, "lab", name, cells) as nb:
        page_config = json.loads(await nb.page.locator("#jupyter-config-data").text_content())
        untracked = json.loads(page_config["untracked_message_types"]) if isinstance(
            page_config["untracked_message_types"], str) else page_config["untracked_message_types"]  # fmt: skip
        assert "ipymcp_msg" in untracked and "comm_msg" not in untracked  # widgets' activity still shows

        await nb.run_cell(0)
        await nb.wait_for_output("reachable only through Jupyter", timeout=60_000)
        endpoint = Endpoint(server.base, token=server.token)
        kernel_id = await nb.kernel_id()
        await nb.run_cell(1)
        running = nb.cells().nth(1).locator(".jp-InputPrompt", has_text="[*]")
        await running.wait_for(timeout=10_000)
        await nb.page.wait_for_function(f"() => {KERNEL}.status === 'busy'")
        await nb.page.evaluate(RECORD)
        lab_session = await nb.page.evaluate(f"() => {KERNEL}.clientId")

        async with connect_kernel(endpoint, kernel_id) as agent:
            listed = await agent.client.call_tool("list_variables", {})
            assert not listed.is_error, text_of(listed)
            for _ in range(5):
                status = await agent.client.call_tool("kernel_status", {})
                assert status.structured_content["state"] == "busy"
            assert server.api("GET", f"/api/kernels/{kernel_id}")["execution_state"] == "busy"
        # Connecting (a subshell, the session's open), ten calls, leaving: the tab never showed idle.
        assert set(await taken(nb)) == {"busy"}, await taken(nb)
        assert server.api("GET", f"/api/kernels/{kernel_id}")["execution_state"] == "busy"

        async with connect_kernel(endpoint, kernel_id) as agent:
            inserted = await agent.client.call_tool("insert_cell", {"source": "x = 'from the agent, via Jupyter'"})
            assert not inserted.is_error, text_of(inserted)
        assert "x = 'from the agent, via Jupyter'" in await nb.sources()
        assert await running.count() == 1  # the user's cell runs on
        # Inserting a cell is a request to the labextension, whose comm replies JupyterLab counts
        # as kernel activity like any comm's (over HTTP too; README "Remote kernels"). The tunnel's
        # own traffic never moves the indicator: every status it took came from JupyterLab's session.
        received = await nb.page.evaluate("() => window.__received")
        moved_it = {(r["session"], r["type"]) for r in received if r["type"] not in untracked}
        assert {session for session, _ in moved_it} <= {lab_session}, moved_it
        assert any(r["session"] != lab_session and r["type"] == "ipymcp_msg" for r in received)  # the agent's calls
    shutdown_kernels(server, name)
