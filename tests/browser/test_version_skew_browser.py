"""The labextension next to an older or newer ipymcp in the kernel (version skew).

The labextension lives in the Jupyter server's environment, ipymcp in the kernel's: they can be
different releases. The kernel's side of the protocol is played here by a few lines run in a real
kernel (``comm`` targets, exactly the messages ``ipymcp/frontend/comm.py`` of that protocol sends):
an older ipymcp release cannot be installed here, and the scripted kernel checks the wire itself.

- Protocol 1 kernels take the first message carrying a request's id as its reply: the view must
  not send them an ack first, neither when the kernel announced itself nor after a page reload
  (then the view connects without having seen the announcement).
- A newer kernel may send an op this extension does not know: the reply says so with a code the
  kernel can test (``unknown_op``), besides the sentence.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import harness
import pytest
from harness import NotebookPage, notebook_page, shutdown_kernels

pytestmark = pytest.mark.browser
server = harness.server
browser = harness.browser

# The kernel side of protocol ``%d``: the view target, the announcement, every message the view sends.
SCRIPTED_KERNEL = """
import comm
_skew = {"views": [], "received": []}
def _skew_open(c, msg):
    _skew["views"].append(c)
    c.on_msg(lambda m: _skew["received"].append(m["content"]["data"]))
comm.get_comm_manager().register_target("ipymcp", _skew_open)
_skew["announce"] = comm.create_comm(target_name="ipymcp.announce", data={"protocol": %d})
"""

# Run code in the page's kernel outside any cell; returns what it printed.
KERNEL_EVAL = """async code => {
    const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
    const future = kernel.requestExecute({ code, store_history: false });
    let out = '';
    future.onIOPub = msg => {
        if (msg.header.msg_type === 'stream') out += msg.content.text;
        if (msg.header.msg_type === 'error') out += msg.content.ename + ': ' + msg.content.evalue;
    };
    await future.done;
    return out;
}"""


async def _kernel(nb: NotebookPage, code: str) -> str:
    return await nb.page.evaluate(KERNEL_EVAL, code)


async def _views(nb: NotebookPage, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while int(await _kernel(nb, "print(len(_skew['views']))") or 0) < n:
        assert time.monotonic() < deadline, f"the view did not open comm number {n}"
        await asyncio.sleep(0.2)


async def _request(nb: NotebookPage, request_id: int, op: str, timeout: float = 30) -> list[dict[str, Any]]:
    """Send ``op`` to the newest view; once its reply is in, every message the view sent with that id."""
    await _kernel(nb, f"_skew['views'][-1].send({{'id': {request_id}, 'op': {op!r}, 'args': {{}}}})")
    deadline = time.monotonic() + timeout
    while True:
        received = json.loads(await _kernel(nb, "import json; print(json.dumps(_skew['received']))"))
        mine = [m for m in received if m.get("id") == request_id]
        if any("ok" in m for m in mine):
            return mine
        assert time.monotonic() < deadline, f"no reply to {op}: {received}"
        await asyncio.sleep(0.2)


async def test_a_protocol_1_kernel_gets_replies_and_never_an_ack(server, browser) -> None:
    name = "skew-protocol-1.ipynb"
    async with notebook_page(server, browser, "lab", name, ["x = 1"]) as nb:
        assert "Error" not in await _kernel(nb, SCRIPTED_KERNEL % 1)
        await _views(nb, 1)  # connected when the kernel announced itself
        first = await _request(nb, 1, "read_notebook")
        assert first[0]["ok"] is True, first  # the first message with the id is the reply
        assert [c["source"] for c in first[0]["result"]["cells"]] == ["x = 1"]
        assert not any("ack" in m for m in first), first

        await nb.reload()  # the new page finds the kernel's announce comm (comm_info), sees no protocol
        await _views(nb, 2)
        again = await _request(nb, 2, "hello")
        assert again[0]["ok"] is True and again[0]["result"]["path"] == name, again
        again = await _request(nb, 3, "read_notebook")
        assert [m.get("ok") for m in again] == [True], again
    shutdown_kernels(server, name)


async def test_a_newer_kernel_learns_an_op_is_unknown_from_a_code(server, browser) -> None:
    name = "skew-protocol-3.ipynb"
    async with notebook_page(server, browser, "lab", name, ["x = 1"]) as nb:
        assert "Error" not in await _kernel(nb, SCRIPTED_KERNEL % 3)
        await _views(nb, 1)
        messages = await _request(nb, 1, "teleport")
        assert messages[0] == {"id": 1, "ack": True}, messages  # protocol >= 2: acknowledged at once
        reply = messages[-1]
        assert reply["ok"] is False and reply["code"] == "unknown_op", reply
        assert "unknown op teleport" in reply["error"] and "update the ipymcp labextension" in reply["error"]
    shutdown_kernels(server, name)
