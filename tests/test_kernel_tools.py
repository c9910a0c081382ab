"""execute, list_variables, inspect_variable, kernel_status, interrupt: happy paths and errors."""

from __future__ import annotations

import pytest
from conftest import text_of

pytestmark = pytest.mark.compat


async def test_execute_runs_in_the_users_namespace(kernel):
    kernel.run("user_value = 41")
    async with kernel.client() as c:
        result = await c.call_tool("execute", {"code": "agent_value = user_value + 1\nagent_value"})
    assert text_of(result).strip() == "42"
    assert kernel.run("print(agent_value)")["stdout"] == "42\n"


async def test_execute_returns_stdout_stderr_and_errors_as_tool_errors(kernel):
    async with kernel.client() as c:
        ok = await c.call_tool("execute", {"code": "import sys\nprint('out')\nprint('err', file=sys.stderr)"})
        failed = await c.call_tool("execute", {"code": "def f():\n    return 1/0\nf()"})
    assert "out" in text_of(ok) and "[stderr] err" in text_of(ok)
    assert not ok.is_error
    assert failed.is_error
    text = text_of(failed)
    assert "ZeroDivisionError" in text and "return 1/0" in text
    assert "\x1b[" not in text  # ANSI colours stripped


async def test_execute_supports_magics_shell_escapes_and_top_level_await(kernel):
    async with kernel.client() as c:
        magic = await c.call_tool("execute", {"code": "%time x_magic = 3"})
        shell = await c.call_tool("execute", {"code": "!echo from-shell"})
        awaited = await c.call_tool("execute", {"code": "import asyncio\nawait asyncio.sleep(0.01)\n'awaited'"})
        awaited_value = await c.call_tool("execute", {"code": "async def g():\n    return 7\nawait g()"})
    assert "Wall time" in text_of(magic)
    assert "from-shell" in text_of(shell)
    assert "'awaited'" in text_of(awaited)
    assert text_of(awaited_value).strip() == "7"


async def test_quiet_mode_leaves_in_out_and_underscore_alone(kernel):
    kernel.run("'user result'")
    before = kernel.run("print(len(In), len(Out), repr(_))")["stdout"]
    async with kernel.client() as c:
        await c.call_tool("execute", {"code": "'agent result'"})
        await c.call_tool("execute", {"code": "print('agent print')"})
    after = kernel.run("print(len(In) - 1, len(Out), repr(_))")["stdout"]
    # the check itself is one more user cell: In grew by exactly that one
    assert after == before


async def test_cell_mode_records_the_code_in_history(kernel):
    async with kernel.client() as c:
        result = await c.call_tool("execute", {"code": "'recorded' * 2", "mode": "cell"})
    count = result.meta["execution_count"]
    check = kernel.run(f"print(In[{count}]); print(Out[{count}])")["stdout"]
    assert check == "'recorded' * 2\nrecordedrecorded\n"


async def test_matplotlib_figure_arrives_as_an_image(kernel):
    async with kernel.client() as c:
        result = await c.call_tool(
            "execute",
            {"code": "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('agent plot')\nplt.show()"},
        )
    images = [b for b in result.content if b.type == "image"]
    assert len(images) == 1 and images[0].mime_type == "image/png"
    assert len(images[0].data) > 1000


async def test_large_output_is_cut_in_the_middle_with_a_marker(kernel):
    async with kernel.client() as c:
        result = await c.call_tool("execute", {"code": "for i in range(100_000): print(f'line {i}')"})
    text = text_of(result)
    assert len(text) < 25_000
    assert text.startswith("line 0\n") and "line 99999" in text
    assert "characters cut" in text and "output truncated" in text


async def test_exit_from_the_agent_is_refused_and_the_kernel_lives(kernel):
    async with kernel.client() as c:
        result = await c.call_tool("execute", {"code": "exit()"})
        assert result.is_error and "not allowed" in text_of(result)
        after = await c.call_tool("execute", {"code": "'still here'"})
    assert "still here" in text_of(after)
    assert kernel.run("print('user ok')")["stdout"] == "user ok\n"


