"""Attacks on the `read` level: inspection must never run the notebook's code, nor hang the server.

Issue 11 item 3. Every object here counts the calls its own code gets (in `calls`, a list in the
user's namespace); the inspection tools and the `ipymcp://variables/{name}` resource may look at
them in every way an agent can ask, and the count stays zero.
"""

from __future__ import annotations

import asyncio
import json

import anyio
import pytest
from conftest import text_of

pytestmark = pytest.mark.compat

HOSTILE = """
import collections, os, tempfile, threading
calls = []
side_file = os.path.join(tempfile.mkdtemp(), 'deployed')
release = threading.Event()

class Model:
    def __init__(self):
        self.weights = [1, 2, 3]
    @property
    def deploy(self):
        calls.append('deploy')
        open(side_file, 'w').write('deployed')
        return 'deployed'
    @property
    def block(self):
        calls.append('block')
        release.wait()
        return 'released'

class Lazy:
    def __getattr__(self, name):
        calls.append('__getattr__ ' + name)
        return 42

class Registry:
    def __getitem__(self, key):
        calls.append('__getitem__')
        return 1
    def __len__(self):
        calls.append('__len__')
        return 1

class CountingList(list):
    def __len__(self): calls.append('list.__len__'); return 999
    def __iter__(self): calls.append('list.__iter__'); return iter([])
    def __getitem__(self, i): calls.append('list.__getitem__'); return 'fake'
    def __repr__(self): calls.append('list.__repr__'); return 'fake'

class CountingDict(dict):
    def __len__(self): calls.append('dict.__len__'); return 999
    def __iter__(self): calls.append('dict.__iter__'); return iter([])
    def __getitem__(self, k): calls.append('dict.__getitem__'); return 'fake'
    def items(self): calls.append('dict.items'); return []
    def __repr__(self): calls.append('dict.__repr__'); return 'fake'

class CountingInt(int):
    def __repr__(self): calls.append('int.__repr__'); return 'fake'
    def __str__(self): calls.append('int.__str__'); return 'fake'

class CountingStr(str):
    def __len__(self): calls.append('str.__len__'); return 999
    def __repr__(self): calls.append('str.__repr__'); return 'fake'
    def __str__(self): calls.append('str.__str__'); return 'fake'
    def __getitem__(self, i): calls.append('str.__getitem__'); return 'fake'

class Element:
    def __repr__(self): calls.append('Element.__repr__'); return 'element'
    def __str__(self): calls.append('Element.__str__'); return 'element'
    def __format__(self, spec): calls.append('Element.__format__'); return 'element'
    def __lt__(self, other): calls.append('Element.__lt__'); return True
    def __eq__(self, other): calls.append('Element.__eq__'); return False
    def __hash__(self): return 7

m = Model()
lazy = Lazy()
registry = Registry()
dd = collections.defaultdict(list, {'present': [1]})
sub_list = CountingList([10, 20, 30])
sub_dict = CountingDict({'a': 1, 'b': 2})
sub_int = CountingInt(7)
sub_str = CountingStr('hello')
element_set = {Element(), Element(), Element()}
"""


@pytest.fixture(scope="module", autouse=True)
def hostile(kernel):
    kernel.run(HOSTILE)


@pytest.fixture(autouse=True)
def no_calls_yet(kernel, hostile):
    kernel.run("calls.clear()")


def calls(kernel) -> list[str]:
    return json.loads(kernel.run("import json; print(json.dumps(calls))")["stdout"])


async def inspect(client, path: str):
    result = await client.call_tool("inspect_variable", {"name": path})
    return result, result.structured_content


async def read_variable(client, path: str) -> dict:
    read = await client.read_resource(f"ipymcp://variables/{path}", cache_mode="bypass")
    return json.loads(read.contents[0].text)


async def test_a_property_with_a_side_effect_never_runs(kernel):
    async with kernel.client() as c:
        result, described = await inspect(c, "m.deploy")
        listed = await c.call_tool("list_variables", {"pattern": "m"})
        _, whole = await inspect(c, "m")
    assert calls(kernel) == []
    assert kernel.run("print(os.path.exists(side_file))")["stdout"] == "False\n"
    assert not result.is_error and described["evaluated"] is False
    assert "property" in described["what"] and "execute" in described["note"]
    assert not listed.is_error
    assert whole["attributes"] == {"weights": "[1, 2, 3]"}
    assert whole["members"]["deploy"] == "property"


async def test_getattr_never_runs(kernel):
    async with kernel.client() as c:
        result, described = await inspect(c, "lazy.anything")
        _, whole = await inspect(c, "lazy")
        await c.call_tool("list_variables", {"pattern": "lazy"})
    assert calls(kernel) == []
    assert not result.is_error and described["evaluated"] is False
    assert "__getattr__" in described["what"]
    assert "__getattr__" in json.dumps(whole)


async def test_getitem_of_a_user_mapping_never_runs(kernel):
    async with kernel.client() as c:
        result, described = await inspect(c, "registry['x']")
        await c.call_tool("list_variables", {"pattern": "registry"})
        await inspect(c, "registry")
    assert calls(kernel) == []
    assert not result.is_error and described["evaluated"] is False
    assert "__getitem__" in described["what"]


