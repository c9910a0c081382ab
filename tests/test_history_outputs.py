"""The history tells the truth about outputs: bytes images, Output widgets, updated results,
Colab's tagged clears. Real kernels (every kernel env: the module is ``compat``), real PIL,
sympy and ipywidgets, the real mcp client over real HTTP."""

from __future__ import annotations

import base64
import io
import json

import anyio
import pytest
from conftest import text_of
from PIL import Image as PILImage

pytestmark = pytest.mark.compat

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _images(result):
    return [b for b in result.content if getattr(b, "type", None) == "image"]


async def _call(kernel, tool, **args):
    async with kernel.client() as c:
        result = await c.call_tool(tool, args)
    assert not result.is_error, text_of(result)
    return result


async def _entry(kernel, ident):
    async with kernel.client() as c:
        read = await c.read_resource(f"ipymcp://history/{ident}", cache_mode="bypass")
    return json.loads(read.contents[0].text)


def _page_text(page):
    """get_output's outputs text, without its header and code (the first block)."""
    return "".join(getattr(b, "text", "") for b in page.content[1:])


def _kernel_b64(kernel, expression):
    """base64 of the bytes ``expression`` evaluates to in the kernel (the bytes the object made)."""
    return kernel.run(f"import base64 as _b64\nprint(_b64.b64encode({expression}).decode())")["stdout"].strip()


# -- item 3: images whose data are bytes ------------------------------------------------------


def _decode(b64: str) -> bytes:
    # Strictly base64 (no b'…' repr); IPython 7's Image ends its base64 with a newline, which
    # nbformat allows.
    return base64.b64decode(b64.replace("\n", ""), validate=True)


def _assert_png(b64: str, expected_b64: str, size: tuple[int, int]) -> None:
    raw = _decode(b64)
    assert raw[:8] == PNG_SIGNATURE
    assert raw == base64.b64decode(expected_b64)
    with PILImage.open(io.BytesIO(raw)) as image:
        assert image.size == size


async def test_pil_image_as_a_cells_value_arrives_intact_everywhere(kernel):
    cell = kernel.run(
        "from PIL import Image as _PILImage\n"
        "pil_probe = _PILImage.new('RGB', (40, 30), (200, 10, 10))\n"
        "pil_probe"
    )
    count = cell["execution_count"]
    png = _kernel_b64(kernel, "pil_probe._repr_png_()")
    entry = await _entry(kernel, count)
    (result,) = entry["outputs"]
    assert result["output_type"] == "execute_result" and result["execution_count"] == count
    _assert_png(result["data"]["image/png"], png, (40, 30))
    if "image/jpeg" in result["data"]:  # Pillow >= 10 also gives a JPEG of an RGB image
        jpeg = _decode(result["data"]["image/jpeg"])
        assert jpeg == base64.b64decode(_kernel_b64(kernel, "pil_probe._repr_jpeg_()"))
        with PILImage.open(io.BytesIO(jpeg)) as image:
            assert image.format == "JPEG" and image.size == (40, 30)

    page = await _call(kernel, "get_output", execution_count=count)
    history = await _call(kernel, "get_history", last=3)
    for result in (page, history):
        images = _images(result)
        assert images, text_of(result)
        _assert_png(images[-1].data, png, (40, 30))
        assert "b'\\x89PNG" not in text_of(result)


async def test_display_image_from_bytes_arrives_intact(kernel):
    cell = kernel.run(
        "import io\n"
        "from IPython.display import Image, display\n"
        "from PIL import Image as _PILImage\n"
        "_buf = io.BytesIO(); _PILImage.new('RGB', (24, 16), (0, 90, 200)).save(_buf, 'JPEG')\n"
        "jpeg_probe = _buf.getvalue()\n"
        "_buf = io.BytesIO(); _PILImage.new('RGBA', (12, 9), (0, 200, 0, 255)).save(_buf, 'PNG')\n"
        "png_probe = _buf.getvalue()\n"
        "display(Image(data=png_probe))\n"
        "display(Image(data=jpeg_probe, format='jpeg'))"
    )
    count = cell["execution_count"]
    entry = await _entry(kernel, count)
    png_out, jpeg_out = entry["outputs"]
    _assert_png(png_out["data"]["image/png"], _kernel_b64(kernel, "png_probe"), (12, 9))
    jpeg = _decode(jpeg_out["data"]["image/jpeg"])
    assert jpeg == base64.b64decode(_kernel_b64(kernel, "jpeg_probe"))
    with PILImage.open(io.BytesIO(jpeg)) as image:
        assert image.format == "JPEG" and image.size == (24, 16)

    page = await _call(kernel, "get_output", execution_count=count)
    assert [base64.b64decode(b.data) for b in _images(page)] == [base64.b64decode(_kernel_b64(kernel, "png_probe")), jpeg]