async def test_list_variables_shows_user_variables_without_ipython_internals(kernel):
    kernel.run(
        "import numpy as np, pandas as pd\n"
        "lv_array = np.zeros((100, 3))\n"
        "lv_frame = pd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})\n"
        "lv_text = 'hello'\n"
        "_lv_private = 1\n"
        "1 + 1"
    )
    async with kernel.client() as c:
        result = await c.call_tool("list_variables", {"pattern": "lv_*"})
        private = await c.call_tool("list_variables", {"pattern": "*lv_*", "include_private": True})
        everything = await c.call_tool("list_variables", {})
    rows = {r["name"]: r for r in result.structured_content["variables"]}
    assert set(rows) == {"lv_array", "lv_frame", "lv_text"}
    assert rows["lv_array"]["summary"] == "shape=(100, 3) dtype=float64"
    assert rows["lv_array"]["size_bytes"] == 2400
    assert rows["lv_frame"]["type"] == "pandas.DataFrame" and "shape=(2, 2)" in rows["lv_frame"]["summary"]
    assert "_lv_private" in {r["name"] for r in private.structured_content["variables"]}
    names = {r["name"] for r in everything.structured_content["variables"]}
    assert not names & {"In", "Out", "_", "__", "_i", "_1", "exit", "quit", "get_ipython", "_oh"}


async def test_list_variables_respects_limit(kernel):
    kernel.run("for _i in range(30): globals()[f'many_{_i}'] = _i")
    async with kernel.client() as c:
        result = await c.call_tool("list_variables", {"pattern": "many_*", "limit": 5})
    content = result.structured_content
    assert len(content["variables"]) == 5 and content["total"] == 30 and content["truncated"] is True


async def test_list_variables_never_calls_repr_of_unknown_objects(kernel):
    kernel.run(
        "class Explosive:\n"
        "    def __repr__(self): raise RuntimeError('repr called')\n"
        "    def __len__(self): raise RuntimeError('len called')\n"
        "boom = Explosive()"
    )
    async with kernel.client() as c:
        listed = await c.call_tool("list_variables", {"pattern": "boom"})
        inspected = await c.call_tool("inspect_variable", {"name": "boom"})
    assert listed.structured_content["variables"][0]["type"] == "Explosive"
    assert not inspected.is_error and "repr called" not in text_of(inspected)


async def test_inspect_variable_previews_by_type(kernel):
    kernel.run(
        "import numpy as np, pandas as pd\n"
        "iv_frame = pd.DataFrame({'price': [1.5, 2.5, 3.5], 'name': ['a', 'b', 'c']})\n"
        "iv_array = np.arange(12).reshape(3, 4)\n"
        "iv_cfg = {'lr': 0.001, 'layers': [64, 32]}\n"
        "def iv_fn(a, b=2):\n    'Add two numbers.'\n    return a + b\n"
    )
    async with kernel.client() as c:
        frame = (await c.call_tool("inspect_variable", {"name": "iv_frame"})).structured_content
        array = (await c.call_tool("inspect_variable", {"name": "iv_array"})).structured_content
        lr = (await c.call_tool("inspect_variable", {"name": "iv_cfg['lr']"})).structured_content
        layer = (await c.call_tool("inspect_variable", {"name": "iv_cfg['layers'][1]"})).structured_content
        columns = (await c.call_tool("inspect_variable", {"name": "iv_frame.columns"})).structured_content
        fn = (await c.call_tool("inspect_variable", {"name": "iv_fn"})).structured_content
    assert frame["shape"] == [3, 2] and frame["dtypes"] == {"price": "float64", "name": frame["dtypes"]["name"]}
    assert "1.5" in frame["head"]
    assert array["shape"] == [3, 4] and array["stats"] == {"min": 0, "max": 11, "mean": 5.5}
    assert lr["value"] == "0.001"
    assert layer["value"] == "32"
    assert columns["type"].startswith("pandas.")
    assert fn["signature"] == "(a, b=2)" and fn["doc"] == "Add two numbers."


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("no_such_name", "not defined"),
        ("iv_cfg['missing']", "KeyError"),
        ("os.system('echo pwned')", "no calls"),
        ("iv_cfg[__import__('os')]", "constants"),
        ("1 +", "not a variable path"),
    ],
)
async def test_inspect_variable_refuses_bad_paths_clearly(kernel, path, message):
    kernel.run("iv_cfg = {'lr': 0.001}")
    async with kernel.client() as c:
        result = await c.call_tool("inspect_variable", {"name": path})
    assert result.is_error
    assert message in text_of(result)


