"""Which kernel ``ipymcp connect`` chooses (ipymcp/connect/selection.py), as pure functions over
runtime-file contents; tests/test_connect.py proves the same with real kernels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ipymcp.connect.selection import Binding, Selection, choose_kernel


def kernel(name: str, root: Path, notebook: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "kernel_id": f"id-{name}",
        "url": f"http://127.0.0.1:1/{name}",
        "token": f"t-{name}",
        "notebook_path": str(root / name / f"{name}.ipynb") if notebook else None,
        "cwd": str(root / name),
        **extra,
    }


@pytest.fixture
def kernels(tmp_path: Path) -> list[dict[str, Any]]:
    for name in ("alpha", "beta", "gamma"):
        (tmp_path / name).mkdir()
    # Newest first, as discovery lists them; gamma has no notebook (a console, a script).
    return [kernel("beta", tmp_path), kernel("alpha", tmp_path), kernel("gamma", tmp_path, notebook=False)]


def test_an_explicit_url_needs_its_token(kernels: list[dict[str, Any]]) -> None:
    chosen, why = choose_kernel(kernels, Selection(url="http://127.0.0.1:9/mcp"))
    assert chosen is None and "--token" in why
    chosen, why = choose_kernel(kernels, Selection(url=kernels[1]["url"], token="given"))
    assert chosen is not None and chosen["token"] == "given" and chosen["kernel_id"] == "id-alpha"


def test_a_kernel_id_picks_that_kernel_or_none(kernels: list[dict[str, Any]]) -> None:
    assert choose_kernel(kernels, Selection(kernel_id="id-alpha"))[0]["kernel_id"] == "id-alpha"
    chosen, why = choose_kernel(kernels, Selection(kernel_id="id-nope"))
    assert chosen is None and "id-nope" in why


@pytest.mark.parametrize("wanted", ["alpha.ipynb", "alpha", "alpha/alpha.ipynb"])
def test_a_notebook_is_found_by_path_file_name_or_stem(kernels: list[dict[str, Any]], tmp_path: Path, wanted: str) -> None:
    chosen, why = choose_kernel(kernels, Selection(notebook=wanted, cwd=tmp_path))
    assert chosen is not None and chosen["kernel_id"] == "id-alpha", why


def test_unpinned_the_current_directory_decides_only_when_it_tells_kernels_apart(
    kernels: list[dict[str, Any]], tmp_path: Path
) -> None:
    assert choose_kernel(kernels, Selection(cwd=tmp_path / "alpha"))[0]["kernel_id"] == "id-alpha"
    # A kernel without a notebook is found by its working directory.
    assert choose_kernel(kernels, Selection(cwd=tmp_path / "gamma"))[0]["kernel_id"] == "id-gamma"
    # Under the root: the notebooks are, the console is not; the newest notebook wins.
    chosen, why = choose_kernel(kernels, Selection(cwd=tmp_path))
    assert chosen["kernel_id"] == "id-beta" and "notebook is under the current directory" in why
    # Every kernel is under it: that decides nothing, the newest wins.
    chosen, why = choose_kernel(kernels[:2], Selection(cwd=Path("/")))
    assert chosen["kernel_id"] == "id-beta" and "most recently started" in why


def test_no_kernel_says_so() -> None:
    chosen, why = choose_kernel([], Selection())
    assert chosen is None and "no running kernel" in why


def test_a_binding_finds_the_same_notebook_and_nothing_else(kernels: list[dict[str, Any]], tmp_path: Path) -> None:
    binding = Binding.of(kernels[1])  # alpha
    restarted = {**kernels[1], "pid": 2}  # a restart keeps the kernel id
    reopened = {**kernels[1], "kernel_id": "id-alpha-2"}  # reopening keeps the notebook path
    assert binding.find([kernels[0], restarted]) is restarted
    assert binding.find([kernels[0], reopened]) is reopened
    assert binding.find([kernels[0], kernels[2]]) is None  # while it is away: not another notebook
