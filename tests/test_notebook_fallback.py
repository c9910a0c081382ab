"""The notebook tools with no ipymcp labextension: a plain jupyter_client frontend (like VS Code or
a JupyterLab without the extension) — detection, the .ipynb-on-disk fallback, the activity output."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import KernelHarness, text_of
from mcp.types import ImageContent

pytestmark = pytest.mark.compat


def _png() -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 30, 30)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _write_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Saved title"),
        nbformat.v4.new_code_cell(
            "plot()",
            execution_count=3,
            outputs=[
                nbformat.v4.new_output("stream", name="stdout", text="saved output line\n"),
                nbformat.v4.new_output("display_data", data={"image/png": _png(), "text/plain": "<Figure>"}),
            ],
        ),
    ]
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A kernel whose frontend ignores comms (jupyter_client), with a known notebook file."""
    root = tmp_path_factory.mktemp("nbroot")
    notebook = root / "analysis.ipynb"
    _write_notebook(notebook)
    harness = KernelHarness(cwd=root, env={"JPY_SESSION_NAME": str(notebook)})
    load = harness.run("%load_ext ipymcp")
    harness.load_outputs = load["outputs"]
    harness.load_ipymcp()  # a second %load_ext is a no-op; fetches url + token
    harness.notebook = notebook
    yield harness
    harness.shutdown()


def _drain_iopub(harness: KernelHarness, until: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = harness.kc.get_iopub_msg(timeout=0.2)
        except Exception:  # noqa: BLE001 - queue.Empty
            continue
        seen.append(msg)
        if until(msg):
            return seen
    raise AssertionError(f"no matching IOPub message; saw {[m['msg_type'] for m in seen]}")


def test_load_ext_announces_itself_on_a_comm(plain: KernelHarness) -> None:
    opens = [m for m in plain.load_outputs if m["msg_type"] == "comm_open"]
    assert [m["content"]["target_name"] for m in opens] == ["ipymcp.announce"]
    assert opens[0]["content"]["data"] == {"protocol": 2}


async def test_kernel_status_reports_no_extension_when_no_view_connects(plain: KernelHarness) -> None:
    deadline = time.monotonic() + 15
    async with plain.client() as client:
        while True:  # the detection window after %load_ext is ~2 s
            status = json.loads(text_of(await client.call_tool("kernel_status", {})))
            if status["frontend"]["extension"] != "detecting" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    frontend = status["frontend"]
    assert frontend["extension"] == "no-extension"
    assert frontend["notebook_tools"].startswith("read-only")
    assert frontend["views"] == []
    assert frontend["activity_output"] is True
    assert "extension" in frontend["why"]


async def test_read_notebook_falls_back_to_the_saved_file_and_says_it_may_be_stale(
    plain: KernelHarness,
) -> None:
    async with plain.client() as client:
        result = await client.call_tool("read_notebook", {})
    text = text_of(result)
    assert not result.is_error, text
    assert "SAVED FILE" in text and "stale" in text
    assert "# Saved title" in text and "plot()" in text and "saved output line" in text
    assert "In [3]" in text
    assert [type(b) for b in result.content if isinstance(b, ImageContent)] == [ImageContent]


async def test_read_notebook_without_outputs_pages_through_cells(plain: KernelHarness) -> None:
    async with plain.client() as client:
        result = await client.call_tool("read_notebook", {"include_outputs": False, "start": 1, "limit": 1})
    text = text_of(result)
    assert "plot()" in text and "# Saved title" not in text
    assert "saved output line" not in text and "2 output(s) not included" in text


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("edit_cell", {"cell_id": "abc", "source": "x", "revision": "00000000"}),
        ("delete_cell", {"cell_id": "abc", "revision": "00000000"}),
        ("move_cell", {"cell_id": "abc", "to_index": 0}),
        ("execute_cell", {"cell_id": "abc"}),
        ("save_notebook", {}),
        ("get_active_cell", {}),
        ("insert_cell", {"source": "# note", "cell_type": "markdown"}),
    ],
)
async def test_write_tools_explain_that_the_extension_is_missing(
    plain: KernelHarness, tool: str, args: dict
) -> None:
    async with plain.client() as client:
        result = await client.call_tool(tool, args)
    assert result.is_error
    assert "extension is not active" in text_of(result)


async def test_insert_cell_offers_a_labelled_set_next_input_proposal(plain: KernelHarness) -> None:
    async with plain.client() as client:
        result = await client.call_tool("insert_cell", {"source": "df.describe()"})
    assert not result.is_error
    assert "NOT inserted" in text_of(result) and "PROPOSAL" in text_of(result)
    # The proposal rides on the reply of the next cell the user runs.
    reply = plain.run("1 + 1")["reply"]
    payloads = [p for p in reply["content"].get("payload", []) if p.get("source") == "set_next_input"]
    assert len(payloads) == 1
    assert payloads[0]["text"].startswith("# Proposed by the agent (ipymcp)")
    assert payloads[0]["text"].endswith("df.describe()")


async def test_activity_output_is_updated_in_place_with_the_agents_actions(plain: KernelHarness) -> None:
    display_id = plain.run(
        "import ipymcp._state as _s; print(_s.runtime.status_display.display_id); del _s"
    )["stdout"].strip()
    loaded = [m for m in plain.load_outputs if m["msg_type"] == "display_data"]
    assert loaded and loaded[0]["content"]["transient"]["display_id"] == display_id
    async with plain.client() as client:
        result = await client.call_tool("execute", {"code": "6 * 7"})
        assert text_of(result).strip() == "42"

    def is_update(msg: dict[str, Any]) -> bool:
        content = msg["content"]
        return (
            msg["msg_type"] == "update_display_data"
            and content.get("transient", {}).get("display_id") == display_id
            and "6 * 7" in content["data"].get("text/markdown", "")
        )

    update = _drain_iopub(plain, is_update)[-1]["content"]["data"]["text/markdown"]
    assert "Agent activity" in update and "`execute`" in update and "42" in update
    assert "MCP server ready" in update


async def test_announce_closed_by_the_frontend_is_detected_at_once(tmp_path: Path) -> None:
    """JupyterLab without the extension closes the unknown announce comm right away."""
    harness = KernelHarness(cwd=tmp_path)
    try:
        load = harness.run("%load_ext ipymcp")
        announce = next(m for m in load["outputs"] if m["msg_type"] == "comm_open")
        close = harness.kc.session.msg("comm_close", {"comm_id": announce["content"]["comm_id"], "data": {}})
        harness.kc.shell_channel.send(close)
        state = harness.run(
            "import time, ipymcp._state as _s\n"
            "t = time.monotonic()\n"
            "while _s.runtime.frontend.state == 'detecting' and time.monotonic() - t < 5: time.sleep(0.02)\n"
            "print(_s.runtime.frontend.state, round(time.monotonic() - _s.runtime.frontend._announced_at, 2))"
        )["stdout"].split()
        assert state[0] == "no-extension"
        assert float(state[1]) < 2.0  # before the 2 s "nobody connected" window
    finally:
        harness.shutdown()