async def test_kernel_status_reports_versions_and_state(kernel):
    async with kernel.client() as c:
        status = (await c.call_tool("kernel_status", {})).structured_content
    assert status["state"] == "idle"
    assert status["pid"] > 0 and status["rss_bytes"] > 10_000_000
    assert set(status["versions"]) >= {"python", "ipykernel", "ipython", "ipymcp"}
    assert status["kernel_id"] == kernel.kernel_id


async def test_interrupt_with_nothing_running_says_so(kernel):
    async with kernel.client() as c:
        agent = await c.call_tool("interrupt", {"target": "agent"})
        user = await c.call_tool("interrupt", {"target": "user"})
    assert text_of(agent) == "No agent code is running."
    assert user.is_error and "No user cell is running" in text_of(user)


async def test_tools_describe_themselves_for_a_model(kernel):
    async with kernel.client() as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
    assert {"execute", "list_variables", "inspect_variable", "kernel_status", "interrupt"} <= set(tools)
    for name in ("list_variables", "inspect_variable", "kernel_status"):
        assert tools[name].annotations.read_only_hint is True
    assert tools["execute"].annotations.destructive_hint is True
    for tool in tools.values():
        assert len(tool.description or "") > 40, tool.name


async def test_the_readme_paths_keep_working(kernel):
    kernel.run(
        "import numpy as np, pandas as pd\n"
        "rp_df = pd.DataFrame({'a': [1, 2], 'b': [3.5, 4.5]})\n"
        "rp_cfg = {'lr': 0.01}\n"
        "rp_items = ['w', 'x', 'y', 'z']\n"
        "rp_arr = np.arange(100).reshape(10, 10)"
    )
    async with kernel.client() as c:
        columns = (await c.call_tool("inspect_variable", {"name": "rp_df.columns"})).structured_content
        lr = (await c.call_tool("inspect_variable", {"name": "rp_cfg['lr']"})).structured_content
        item = (await c.call_tool("inspect_variable", {"name": "rp_items[3]"})).structured_content
        head = (await c.call_tool("inspect_variable", {"name": "rp_arr[:5]"})).structured_content
        column = (await c.call_tool("inspect_variable", {"name": "rp_df['b']"})).structured_content
    assert columns["first_values"] == ["a", "b"] and columns["length"] == 2
    assert lr["value"] == "0.01" and item["value"] == "z"
    assert head["shape"] == [5, 10] and head["first_values"].startswith("[0 1 2")
    assert column["type"] == "pandas.Series" and "4.5" in column["head"]


async def test_a_matplotlib_figure_shows_its_axes_titles_and_artists(kernel):
    kernel.run(
        "import matplotlib.pyplot as plt\n"
        "pv_fig, (left, right) = plt.subplots(1, 2)\n"
        "left.plot([1, 2, 3], label='loss'); left.plot([3, 2, 1], label='val'); left.set_title('Loss')\n"
        "left.set_xlabel('epoch'); left.legend()\n"
        "right.scatter([1, 2], [3, 4]); right.set_title('Accuracy'); pv_fig.suptitle('Run 7')\n"
        "plt.close(pv_fig)"
    )
    async with kernel.client() as c:
        figure = (await c.call_tool("inspect_variable", {"name": "pv_fig"})).structured_content
        first = (await c.call_tool("inspect_variable", {"name": "pv_fig.axes[0]"})).structured_content
        listed = (await c.call_tool("list_variables", {"pattern": "pv_fig"})).structured_content
    assert figure["axes_count"] == 2 and figure["suptitle"] == "Run 7"
    loss, accuracy = figure["axes"]
    assert loss["title"] == "Loss" and loss["xlabel"] == "epoch" and loss["lines"] == 2
    assert loss["line_labels"] == ["loss", "val"] and loss["legend"] is True
    assert accuracy["title"] == "Accuracy" and accuracy["collections"] == 1 and accuracy["lines"] == 0
    assert first["title"] == "Loss"
    assert listed["variables"][0]["summary"] == "2 axes: 'Loss', 'Accuracy'"


