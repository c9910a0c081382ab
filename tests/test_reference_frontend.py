"""nbclient as the reference frontend: what ipymcp's history says about each cell is what
nbclient recorded for it.

Notebooks with rich outputs (tests/data/reference: plots, HTML tables, errors, clear_output with
and without wait, display updates, Output widgets, bytes images, ``\\r`` progress, stderr) run
through nbclient with ipymcp loaded in the kernel (our ``ipymcp-test`` kernel spec, so the kernel
is ``IPYMCP_KERNEL_PYTHON``: the module runs on every kernel env). Right after each cell,
``get_history(last=1)`` must show that cell's outputs as nbclient holds them at that moment; at
the end, ``get_output`` and the ``ipymcp://history/{n}`` resource must show every cell's final
outputs. Same outputs, same order, same text, same images (decoded bytes).

Where a frontend renders rather than records, the comparison renders nbclient's outputs as
JupyterLab does: adjacent stream outputs of one name are one output, and ``\\r``/``\\b`` are
applied with JupyterLab's own regexes (ported in test_progress_text). An Output widget's outputs
are the ones nbclient's OutputWidget recorded in its widget state, shown under the display of the
widget that holds it. The first cell (``%load_ext ipymcp``) is not compared: the history adopts it
while the extension loads, after anything it printed earlier.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import KERNEL_NAME, mcp_client, text_of
from nbclient import NotebookClient
from test_progress_text import _shown, jupyterlab_remove_overwritten_chars

from ipymcp.outputs import IMAGE_TYPES, as_text, flat_outputs, output_text
from ipymcp.pages import cell_text_and_images

pytestmark = pytest.mark.compat

NOTEBOOKS = sorted((Path(__file__).parent / "data" / "reference").glob("*.ipynb"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# Where a cell's output went to an Output widget shown elsewhere, ipymcp says so; nbclient has
# no such line to compare with (test_history_outputs checks the notes).
_WRITE_NOTE = re.compile(r"\[output of this cell went to Output widget .*\]\n")


# -- nbclient's outputs, rendered as the history renders them ----------------------------------


def _reference(outputs: list[Any], widget_state: dict[str, Any]) -> list[dict[str, Any]]:
    rendered: list[dict[str, Any]] = []
    for output in outputs:
        output = json.loads(json.dumps(output))  # NotebookNode -> plain dicts
        kind = output["output_type"]
        if kind == "stream":
            last = rendered[-1] if rendered else None
            if last is not None and last["output_type"] == "stream" and last["name"] == output["name"]:
                last["text"] += as_text(output["text"])
            else:
                rendered.append({"output_type": "stream", "name": output["name"], "text": as_text(output["text"])})
            continue
        view = (output.get("data") or {}).get(WIDGET_VIEW)
        if isinstance(view, dict):
            widgets = [
                {"model_id": model_id, "outputs": _reference(widget_state[model_id].get("outputs", []), widget_state)}
                for model_id in _output_widgets(view["model_id"], widget_state)
            ]
            if widgets:
                output["output_widgets"] = widgets
        rendered.append(output)
    for output in rendered:
        if output["output_type"] == "stream":
            output["text"] = _shown(jupyterlab_remove_overwritten_chars(output["text"]))
    return rendered


def _output_widgets(model_id: str, widget_state: dict[str, Any]) -> list[str]:
    state = widget_state.get(model_id) or {}
    if state.get("_model_name") == "OutputModel":
        return [model_id]
    found = []
    for child in state.get("children") or ():
        found += _output_widgets(child.removeprefix("IPY_MODEL_"), widget_state)
    return found


def _comparable(outputs: list[dict[str, Any]]) -> list[Any]:
    """Outputs as values to compare: images as their decoded bytes, text joined."""
    items: list[Any] = []
    for output in outputs:
        kind = output["output_type"]
        if kind == "stream":
            items.append((kind, output["name"], output["text"]))
        elif kind == "error":
            items.append((kind, output["ename"], output["evalue"], list(output["traceback"])))
        else:
            data = {
                mime: _decode(value) if mime in IMAGE_TYPES else as_text(value) if isinstance(value, (str, list)) else value
                for mime, value in output["data"].items()
            }
            widgets = [(w["model_id"], _comparable(w["outputs"])) for w in output.get("output_widgets", [])]
            items.append((kind, data, output.get("metadata") or {}, output.get("execution_count"), widgets))
    return items


def _decode(value: Any) -> bytes:
    return base64.b64decode(as_text(value).replace("\n", ""), validate=True)


def _images(blocks: list[Any]) -> list[bytes]:
    return [_decode(b.data) for b in blocks if getattr(b, "type", None) == "image"]


def _texts(blocks: list[Any]) -> str:
    return _WRITE_NOTE.sub("", "".join(getattr(b, "text", "") for b in blocks))


def _reference_images(flat: list[dict[str, Any]]) -> list[bytes]:
    images = []
    for output in flat:
        data = output.get("data") or {}
        mime = next((m for m in IMAGE_TYPES if m in data), None)
        if mime:
            images.append(_decode(data[mime]))
    return images


def _poll_in_slices(client: NotebookClient) -> None:
    """Wait for kernel messages in short polls, so a missed wakeup costs 0.25 s, not the timeout.

    With ipywidgets cells, nbclient's wait for an execute_reply sometimes sleeps to its full
    timeout although the reply has arrived (jupyter/nbclient#312; seen here in 4 of 10 runs with
    ipykernel 6.29, also without ipymcp): the asyncio poll on the zmq socket is not woken. A poll
    that times out looks again, so slicing the wait finds the message. nbclient's own handling of
    every message is unchanged.
    """
    for channel in (client.kc.shell_channel, client.kc.iopub_channel):
        wait = channel.get_msg

        async def get_msg(timeout: float | None = None, _wait: Any = wait) -> Any:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                remaining = 0.25 if deadline is None else max(0.0, min(0.25, deadline - time.monotonic()))
                try:
                    return await _wait(timeout=remaining)
                except queue.Empty:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise

        channel.get_msg = get_msg


# -- the three views --------------------------------------------------------------------------


async def _check_history_right_after(mcp: Any, cell: Any, expected: list[dict[str, Any]]) -> None:
    result = await mcp.call_tool("get_history", {"last": 1})
    assert not result.is_error, text_of(result)
    header, *blocks = result.content
    assert header.text.startswith(f"── [In {cell.execution_count}] user"), header.text
    flat = flat_outputs(expected)
    went_to_a_widget = _WRITE_NOTE.search(text_of(result)) is not None
    nothing = "" if went_to_a_widget else "[no output]"
    assert _texts(blocks) == ("".join(output_text(o) for o in flat) if flat else nothing), cell.source
    assert _images(blocks) == _reference_images(flat), cell.source


async def _check_final_views(mcp: Any, cell: Any, expected: list[dict[str, Any]]) -> None:
    count = cell.execution_count
    read = await mcp.read_resource(f"ipymcp://history/{count}", cache_mode="bypass")
    entry = json.loads(read.contents[0].text)
    assert entry["code"] == cell.source
    assert _comparable(entry["outputs"]) == _comparable(expected), cell.source

    page = await mcp.call_tool("get_output", {"execution_count": count})
    assert not page.is_error, text_of(page)
    text, images = cell_text_and_images(flat_outputs(expected))
    shown = _WRITE_NOTE.sub("", page.content[1].text) if text else ""
    assert shown == text, cell.source
    assert _images(page.content) == [_decode(value) for _, value in images], cell.source


async def _check_saved_notebook_images(mcp: Any, index: int, cell: Any) -> None:
    """read_notebook without a frontend extension reads the saved .ipynb: its images are intact."""
    expected = _reference_images(cell.outputs)
    if not expected:
        return
    result = await mcp.call_tool("read_notebook", {"start": index, "limit": 1})
    assert not result.is_error, text_of(result)
    assert "SAVED FILE" in result.content[0].text
    assert _images(result.content) == expected, cell.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
async def test_history_shows_what_nbclient_recorded(path: Path, tmp_path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, kernel_name=KERNEL_NAME, allow_errors=True, timeout=120, resources={"metadata": {"path": str(tmp_path)}}
    )
    saved = tmp_path / path.name  # where Jupyter would save it: read_notebook's disk fallback reads it
    async with client.async_setup_kernel(env={**os.environ, "JPY_SESSION_NAME": str(saved)}):
        _poll_in_slices(client)
        await client.async_execute_cell(nb.cells[0], 0)
        await client.async_execute_cell(nb.cells[1], 1)
        url, token = "".join(o.get("text", "") for o in nb.cells[1].outputs).split()
        async with mcp_client(url, token) as mcp:
            for index in range(1, len(nb.cells)):
                if index > 1:
                    await client.async_execute_cell(nb.cells[index], index)
                expected = _reference(nb.cells[index].outputs, client.widget_state)
                await _check_history_right_after(mcp, nb.cells[index], expected)
            for cell in nb.cells[1:]:
                await _check_final_views(mcp, cell, _reference(cell.outputs, client.widget_state))
            nbformat.write(nb, saved)
            for index, cell in enumerate(nb.cells):
                await _check_saved_notebook_images(mcp, index, cell)
    # The notebooks exercise what they claim to (a change to them must keep it so).
    kinds = {o["output_type"] for cell in nb.cells for o in cell.outputs}
    assert kinds >= {"stream", "display_data"}
    widget_outputs = [
        w for cell in nb.cells for o in _reference(cell.outputs, client.widget_state) for w in o.get("output_widgets", [])
    ]
    if path.stem == "widgets":
        assert sum(len(w["outputs"]) for w in widget_outputs) >= 4
    if path.stem == "images":
        assert sum(len(_reference_images(cell.outputs)) for cell in nb.cells) >= 4