async def test_sympy_png_printing_arrives_intact(kernel):
    cell = kernel.run(
        "import sympy\n"
        "sympy.init_printing(use_latex='png')\n"
        "sympy_probe = sympy.Symbol('x') ** 2 + sympy.Rational(1, 3)\n"
        "display(sympy_probe)"
    )
    renders = kernel.run("print(sympy_probe._repr_png_() is not None)")["stdout"].strip() == "True"
    if not renders:
        # IPython 7.34's mathtext fallback calls a matplotlib API that matplotlib 3.8 removed, and
        # there is no LaTeX here: sympy then displays text only, and so does the history.
        entry = await _entry(kernel, cell["execution_count"])
        assert "image/png" not in entry["outputs"][0]["data"]
        pytest.skip("sympy cannot render PNG in this kernel environment (no LaTeX, old IPython mathtext)")
    made = base64.b64decode(_kernel_b64(kernel, "sympy_probe._repr_png_()"))
    kernel.run("sympy.init_printing(pretty_print=False, use_latex=False)")
    entry = await _entry(kernel, cell["execution_count"])
    shown = _decode(entry["outputs"][0]["data"]["image/png"])
    assert shown[:8] == PNG_SIGNATURE
    # Rendered twice (display, then the probe): compare the pixels.
    with PILImage.open(io.BytesIO(shown)) as shown_image, PILImage.open(io.BytesIO(made)) as made_image:
        assert shown_image.size == made_image.size and shown_image.tobytes() == made_image.tobytes()
    (image,) = _images(await _call(kernel, "get_output", execution_count=cell["execution_count"]))
    assert base64.b64decode(image.data) == shown


async def test_agent_execute_returns_a_bytes_image_intact(kernel):
    kernel.run(
        "import io\nfrom PIL import Image as _PILImage\n"
        "agent_probe = _PILImage.new('RGB', (10, 7), (1, 2, 3))"
    )
    png = _kernel_b64(kernel, "agent_probe._repr_png_()")
    async with kernel.client() as c:
        run = await c.call_tool("execute", {"code": "agent_probe"})
        recorded = await c.call_tool("get_output", {"execution_count": run.meta["history_id"]})
    for result in (run, recorded):
        assert not result.is_error, text_of(result)
        _assert_png(_images(result)[0].data, png, (10, 7))


# -- item 5: an updated execute_result keeps its execution_count -------------------------------


async def test_execute_result_updated_by_display_id_keeps_its_execution_count(kernel):
    # The messaging spec lets an execute_result carry a display_id; IPython has no public call for
    # it, so the cell sends one through the kernel's session exactly as a kernel would.
    cell = kernel.run(
        "from IPython.display import update_display\n"
        "_ip = get_ipython(); _k = _ip.kernel\n"
        "_k.session.send(_k.iopub_socket, 'execute_result', {'data': {'text/plain': \"'first'\"},\n"
        "    'metadata': {}, 'execution_count': 4242, 'transient': {'display_id': 'result-probe'}},\n"
        "    parent=_ip.get_parent(), ident=b'execute_result')\n"
        "update_display({'text/plain': \"'second'\"}, raw=True, display_id='result-probe')"
    )
    entry = await _entry(kernel, cell["execution_count"])
    assert entry["outputs"] == [
        {
            "output_type": "execute_result",
            "data": {"text/plain": "'second'"},
            "metadata": {},
            "execution_count": 4242,
        }
    ]


