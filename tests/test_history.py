"""History: what the user ran and saw (tap of kernel.session.send), get_history, get_output,
and the ipymcp://history and ipymcp://variables resources, with real kernels over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import queue
import time

import pytest
from conftest import KernelHarness, text_of

compat = pytest.mark.compat


def _images(result):
    return [b for b in result.content if getattr(b, "type", None) == "image"]


async def _history(kernel, **args):
    async with kernel.client() as c:
        return await c.call_tool("get_history", args)


async def _output(kernel, ident, **args):
    async with kernel.client() as c:
        return await c.call_tool("get_output", {"execution_count": ident, **args})


def _outputs_only(page):
    """get_output's text without its header and code block (the first block)."""
    return "".join(getattr(b, "text", "") for b in page.content[1:])


def _section(result, count):
    """The text of get_history from the header of [In count] up to the next header."""
    text = text_of(result)
    start = text.index(f"── [In {count}]")
    following = text.find("── [", start + 5)
    return text[start : following if following != -1 else None]


def _drain_iopub(kernel):
    # get_msgs() blocks once the channel is empty (get_msg's default timeout is None)
    while True:
        try:
            kernel.kc.iopub_channel.get_msg(timeout=0)
        except queue.Empty:
            return


def _stats(kernel):
    out = kernel.run(
        "import ipymcp._state as _s; print(__import__('json').dumps(_s.runtime.history.stats())); del _s"
    )
    return json.loads(out["stdout"])


