"""What the other tabs of a kernel receive while an agent works through the Jupyter tunnel.

The Jupyter server sends every IOPub message of a kernel to each of its websockets, so each tool
result sent through the tunnel reaches every browser tab and collaborator. Results are bounded
(``c.IPyMCP.tunnel_max_reply_bytes``): a bigger one is cut with a note for the agent, another
reply becomes an error sentence. A real jupyter server; the kernel has no HTTP listener and a
small limit (set the way a user sets it, before ``%load_ext``); another websocket plays the tab.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import text_of
from mcp.shared.exceptions import MCPError
from mcp.types import ImageContent
from remote_notebook import RemoteNotebook, module_server

from ipymcp.remote import connect_kernel
from ipymcp.remote.wire import Message
from ipymcp.server.tunnel_limit import bound_reply, json_size, shorten_text

LIMIT = 60_000

# Two noisy PNGs of ~60 KB base64 each, and 15,000 characters of text: ~135 KB in all.
IMAGES_AND_TEXT = """
import io, os
from IPython.display import Image, display
from PIL import Image as PILImage
def _noise():
    buffer = io.BytesIO()
    PILImage.frombytes("RGB", (130, 130), os.urandom(130 * 130 * 3)).save(buffer, "PNG")
    return Image(buffer.getvalue())
print("t" * 15_000)
display(_noise()); display(_noise())
ran_to_the_end = True
"""


server = module_server("tunnel-tabs")


@pytest.fixture(scope="module")
async def notebook(server: Any) -> Any:
    nb = RemoteNotebook(server, "tabs.ipynb")
    await nb.run(f"get_ipython().config.IPyMCP.tunnel_max_reply_bytes = {LIMIT}")
    await nb.load_ipymcp()
    yield nb
    nb.close()


class Tab:
    """A browser tab's view: the size of every tunnel message it receives."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def __call__(self, message: Message) -> None:
        data = message.content.get("data") if message.msg_type == "comm_msg" else None
        if isinstance(data, dict) and "jsonrpc" in data:
            self.sizes.append(json_size(message.content))


async def test_a_big_tool_result_is_cut_for_every_tab_and_the_agent_is_told_what_was_left_out(
    notebook: RemoteNotebook,
) -> None:
    user = await notebook.user()
    tab = Tab()
    user.listeners.append(tab)
    async with connect_kernel(notebook.endpoint, notebook.kernel_id) as kernel:
        result = await kernel.client.call_tool("execute", {"code": IMAGES_AND_TEXT})
    await user.close()
    text = text_of(result)
    assert not result.is_error
    assert "t" * 1000 in text  # the printed text came through
    assert not [block for block in result.content if isinstance(block, ImageContent)]
    assert "it was cut to pass through the Jupyter server" in text.replace("result was cut", "it was cut")
    assert "Left out: 2 images" in text and "c.IPyMCP.tunnel_max_reply_bytes" in text
    assert "The call itself completed" in text
    assert max(tab.sizes) <= LIMIT + 500  # the tab got the cut reply, not the 135 KB one (500: the envelope)
    assert (await notebook.run("print(ran_to_the_end)")).strip() == "True"


async def test_a_too_large_resource_is_answered_with_a_sentence_and_the_session_goes_on(
    notebook: RemoteNotebook,
) -> None:
    await notebook.run("print('u' * 80_000)")  # a user cell whose output the history keeps
    user = await notebook.user()
    tab = Tab()
    user.listeners.append(tab)
    async with connect_kernel(notebook.endpoint, notebook.kernel_id) as kernel:
        index = json.loads((await kernel.client.read_resource("ipymcp://history")).contents[0].text)
        count = next(entry["id"] for entry in index if "'u' * 80_000" in json.dumps(entry))
        with pytest.raises(MCPError, match=r"more than the 60,000 bytes that may pass through the Jupyter server"):
            await kernel.client.read_resource(f"ipymcp://history/{count}")
        status = await kernel.client.call_tool("kernel_status", {})
        assert not status.is_error
    await user.close()
    assert max(tab.sizes) <= LIMIT


# -- the cut itself (pure) -------------------------------------------------------------------------


def test_a_result_with_a_structured_part_too_large_is_cut_to_an_error_that_says_why() -> None:
    payload = {
        "jsonrpc": "2.0",
        "id": 7,
        "result": {"content": [{"type": "text", "text": "rows: 3"}], "structuredContent": {"rows": "r" * 90_000}},
    }
    cut = bound_reply(payload, LIMIT)
    assert cut is not None and json_size(cut) <= LIMIT
    assert cut["result"]["isError"] is True and "structuredContent" not in cut["result"]
    note = cut["result"]["content"][-1]["text"]
    assert "the structured result (90,0" in note and "marked as an error only because" in note
    assert cut["result"]["content"][0]["text"] == "rows: 3"


def test_long_text_keeps_its_head_and_tail_and_fits() -> None:
    text = "head-" + "\n" * 50_000 + "-tail"  # newlines cost two bytes each as JSON
    short = shorten_text(text, 10_000)
    assert short.startswith("head-") and short.endswith("-tail") and json_size(short) <= 10_000
    assert "characters cut" in short


def test_small_replies_and_a_zero_limit_pass_untouched_and_a_big_notification_is_dropped() -> None:
    small = {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "ok"}]}}
    big = {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "x" * 100_000}]}}
    assert bound_reply(small, LIMIT) is small
    assert bound_reply(big, 0) is big
    notification = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"message": "p" * 100_000}}
    assert bound_reply(notification, LIMIT) is None
    assert json.dumps(bound_reply(big, LIMIT)).count("x") < 60_000