# -- item 4: Output widgets -------------------------------------------------------------------


def _model_id(kernel, expression):
    return kernel.run(f"print({expression}.model_id)")["stdout"].strip()


def _widget_block(output, model_id):
    (widget,) = [w for w in output.get("output_widgets", []) if w["model_id"] == model_id]
    return widget["outputs"]


async def test_output_widget_output_belongs_to_the_widget_not_the_cell(kernel):
    shown = kernel.run("import ipywidgets as widgets\nwidget_out = widgets.Output()\ndisplay(widget_out)")
    model_id = _model_id(kernel, "widget_out")
    writer = kernel.run(
        "print('cell text')\nwith widget_out:\n    print('widget text')\nprint('cell again')"
    )
    failing = kernel.run("with widget_out:\n    raise ValueError('inside the widget')")

    writer_entry = await _entry(kernel, writer["execution_count"])
    # The widget's output never reached the cell, so the cell's two prints are one stream.
    assert writer_entry["outputs"] == [{"output_type": "stream", "name": "stdout", "text": "cell text\ncell again\n"}]
    failing_entry = await _entry(kernel, failing["execution_count"])
    assert failing_entry["status"] == "ok" and failing_entry["outputs"] == []
    assert [w["model_id"] for w in failing_entry["output_widget_writes"]] == [model_id]

    shown_entry = await _entry(kernel, shown["execution_count"])
    (view,) = shown_entry["outputs"]
    captured = _widget_block(view, model_id)
    assert captured[0] == {"output_type": "stream", "name": "stdout", "text": "widget text\n"}
    assert captured[1]["output_type"] == "error" and captured[1]["ename"] == "ValueError"
    assert len(captured) == 2

    history = text_of(await _call(kernel, "get_history", last=6))
    label = f"[Output widget {model_id}: 2 outputs]"
    assert label in history
    assert history.index(label) < history.index("widget text") < history.index("inside the widget")
    writer_text = _page_text(await _call(kernel, "get_output", execution_count=writer["execution_count"]))
    assert "widget text" not in writer_text and "cell text" in writer_text
    assert f"went to Output widget {model_id}, shown under [In {shown['execution_count']}]" in writer_text


async def test_clear_output_inside_a_widget_clears_only_the_widget(kernel):
    shown = kernel.run("import ipywidgets as widgets\nclear_probe = widgets.Output()\ndisplay(clear_probe)")
    model_id = _model_id(kernel, "clear_probe")
    cell = kernel.run(
        "from IPython.display import clear_output\n"
        "print('hi4')\n"
        "with clear_probe:\n    print('gone soon')\n    clear_output()\n    print('kept in the widget')"
    )
    entry = await _entry(kernel, cell["execution_count"])
    assert entry["outputs"] == [{"output_type": "stream", "name": "stdout", "text": "hi4\n"}]
    view = (await _entry(kernel, shown["execution_count"]))["outputs"][0]
    assert _widget_block(view, model_id) == [
        {"output_type": "stream", "name": "stdout", "text": "kept in the widget\n"}
    ]
    kernel.run("clear_probe.clear_output()\nprint('cell output stays')")
    view = (await _entry(kernel, shown["execution_count"]))["outputs"][0]
    assert _widget_block(view, model_id) == []


async def test_interact_callback_output_lands_in_its_widget_under_the_interact_cell(kernel):
    cell = kernel.run(
        "import ipywidgets as widgets\n"
        "def _square(x):\n    print(f'square of {x} is {x * x}')\n"
        "interact_probe = widgets.interactive(_square, x=(0, 10))\n"
        "interact_probe.children[0].value = 3\n"
        "display(interact_probe)"
    )
    slider_id = _model_id(kernel, "interact_probe.children[0]")
    out_id = _model_id(kernel, "interact_probe.out")
    # The user drags the slider: the frontend sends the new value; the callback runs with the
    # comm message as its parent, no cell at all.
    session = kernel.kc.session
    msg = session.msg(
        "comm_msg",
        {"comm_id": slider_id, "data": {"method": "update", "state": {"value": 7}, "buffer_paths": []}},
    )
    kernel.kc.shell_channel.send(msg)
    with anyio.fail_after(30):
        while True:
            view = (await _entry(kernel, cell["execution_count"]))["outputs"][0]
            captured = _widget_block(view, out_id)
            if captured and "square of 7" in captured[-1].get("text", ""):
                break
            await anyio.sleep(0.2)
    assert captured == [{"output_type": "stream", "name": "stdout", "text": "square of 7 is 49\n"}]
    history = text_of(await _call(kernel, "get_history", last=5))
    assert history.count("square of 7 is 49") == 1