async def test_a_widget_shows_its_value(kernel):
    kernel.run("import ipywidgets as widgets\npv_slider = widgets.IntSlider(value=7, min=0, max=10, description='n')")
    async with kernel.client() as c:
        slider = (await c.call_tool("inspect_variable", {"name": "pv_slider"})).structured_content
        value = (await c.call_tool("inspect_variable", {"name": "pv_slider.value"})).structured_content
    assert slider["widget"] == "IntSlider"
    assert (slider["value"], slider["min"], slider["max"], slider["description"]) == ("7", "0", "10", "n")
    assert value["value"] == "7"


async def test_xarray_shows_dims_shape_dtype_and_coords(kernel):
    kernel.run(
        "import numpy as np, xarray as xr\n"
        "pv_da = xr.DataArray(np.arange(6.0).reshape(2, 3), dims=('time', 'x'),\n"
        "                     coords={'time': [10, 20]}, name='temp', attrs={'units': 'K'})\n"
        "pv_ds = pv_da.to_dataset()"
    )
    async with kernel.client() as c:
        array = (await c.call_tool("inspect_variable", {"name": "pv_da"})).structured_content
        dataset = (await c.call_tool("inspect_variable", {"name": "pv_ds"})).structured_content
        variable = (await c.call_tool("inspect_variable", {"name": "pv_ds['temp']"})).structured_content
        coords = (await c.call_tool("inspect_variable", {"name": "pv_da.coords"})).structured_content
    assert (array["dims"], array["shape"], array["dtype"]) == (["time", "x"], [2, 3], "float64")
    assert array["data"] == "in memory" and array["stats"]["max"] == 5.0
    assert array["coords"]["time"]["first_values"] == ["10", "20"] and array["attrs"] == {"units": "'K'"}
    assert dataset["sizes"] == {"time": 2, "x": 3} and dataset["data_vars"]["temp"]["shape"] == [2, 3]
    assert variable["dims"] == ["time", "x"] and list(coords["coords"]) == ["time"]


async def test_sympy_shows_the_expression(kernel):
    kernel.run(
        "import sympy\npv_x = sympy.Symbol('x')\npv_f = sympy.Function('f')\n"
        "pv_expr = sympy.sin(pv_x)**2 + pv_f(pv_x) / 3\n"
        "pv_big = sympy.Add(*[sympy.Symbol(f'y{i}') ** (i + 2) for i in range(4000)], evaluate=False)"
    )
    async with kernel.client() as c:
        symbol = (await c.call_tool("inspect_variable", {"name": "pv_x"})).structured_content
        expression = (await c.call_tool("inspect_variable", {"name": "pv_expr"})).structured_content
        big = (await c.call_tool("inspect_variable", {"name": "pv_big"})).structured_content
    assert symbol["expression"] == "x"
    assert expression["expression"] == "f(x)/3 + sin(x)**2" and expression["free_symbols"] == ["x"]
    assert len(big["expression"]) <= 4000


async def test_the_settings_give_the_tools_their_defaults(fresh_kernel):
    fresh_kernel.load_ipymcp(
        "get_ipython().config.IPyMCP.execute_timeout = 1.5\nget_ipython().config.IPyMCP.list_variables_limit = 3"
    )
    fresh_kernel.run("for _i in range(10): globals()[f'setting_{_i}'] = _i")
    async with fresh_kernel.client() as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
        listed = (await c.call_tool("list_variables", {"pattern": "setting_*"})).structured_content
        slow = await c.call_tool("execute", {"code": "import time; time.sleep(30)"})
    assert "execute_timeout" in tools["execute"].input_schema["properties"]["timeout"]["description"]
    assert "list_variables_limit" in tools["list_variables"].input_schema["properties"]["limit"]["description"]
    assert len(listed["variables"]) == 3 and listed["total"] == 10
    assert slow.is_error and "timeout of 1.5 s" in text_of(slow)
