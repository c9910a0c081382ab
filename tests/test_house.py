"""The shape of the house (benchmarks/house.py measures it from the source; nothing is run)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

HOUSE = Path(__file__).resolve().parent.parent / "benchmarks" / "house.py"


@pytest.fixture(scope="module")
def house():  # noqa: ANN201 - the module
    spec = importlib.util.spec_from_file_location("house", HOUSE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["house"] = module
    spec.loader.exec_module(module)
    return module


def test_no_module_of_ipymcp_imports_one_that_imports_it_back(house) -> None:
    """Function-local imports count: they run too. (Imports under TYPE_CHECKING never run.)"""
    modules = house.load_modules()
    found = house.cycles(modules)
    assert found == [], [(group, house.cycle_edges(modules, group)) for group in found]


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function(house, tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("def later():\n    from .a import thing\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n")
    modules = house.load_modules(package)
    assert house.cycles(modules) == [["pkg.a", "pkg.b"]]
    assert house.cycles(modules, type_only=True) == [["pkg.a", "pkg.b"]]  # c -> a only: no cycle
    (package / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import b\n")
    modules = house.load_modules(package)
    assert house.cycles(modules) == [] and house.cycles(modules, type_only=True) == [["pkg.a", "pkg.b"]]


def test_the_kernel_side_never_imports_the_mcp_sdk(house) -> None:
    """%load_ext imports ipymcp._state and what it imports; the SDK (~0.7 s) is the server
    thread's: no module reachable from _state may import mcp at module level."""
    modules = house.load_modules()
    reachable, stack = set(), ["ipymcp._state"]
    while stack:
        name = stack.pop()
        if name in reachable:
            continue
        reachable.add(name)
        stack.extend(house.top_level_imports(modules[name], modules))
    importing_sdk = sorted(name for name in reachable if house.imports_sdk_at_top(modules[name]))
    assert importing_sdk == [], importing_sdk