async def test_a_defaultdict_gains_no_key(kernel):
    async with kernel.client() as c:
        missing = await c.call_tool("inspect_variable", {"name": "dd['k']"})
        _, present = await inspect(c, "dd['present']")
    assert kernel.run("print(sorted(dd))")["stdout"] == "['present']\n"
    assert missing.is_error and "KeyError" in text_of(missing)
    assert present["length"] == 1


async def test_subclasses_of_builtins_never_run_their_own_methods(kernel):
    async with kernel.client() as c:
        listed = (await c.call_tool("list_variables", {"pattern": "sub_*"})).structured_content
        previews = {name: (await inspect(c, name))[1] for name in ("sub_list", "sub_dict", "sub_int", "sub_str")}
        _, first = await inspect(c, "sub_list[0]")
        _, a = await inspect(c, "sub_dict['a']")
        _, letter = await inspect(c, "sub_str[1]")
    assert calls(kernel) == []
    rows = {r["name"]: r for r in listed["variables"]}
    assert rows["sub_list"]["summary"] == "len=3" and rows["sub_dict"]["summary"] == "len=2"
    assert previews["sub_list"]["length"] == 3 and [i["value"] for i in previews["sub_list"]["items"]] == ["10", "20", "30"]
    assert previews["sub_dict"]["length"] == 2
    assert previews["sub_int"]["value"] == "7" and previews["sub_str"]["value"] == "hello"
    assert first["value"] == "10" and a["value"] == "1" and letter["value"] == "e"


async def test_element_reprs_and_comparisons_never_run(kernel):
    kernel.run(
        "import numpy as np, pandas as pd\n"
        "obj_frame = pd.DataFrame({'thing': [Element(), Element()], 'n': [1, 2]}, index=[Element(), Element()])\n"
        "obj_frame[Element()] = [3, 4]\n"
        "obj_array = np.array([Element(), Element(), Element()], dtype=object)\n"
        "obj_series = obj_frame['thing']\n"
        "calls.clear()  # building them compared and formatted the elements; inspecting must not"
    )
    async with kernel.client() as c:
        await c.call_tool("list_variables", {"pattern": "obj_*"})
        _, frame = await inspect(c, "obj_frame")
        _, columns = await inspect(c, "obj_frame.columns")
        _, array = await inspect(c, "obj_array")
        _, series = await inspect(c, "obj_series")
        _, elements = await inspect(c, "element_set")
        _, sliced = await inspect(c, "obj_array[:2]")
    assert calls(kernel) == []
    assert frame["shape"] == [2, 3] and "<Element>" in frame["head"]
    assert columns["length"] == 3
    assert "<Element>" in array["first_values"] and sliced["shape"] == [2]
    assert "<Element>" in series["head"]
    assert elements["length"] == 3


async def test_look_alikes_of_library_types_get_no_trust(kernel):
    kernel.run(
        "class FakeFrame:\n"
        "    @property\n"
        "    def shape(self): calls.append('FakeFrame.shape'); return (1, 1)\n"
        "    @property\n"
        "    def columns(self): calls.append('FakeFrame.columns'); return []\n"
        "    def head(self, n=5): calls.append('FakeFrame.head'); return self\n"
        "FakeFrame.__module__, FakeFrame.__qualname__, FakeFrame.__name__ = 'pandas.core.frame', 'DataFrame', 'DataFrame'\n"
        "class Spoof:\n"
        "    @property\n"
        "    def __class__(self): calls.append('Spoof.__class__'); return dict\n"
        "fake_frame, spoof = FakeFrame(), Spoof()\n"
        "import pandas as pd\n"
        "class MyFrame(pd.DataFrame):\n"
        "    @property\n"
        "    def shape(self): calls.append('MyFrame.shape'); return (0, 0)\n"
        "my_frame = MyFrame({'a': [1]})\n"
        "class Meta(type):\n"
        "    def __eq__(cls, other): calls.append('Meta.__eq__'); return False\n"
        "    def __hash__(cls): calls.append('Meta.__hash__'); return 1\n"
        "    @property\n"
        "    def __name__(cls): calls.append('Meta.__name__'); return 'x'\n"
        "class Odd(metaclass=Meta):\n"
        "    size = 3\n"
        "odd = Odd()"
    )
    async with kernel.client() as c:
        await c.call_tool("list_variables", {"pattern": "*"})
        paths = ("fake_frame", "fake_frame.shape", "spoof", "my_frame", "my_frame.shape", "odd", "Odd", "Odd.size")
        for path in paths:
            await inspect(c, path)
    assert calls(kernel) == []


async def test_an_expensive_library_property_is_described_not_evaluated(kernel):
    kernel.run("import pandas as pd\nlong_frame = pd.DataFrame({'a': range(20_000), 'b': 1.5})")
    async with kernel.client() as c:
        result, described = await inspect(c, "long_frame.T")
        _, columns = await inspect(c, "long_frame.columns")
    assert not result.is_error and described["evaluated"] is False and "property" in described["what"]
    assert "execute" in described["note"]
    assert columns["length"] == 2