async def test_widget_outputs_set_from_the_kernel_replace_what_it_showed(kernel):
    shown = kernel.run(
        "import ipywidgets as widgets\nappend_probe = widgets.Output()\ndisplay(append_probe)\n"
        "append_probe.append_stdout('appended line\\n')"
    )
    model_id = _model_id(kernel, "append_probe")
    view = (await _entry(kernel, shown["execution_count"]))["outputs"][0]
    assert _widget_block(view, model_id) == [
        {"output_type": "stream", "name": "stdout", "text": "appended line\n"}
    ]
    kernel.run("append_probe.close()")
    view = (await _entry(kernel, shown["execution_count"]))["outputs"][0]
    assert "output_widgets" not in view  # a closed widget shows nothing in any frontend


async def test_nested_output_widgets_take_output_innermost_first(kernel):
    shown = kernel.run(
        "import ipywidgets as widgets\nouter_probe, inner_probe = widgets.Output(), widgets.Output()\n"
        "display(outer_probe)\ndisplay(inner_probe)"
    )
    outer_id, inner_id = _model_id(kernel, "outer_probe"), _model_id(kernel, "inner_probe")
    kernel.run(
        "with outer_probe:\n    print('outer 1')\n    with inner_probe:\n        print('inner')\n"
        "    print('outer 2')\nprint('the cell')"
    )
    outer_view, inner_view = (await _entry(kernel, shown["execution_count"]))["outputs"]
    assert _widget_block(outer_view, outer_id) == [
        {"output_type": "stream", "name": "stdout", "text": "outer 1\nouter 2\n"}
    ]
    assert _widget_block(inner_view, inner_id) == [{"output_type": "stream", "name": "stdout", "text": "inner\n"}]


async def test_a_frontend_syncing_widget_outputs_back_changes_nothing(kernel):
    # JupyterLab sends an Output widget's outputs back to the kernel after each captured message,
    # and ipywidgets 8 echoes them to every frontend ("echo_update"), possibly late: a copy of
    # what the history already holds, never newer. A stale copy must not roll the widget back.
    shown = kernel.run("import ipywidgets as widgets\nsync_probe = widgets.Output()\ndisplay(sync_probe)")
    model_id = _model_id(kernel, "sync_probe")
    kernel.run("with sync_probe:\n    print('first')\n    print('second')")
    stale = [{"output_type": "stream", "name": "stdout", "text": "first\n"}]
    msg = kernel.kc.session.msg(
        "comm_msg", {"comm_id": model_id, "data": {"method": "update", "state": {"outputs": stale}, "buffer_paths": []}}
    )
    kernel.kc.shell_channel.send(msg)
    kernel.run("pass")  # the shell handles requests in order: the sync has been handled
    view = (await _entry(kernel, shown["execution_count"]))["outputs"][0]
    assert _widget_block(view, model_id) == [{"output_type": "stream", "name": "stdout", "text": "first\nsecond\n"}]