@compat
async def test_plotting_cell_png_comes_back_from_get_history_as_an_image(kernel):
    cell = kernel.run(
        "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2]); plt.title('history plot'); plt.show()"
    )
    result = await _history(kernel, last=1)
    assert not result.is_error
    images = _images(result)
    assert len(images) == 1
    assert images[0].mime_type == "image/png"
    assert base64.b64decode(images[0].data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"── [In {cell['execution_count']}] user · ok" in text_of(result)


@compat
async def test_error_cell_returns_its_traceback(kernel):
    cell = kernel.run("def broken():\n    return 1 / 0\nbroken()", allow_error=True)
    result = await _history(kernel, last=3)
    section = _section(result, cell["execution_count"])
    assert "user · error" in section
    assert "ZeroDivisionError" in section
    assert "return 1 / 0" in section  # the traceback, not just the exception line
    assert "\x1b[" not in section  # ANSI colours stripped


@compat
async def test_megabyte_print_is_truncated_in_history_and_fully_readable_with_get_output_pages(kernel):
    cell = kernel.run(
        "import random\nrandom.seed(7)\n"
        "big = ''.join(f'{i:07d} {random.random():.6f}\\n' for i in range(60_000))\nprint(big, end='')"
    )
    expected = kernel.run("import hashlib\nprint(len(big), hashlib.sha256(big.encode()).hexdigest())")[
        "stdout"
    ].split()
    count = cell["execution_count"]
    result = await _history(kernel, last=3)
    section = _section(result, count)
    assert "characters cut" in section and "truncated" in text_of(result)
    assert f"get_output({count})" in text_of(result)
    assert len(text_of(result)) < 40_000

    pieces, offset = [], 0
    async with kernel.client() as c:
        while True:
            page = await c.call_tool(
                "get_output", {"execution_count": count, "offset": offset, "limit": 200_000}
            )
            assert not page.is_error, text_of(page)
            pieces.append(page.content[1].text)
            offset = page.meta["end"]
            if offset >= page.meta["total_chars"]:
                break
            assert f"get_output({count}, offset={offset})" in text_of(page)
    full = "".join(pieces)
    assert len(full) == int(expected[0]) == 60_000 * 17
    assert hashlib.sha256(full.encode()).hexdigest() == expected[1]


@compat
async def test_progress_bar_with_update_display_data_ends_as_one_final_state(kernel):
    cell = kernel.run(
        "from IPython.display import display\n"
        "bar = display('progress 0%', display_id=True)\n"
        "for i in range(1, 101):\n    bar.update(f'progress {i}%')\n"
        "print('done')"
    )
    text = _outputs_only(await _output(kernel, cell["execution_count"]))
    assert "progress 100%" in text
    assert text.count("progress") == 1
    assert "'done'" not in text and "done" in text


@compat
async def test_clear_output_is_honoured(kernel):
    cell = kernel.run(
        "from IPython.display import clear_output\n"
        "print('gone for good')\nclear_output()\n"
        "for i in range(50):\n    clear_output(wait=True)\n    print(f'step {i}')"
    )
    text = _outputs_only(await _output(kernel, cell["execution_count"]))
    assert "gone for good" not in text
    assert "step 49" in text and "step 48" not in text


@compat
async def test_async_cell_and_user_thread_outputs_are_attributed_to_their_cells(kernel):
    threaded = kernel.run(
        "import threading, time\n"
        "def worker():\n    time.sleep(0.3)\n    print('printed by the user thread', flush=True)\n"
        "t = threading.Thread(target=worker); t.start()\n"
        "print('main thread first')\nt.join()\ntime.sleep(0.3)"
    )
    awaited = kernel.run(
        "import asyncio\nprint('before await')\nawait asyncio.sleep(0.2)\nprint('after await')\n'async value'"
    )
    after = kernel.run("print('a later cell')")
    thread_text = _outputs_only(await _output(kernel, threaded["execution_count"]))
    async_text = _outputs_only(await _output(kernel, awaited["execution_count"]))
    later_text = _outputs_only(await _output(kernel, after["execution_count"]))
    assert "main thread first" in thread_text and "printed by the user thread" in thread_text
    assert "before await" in async_text and "after await" in async_text and "'async value'" in async_text
    assert "printed by the user thread" not in async_text + later_text
    assert "after await" not in later_text and "a later cell" in later_text


@compat
async def test_interrupted_cell_has_status_interrupted_and_a_duration(kernel):
    msg_id = kernel.send("import time\nprint('sleeping')\ntime.sleep(30)")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # interrupt only once the cell is in its sleep
        msg = kernel.kc.get_iopub_msg(timeout=20)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
            break
    time.sleep(0.9)
    kernel.km.interrupt_kernel()
    kernel.wait_idle(msg_id, timeout=20)
    result = await _history(kernel, last=1)
    text = text_of(result)
    assert "user · interrupted" in text
    assert "KeyboardInterrupt" in text and "sleeping" in text
    header = text.splitlines()[0]
    seconds = float(header.split("interrupted · ")[1].split(" s")[0])
    assert 0.8 < seconds < 15


@compat
async def test_agent_runs_are_recorded_as_agent_with_their_own_ids(kernel):
    async with kernel.client() as c:
        quiet = await c.call_tool("execute", {"code": "print('agent quiet run')\n40 + 2"})
        cell = await c.call_tool("execute", {"code": "print('agent cell run')", "mode": "cell"})
        agent_only = await c.call_tool("get_history", {"last": 2, "source": "agent"})
        user_only = await c.call_tool("get_history", {"last": 5, "source": "user"})
        quiet_id = quiet.meta["history_id"]
        fetched = await c.call_tool("get_output", {"execution_count": quiet_id})
        by_count = await c.call_tool("get_output", {"execution_count": cell.meta["execution_count"]})
    assert quiet_id.startswith("a") and cell.meta["history_id"].startswith("a")
    text = text_of(agent_only)
    assert f"── [{quiet_id}] agent (quiet) · ok" in text
    assert f"── [{cell.meta['history_id']} = In {cell.meta['execution_count']}] agent (cell) · ok" in text
    assert text.count("print('agent cell run')") == 1  # cell mode is not recorded twice
    assert "agent quiet run" not in text_of(user_only) and "agent cell run" not in text_of(user_only)
    assert "agent quiet run\n42" in text_of(fetched)
    assert "agent cell run" in text_of(by_count)


@compat
async def test_get_output_of_a_cell_that_never_ran_says_so(kernel):
    result = await _output(kernel, 99_999)
    assert result.is_error
    assert "never ran" in text_of(result) and "get_history" in text_of(result)
    result = await _output(kernel, "a99999")
    assert result.is_error and "never ran" in text_of(result)


@compat
async def test_history_and_variable_resources_are_listed_and_readable(kernel):
    cell = kernel.run("resource_probe = {'lr': 0.1, 'layers': [64, 32]}\nprint('resource cell')")
    count = cell["execution_count"]
    async with kernel.client() as c:
        templates = await c.list_resource_templates(cache_mode="bypass")
        uris = {t.uri_template for t in templates.resource_templates}
        assert {"ipymcp://history/{execution_count}", "ipymcp://variables/{name}"} <= uris
        read = await c.read_resource(f"ipymcp://history/{count}", cache_mode="bypass")
        variable = await c.read_resource("ipymcp://variables/resource_probe", cache_mode="bypass")
        inspected = await c.call_tool("inspect_variable", {"name": "resource_probe"})
    entry = json.loads(read.contents[0].text)
    assert entry["execution_count"] == count and entry["source"] == "user" and entry["status"] == "ok"
    assert entry["outputs"] == [{"output_type": "stream", "name": "stdout", "text": "resource cell\n"}]
    assert json.loads(variable.contents[0].text) == inspected.structured_content


@compat
async def test_tap_failure_never_breaks_the_kernel(kernel):
    kernel.run(
        "import ipymcp._state as _hs\n"
        "def _boom(msg):\n    raise RuntimeError('tap exploded')\n"
        "_hs.runtime.history._observe = _boom"
    )
    try:
        cell = kernel.run("print('still printing')\n1 + 1")
        assert cell["stdout"] == "still printing\n"
        assert any(m["msg_type"] == "execute_result" for m in cell["outputs"])
        assert _stats(kernel)["tap_errors"] > 0
    finally:
        kernel.run("del _hs.runtime.history._observe; del _hs")
    assert "tap exploded" not in kernel.run("print('ok again')")["stdout"]


@compat
async def test_inputs_from_before_ipymcp_loaded_are_listed_without_outputs(fresh_kernel):
    fresh_kernel.run("early = 21")
    fresh_kernel.run("early * 2")
    fresh_kernel.load_ipymcp()
    fresh_kernel.run("print('after load')")
    result = await _history(fresh_kernel, last=10)
    text = text_of(result)
    assert "── [In 1] user · outputs not captured ──\nearly = 21" in text
    assert "── [In 2] user · outputs not captured ──\nearly * 2" in text and "42" in text
    assert text.count("%load_ext ipymcp") == 1  # the loading cell itself was adopted, once
    assert "── [In 3] user · ok" in text and "── [In 4] user · ok" in text
    assert len(result.meta["ids"]) == len(set(result.meta["ids"]))
    assert "after load" in text
    assert text.index("early = 21") < text.index("after load")
    missing = await _output(fresh_kernel, 1)
    assert not missing.is_error and "outputs not captured" in text_of(missing)


@compat
async def test_unload_removes_the_tap(fresh_kernel):
    fresh_kernel.load_ipymcp()
    probe = "print('send' in vars(get_ipython().kernel.session))"
    assert fresh_kernel.run(probe)["stdout"].strip() == "True"
    fresh_kernel.run("%unload_ext ipymcp")
    assert fresh_kernel.run(probe)["stdout"].strip() == "False"


async def test_images_are_capped_per_call_and_every_image_comes_from_get_output(kernel):
    cell = kernel.run(
        "import matplotlib.pyplot as plt\n"
        "for i in range(7):\n    plt.figure(figsize=(2, 2)); plt.plot([0, i]); plt.show()"
    )
    count = cell["execution_count"]
    history = await _history(kernel, last=1)
    assert len(_images(history)) == 4  # c.IPyMCP.max_images
    assert f"get_output({count}) returns every image" in text_of(history)
    page = await _output(kernel, count)
    assert len(_images(page)) == 7
    assert text_of(page).count("[image ") >= 7


async def test_huge_image_is_downscaled_and_html_table_and_svg_become_text(kernel):
    cell = kernel.run(
        "import io\nfrom PIL import Image as _PIL\nfrom IPython.display import Image, HTML, SVG, display\n"
        "_buf = io.BytesIO(); _PIL.linear_gradient('L').resize((3000, 2000)).save(_buf, 'PNG')\n"
        "display(Image(_buf.getvalue()))\n"
        "display(HTML('<table><tr><th>name</th><th>score</th></tr><tr><td>ada</td><td>97</td></tr></table>'))\n"
        'display(SVG(\'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>\'))'
    )
    result = await _history(kernel, last=1)
    text = text_of(result)
    images = _images(result)
    assert len(images) == 1, text
    assert "downscaled from 3000x2000" in text
    from PIL import Image as PILImage

    shown = PILImage.open(io.BytesIO(base64.b64decode(images[0].data)))
    assert shown.width * shown.height <= 1_600_000
    assert "name | score" in text and "ada | 97" in text
    assert f"── [In {cell['execution_count']}]" in text
    assert "SVG" in text


def _run_1000_large_cells(harness: KernelHarness) -> int:
    """1,000 cells, half printing 500 kB, half displaying a 200 kB PNG bundle; returns RSS growth."""
    harness.run("import os, base64, psutil\nfrom IPython.display import display")

    def rss() -> int:
        return int(harness.run("print(psutil.Process().memory_info().rss)")["stdout"])

    before = rss()
    for i in range(1000):
        if i % 2:
            code = "display({'image/png': base64.b64encode(os.urandom(150_000)).decode()}, raw=True)"
        else:
            code = f"print('{i % 10}' * 500_000)"
        last = harness.send(code)
        if i % 50 == 49:
            harness.wait_idle(last, timeout=120)
            _drain_iopub(harness)  # the test's own client must not hoard it all
    return rss() - before


async def test_history_stays_under_its_budget_after_1000_cells_of_large_outputs():
    budget = 16 * 1024 * 1024
    # The same cells without ipymcp: IPython 9 itself keeps every cell's stdout
    # (history_manager.outputs), so the kernel grows anyway; ours must add at most ~the budget.
    baseline = KernelHarness()
    try:
        grown_without = _run_1000_large_cells(baseline)
    finally:
        baseline.shutdown()
    harness = KernelHarness()
    try:
        harness.load_ipymcp(f"get_ipython().config.IPyMCP.history_max_bytes = {budget}")
        grown_with = _run_1000_large_cells(harness)
        stats = _stats(harness)
        extra = grown_with - grown_without
        print(
            f"\nhistory: {stats}; kernel RSS grew {grown_with / 2**20:.1f} MB with ipymcp, "
            f"{grown_without / 2**20:.1f} MB without, for {(500 * 500_000 + 500 * 200_000) / 2**20:.0f} MB of output"
        )
        assert stats["bytes"] <= budget
        assert stats["evicted"] > 0 and stats["cells"] < 1000
        assert extra < budget * 2 + 32 * 2**20, f"ipymcp added {extra / 2**20:.0f} MB of RSS"
        async with harness.client() as c:
            evicted = await c.call_tool("get_output", {"execution_count": 5})
            newest = await c.call_tool("get_history", {"last": 1, "include_outputs": False})
        assert evicted.is_error and "evicted" in text_of(evicted) and "history_max_bytes" in text_of(evicted)
        assert "user · ok" in text_of(newest)
    finally:
        harness.shutdown()


@compat
async def test_one_cell_over_the_budget_keeps_its_newest_outputs_and_long_text_keeps_head_and_tail(
    fresh_kernel,
):
    fresh_kernel.load_ipymcp(
        "get_ipython().config.IPyMCP.history_max_bytes = 2_000_000\n"
        "get_ipython().config.IPyMCP.history_max_output_bytes = 100_000"
    )
    images = fresh_kernel.run(
        "import base64, os\nfrom IPython.display import display\n"
        "for i in range(100):\n"
        "    display({'image/png': base64.b64encode(os.urandom(60_000)).decode(), 'text/plain': f'img {i}'}, raw=True)"
    )
    stats = _stats(fresh_kernel)
    assert stats["bytes"] <= 2_000_000
    page = await _output(fresh_kernel, images["execution_count"], limit=100_000)
    text = _outputs_only(page)
    assert "img 0" in text and "dropped to keep ipymcp's history under its byte budget" in text
    assert page.meta["images"] > 0 and "img 99" in text
    long_text = fresh_kernel.run("print(''.join(f'line {i}\\n' for i in range(100_000)), end='')")
    page = await _output(fresh_kernel, long_text["execution_count"], limit=200_000)
    text = _outputs_only(page)
    assert text.startswith("line 0\nline 1\n") and text.rstrip().endswith("line 99999")
    assert "not kept by ipymcp's history (over its per-output cap of 100,000)" in text
    assert page.meta["total_chars"] < 110_000