async def test_the_variables_resource_obeys_the_same_rules(kernel):
    async with kernel.client() as c:
        deploy = await read_variable(c, "m.deploy")
        anything = await read_variable(c, "lazy.anything")
        item = await read_variable(c, "registry['x']")
        await read_variable(c, "sub_list")
        await read_variable(c, "obj_frame")
    assert calls(kernel) == []
    assert deploy["evaluated"] is False and anything["evaluated"] is False and item["evaluated"] is False


async def test_a_huge_pattern_is_refused_and_patterns_leave_no_cache(kernel):
    async with kernel.client() as c:
        huge = await c.call_tool("list_variables", {"pattern": "*" + "a" * 1_000_000})
        before = kernel.run("import fnmatch; print(fnmatch._compile_pattern.cache_info().currsize)")["stdout"]
        for i in range(20):
            ok = await c.call_tool("list_variables", {"pattern": f"sub_*{i}?"})
            assert not ok.is_error
        after = kernel.run("print(fnmatch._compile_pattern.cache_info().currsize)")["stdout"]
    assert huge.is_error and "max_pattern_chars" in text_of(huge)
    assert after == before


async def test_a_slow_preview_hits_the_inspection_timeout_and_says_so(kernel):
    # Printing a 9,000-node sympy expression is allow-listed (sympy's own printer) and takes
    # seconds: far over a half-second budget on any machine.
    kernel.run(
        "import sympy\n"
        "slow_expr = sympy.Add(*[sympy.Symbol(f'y{i}') ** (i + 2) for i in range(3000)], evaluate=False)\n"
        "import ipymcp._state as _s; _s.runtime.config.inspection_timeout = 0.5; del _s"
    )
    try:
        async with kernel.client() as c:
            slow = await c.call_tool("inspect_variable", {"name": "slow_expr"})
            meanwhile = await c.call_tool("inspect_variable", {"name": "sub_list"})
    finally:
        kernel.run("import ipymcp._state as _s; _s.runtime.config.inspection_timeout = 10.0; del _s")
    assert slow.is_error
    assert "the preview took longer than 0.5 s" in text_of(slow) and "holds one of the 2 inspection threads" in text_of(slow)
    assert not meanwhile.is_error and meanwhile.structured_content["length"] == 3


async def test_a_blocking_property_leaves_kernel_status_and_interrupt_answering(kernel):
    try:
        async with kernel.client() as c:
            stuck = [asyncio.ensure_future(c.call_tool("inspect_variable", {"name": "m.block"})) for _ in range(4)]
            stuck.append(asyncio.ensure_future(read_variable(c, "m.block")))
            await asyncio.sleep(0.5)  # let them reach the server first: the harm, if any, is done by then
            with anyio.fail_after(20):
                status = await c.call_tool("kernel_status", {})
                interrupted = await c.call_tool("interrupt", {"target": "agent"})
                inspected = await c.call_tool("inspect_variable", {"name": "sub_list"})
            assert not status.is_error and status.structured_content["state"] == "idle"
            assert text_of(interrupted) == "No agent code is running."
            assert not inspected.is_error
            with anyio.fail_after(20):
                answers = await asyncio.gather(*stuck)
    finally:
        kernel.run("release.set()")
    assert all(a["evaluated"] is False for a in [r.structured_content for r in answers[:4]] + [answers[4]])
    assert calls(kernel) == []


async def test_lazy_xarray_data_is_not_loaded(kernel):
    kernel.run(
        "import numpy as np, xarray as xr\n"
        "from xarray.core import indexing\n"
        "class CountingBackend(xr.backends.BackendArray):\n"
        "    def __init__(self):\n"
        "        self.shape, self.dtype = (1000, 50), np.dtype('float32')\n"
        "    def __getitem__(self, key):\n"
        "        calls.append('backend read')\n"
        "        return np.zeros(self.shape, self.dtype)[key.tuple]\n"
        "lazy_da = xr.DataArray(xr.Variable(('time', 'x'), indexing.LazilyIndexedArray(CountingBackend())), name='lazy')\n"
        "lazy_ds = lazy_da.to_dataset()"
    )
    async with kernel.client() as c:
        listed = (await c.call_tool("list_variables", {"pattern": "lazy_d*"})).structured_content
        array = (await c.call_tool("inspect_variable", {"name": "lazy_da"})).structured_content
        dataset = (await c.call_tool("inspect_variable", {"name": "lazy_ds"})).structured_content
        member = (await c.call_tool("inspect_variable", {"name": "lazy_ds['lazy']"})).structured_content
    assert calls(kernel) == []
    assert (array["dims"], array["shape"], array["dtype"]) == (["time", "x"], [1000, 50], "float32")
    assert array["data"].startswith("lazy") and "first_values" not in array
    assert dataset["data_vars"]["lazy"]["data"].startswith("lazy") and member["shape"] == [1000, 50]
    assert "(lazy)" in {r["name"]: r for r in listed["variables"]}["lazy_da"]["summary"]