async def test_hostile_widget_comm_traffic_never_breaks_the_tap(kernel):
    # Forged comm messages through the kernel's own session: junk states, a container that
    # contains itself, an Output widget displayed inside itself.
    kernel.run(
        "import uuid\n"
        "_ip = get_ipython(); _k = _ip.kernel\n"
        "def _comm(kind, comm_id, data, **extra):\n"
        "    _k.session.send(_k.iopub_socket, kind, {'comm_id': comm_id, 'data': data, **extra},\n"
        "                    parent=_ip.get_parent())\n"
        "_junk, _box, _out = uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex\n"
        "_comm('comm_open', _junk, {'state': {'_model_name': 'OutputModel', 'msg_id': 42, 'outputs': 'x'}},\n"
        "      target_name='jupyter.widget')\n"
        "_comm('comm_msg', _junk, {'method': 'update', 'state': {'outputs': [None, 7, {'output_type': 'x'}]}})\n"
        "_comm('comm_msg', _junk, {'method': 'update', 'state': 'not a dict'})\n"
        "_comm('comm_open', _box, {'state': {'children': ['IPY_MODEL_' + _box, 'IPY_MODEL_' + _out, 3]}},\n"
        "      target_name='jupyter.widget')\n"
        "_comm('comm_open', _out, {'state': {'_model_name': 'OutputModel', 'msg_id': ''}}, target_name='jupyter.widget')\n"
        "_comm('comm_open', 'no-data', None, target_name='jupyter.widget')\n"
        "_comm('comm_msg', 'never-opened', {'method': 'update', 'state': {'msg_id': 'x'}})"
    )
    cell = kernel.run(
        "from IPython.display import display\n"
        "_view = {'application/vnd.jupyter.widget-view+json': {'model_id': _box, 'version_major': 2}}\n"
        "display(_view, raw=True)\n"
        "_comm('comm_msg', _out, {'method': 'update', 'state': {'msg_id': _ip.get_parent()['header']['msg_id']}})\n"
        "display({'application/vnd.jupyter.widget-view+json': {'model_id': _out}}, raw=True)\n"
        "print('into the boxed widget')\n"
        "import sys; sys.stdout.flush()\n"
        "_comm('comm_msg', _out, {'method': 'update', 'state': {'msg_id': ''}})\n"
        "print('back in the cell')"
    )
    box_id = kernel.run("print(_out)")["stdout"].strip()
    entry = await _entry(kernel, cell["execution_count"])
    view, own_text = entry["outputs"]
    (widget,) = view["output_widgets"]
    assert widget["model_id"] == box_id
    inner_view, inner_text = widget["outputs"]
    assert "output_widgets" not in inner_view  # displayed inside itself: shown once
    assert inner_text["text"] == "into the boxed widget\n"
    assert own_text["text"] == "back in the cell\n"
    history = await _call(kernel, "get_history", last=3)
    assert "into the boxed widget" in text_of(history)
    stats = json.loads(
        kernel.run("import ipymcp._state as _st, json as _j; print(_j.dumps(_st.runtime.history.stats())); del _st")[
            "stdout"
        ]
    )
    assert stats["tap_errors"] == 0


async def test_an_output_widget_that_keeps_growing_keeps_its_newest_outputs(fresh_kernel):
    # A log widget fed by callbacks never ends, unlike a cell: it must not push every cell out.
    fresh_kernel.run("get_ipython().config.IPyMCP.history_max_output_bytes = 20_000")
    fresh_kernel.load_ipymcp()
    shown = fresh_kernel.run("import ipywidgets as widgets\nlog_probe = widgets.Output()\ndisplay(log_probe)")
    model_id = _model_id(fresh_kernel, "log_probe")
    fresh_kernel.run(
        "from IPython.display import HTML, display\n"
        "for i in range(400):\n    with log_probe:\n        display(HTML(f'<p>line {i:04d}</p>' + 'x' * 900))"
    )
    entry = await _entry(fresh_kernel, shown["execution_count"])  # the displaying cell is still there
    (widget,) = entry["outputs"][0]["output_widgets"]
    assert widget["model_id"] == model_id
    kept = [int(o["data"]["text/html"][8:12]) for o in widget["outputs"]]
    assert kept == list(range(400 - len(kept), 400)) and 10 <= len(kept) < 30
    assert widget["outputs_not_kept"] == 400 - len(kept)
    history = text_of(await _call(fresh_kernel, "get_history", last=5))
    assert f"its {400 - len(kept)} earlier outputs were not kept" in history
    stats = json.loads(
        fresh_kernel.run("import ipymcp._state as _st, json as _j; print(_j.dumps(_st.runtime.history.stats()))")[
            "stdout"
        ]
    )
    assert stats["bytes"] < 100_000 and stats["evicted"] == 0


# -- Colab's tagged clear_output (item 10) -----------------------------------------------------

# Colab's frontend and the google.colab package cannot run here. This shim publishes exactly
# the messages google/colab/output/_tags.py publishes (googlecolab/colabtools at 3c07d77):
# tags are changed by a display_data with empty data and metadata
# {'outputarea': {'nodisplay': True, 'add_tags': (...), 'remove_tags': (...)}}, and a clear is a
# clear_output whose content carries 'output_tags'. Colab's frontend clears "all output marked
# with a superset of the given output_tags" (output.clear's docstring); that is what we assert.
COLAB_TAGS_SHIM = '''
import contextlib, sys, uuid
from IPython import display as _display

def _colab_tags(add=(), remove=()):
    sys.stdout.flush(); sys.stderr.flush()
    _display.publish_display_data({}, metadata={'outputarea': {
        'nodisplay': True, 'add_tags': tuple(add), 'remove_tags': tuple(remove)}})

@contextlib.contextmanager
def colab_use_tags(tags):
    tags = [tags] if isinstance(tags, str) else list(tags)
    _colab_tags(add=tags)
    try:
        yield
    finally:
        _colab_tags(remove=tags)

def colab_clear(wait=False, output_tags=()):
    output_tags = [output_tags] if isinstance(output_tags, str) else output_tags
    sys.stdout.flush(); sys.stderr.flush()
    ip = get_ipython(); pub = ip.kernel.shell.display_pub
    ip.kernel.session.send(pub.pub_socket, 'clear_output',
        dict(wait=wait, output_tags=tuple(output_tags)), parent=pub.parent_header, ident=pub.topic)

@contextlib.contextmanager
def colab_temporary():
    tag = str(uuid.uuid4())
    with colab_use_tags(tag):
        yield tag
    colab_clear(output_tags=tag)
'''


async def test_colab_tagged_clear_removes_only_the_tagged_outputs(kernel):
    kernel.run(COLAB_TAGS_SHIM)
    cell = kernel.run(
        "print('before')\n"
        "with colab_use_tags('conversation'):\n"
        "    with colab_use_tags('introduction'):\n        print('Hello')\n"
        "    print('Bye')\n"
        "print('after')\n"
        "colab_clear(output_tags='introduction')\n"
        "with colab_temporary():\n    print('streamed by !cmd, then cleared')\n"
        "print('end')"
    )
    entry = await _entry(kernel, cell["execution_count"])
    text = "".join(o.get("text", "") for o in entry["outputs"])
    assert text == "before\nBye\nafter\nend\n"
    assert all(o["output_type"] == "stream" for o in entry["outputs"])
    shown = _page_text(await _call(kernel, "get_output", execution_count=cell["execution_count"]))
    assert "output of type" not in shown and "Hello" not in shown

    cell = kernel.run(
        "with colab_use_tags('a'):\n    print('tagged a')\n"
        "print('untagged')\n"
        "colab_clear(wait=True, output_tags='a')\n"
        "print('next output')\n"
    )
    text = "".join(o.get("text", "") for o in (await _entry(kernel, cell["execution_count"]))["outputs"])
    assert text == "untagged\nnext output\n"

    cell = kernel.run("with colab_use_tags('x'):\n    print('one')\nprint('two')\ncolab_clear()\nprint('three')")
    text = "".join(o.get("text", "") for o in (await _entry(kernel, cell["execution_count"]))["outputs"])
    assert text == "three\n"  # a clear without tags clears everything, as in every frontend



async def test_colab_tag_markers_in_an_agent_run_are_not_shown_as_outputs(kernel):
    kernel.run(COLAB_TAGS_SHIM)
    run = await _call(kernel, "execute", code="with colab_use_tags('t'):\n    print('tagged by the agent')")
    recorded = await _call(kernel, "get_output", execution_count=run.meta["history_id"])
    for result in (run, recorded):
        assert "tagged by the agent" in text_of(result)
        assert "output of type" not in text_of(result)
