"""Which kernel ``ipymcp connect`` talks to: the command line's choice, the documented order, and
the notebook a proxy stays bound to once it has chosen one."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConnectError(Exception):
    """A sentence for the agent: what went wrong with the connection and what to do next."""


# -- which kernel ----------------------------------------------------------------------------


@dataclass
class Selection:
    """What the user asked for on the command line (or, later, through select_notebook)."""

    notebook: str | None = None
    kernel_id: str | None = None
    url: str | None = None
    token: str | None = None
    cwd: Path = field(default_factory=Path.cwd)

    @classmethod
    def from_env(cls, notebook: str | None, kernel_id: str | None, url: str | None, token: str | None) -> Selection:
        """Command-line values first, then IPYMCP_URL/IPYMCP_TOKEN, then SERVER_URL/TOKEN/NOTEBOOK_PATH
        (the variable names other Jupyter MCP servers use)."""
        env = os.environ
        return cls(
            notebook=notebook or env.get("NOTEBOOK_PATH") or None,
            kernel_id=kernel_id,
            url=url or env.get("IPYMCP_URL") or env.get("SERVER_URL") or None,
            token=token or env.get("IPYMCP_TOKEN") or env.get("TOKEN") or None,
        )

    def describe(self) -> str:
        if self.url:
            return f"--url {self.url}"
        if self.kernel_id:
            return f"--kernel-id {self.kernel_id}"
        if self.notebook:
            return f"--notebook {self.notebook}"
        return f"a notebook under {self.cwd}, else the newest kernel"


def _notebook_matches(info: dict[str, Any], wanted: str, cwd: Path) -> bool:
    path = info.get("notebook_path") or ""
    if not path:
        return False
    if path == wanted or Path(path).name == wanted or Path(path).stem == wanted:
        return True
    candidates = {Path(wanted).expanduser()}
    if not Path(wanted).is_absolute():
        candidates.add(cwd / wanted)
        candidates.add(Path(info.get("cwd") or cwd) / wanted)
    return any(_same_path(Path(path), c) for c in candidates) or path.endswith("/" + wanted.lstrip("./"))


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.expanduser().resolve() == b.expanduser().resolve()
    except OSError:
        return False


def _is_under(path: str | None, directory: Path) -> bool:
    if not path:
        return False
    try:
        Path(path).expanduser().resolve().relative_to(directory.resolve())
    except (OSError, ValueError):
        return False
    return True


def choose_kernel(kernels: list[dict[str, Any]], selection: Selection) -> tuple[dict[str, Any] | None, str]:
    """The kernel to talk to and why, following the documented order. ``kernels`` is newest first."""
    if selection.url:
        if not selection.token:
            return None, f"--url {selection.url} needs --token (or IPYMCP_TOKEN); `%mcp token` in the notebook shows it"
        known = next((k for k in kernels if k.get("url") == selection.url), {})
        return {**known, "url": selection.url, "token": selection.token}, "given with --url"
    if selection.kernel_id:
        for info in kernels:
            if info.get("kernel_id") == selection.kernel_id:
                return info, f"kernel id {selection.kernel_id}"
        return None, f"no running kernel with id {selection.kernel_id} has ipymcp loaded"
    if selection.notebook:
        for info in kernels:
            if _notebook_matches(info, selection.notebook, selection.cwd):
                return info, f"notebook {selection.notebook}"
        return None, f"no running kernel of notebook {selection.notebook} has ipymcp loaded"
    if not kernels:
        return None, "no running kernel has ipymcp loaded"
    # The current directory only decides when it tells kernels apart (a client started in / or ~
    # has every notebook under it).
    by_notebook = [k for k in kernels if _is_under(k.get("notebook_path"), selection.cwd)]
    if by_notebook and len(by_notebook) < len(kernels):
        return by_notebook[0], f"its notebook is under the current directory {selection.cwd}"
    by_cwd = [k for k in kernels if not k.get("notebook_path") and _is_under(k.get("cwd"), selection.cwd)]
    if by_cwd and len(by_cwd) < len(kernels):
        return by_cwd[0], f"its working directory is under the current directory {selection.cwd}"
    if len(kernels) == 1 and (by_notebook or by_cwd):
        return kernels[0], f"the only kernel, under the current directory {selection.cwd}"
    return kernels[0], "the most recently started kernel"


def describe_kernel(info: dict[str, Any]) -> str:
    name = info.get("notebook_path") or f"a kernel in {info.get('cwd') or '?'}"
    kernel_id = info.get("kernel_id")
    return f"{name} (kernel {kernel_id})" if kernel_id else f"{name} at {info.get('url')}"


@dataclass(frozen=True)
class Binding:
    """The notebook a proxy works in, once chosen, until the agent calls select_notebook.

    A restart keeps the kernel id (Jupyter restarts in place) and the notebook path; a notebook
    whose kernel was shut down and started anew keeps only its path. Either finds the same
    notebook again, and nothing else: while it is away, calls fail instead of going elsewhere.
    """

    notebook_path: str | None
    kernel_id: str | None
    label: str

    @classmethod
    def of(cls, info: dict[str, Any]) -> Binding:
        return cls(info.get("notebook_path") or None, info.get("kernel_id") or None, describe_kernel(info))

    def matches(self, info: dict[str, Any]) -> bool:
        if self.kernel_id and info.get("kernel_id") == self.kernel_id:
            return True
        path = info.get("notebook_path")
        if not (self.notebook_path and path):
            return False
        return path == self.notebook_path or _same_path(Path(path), Path(self.notebook_path))

    def find(self, kernels: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The same kernel if it is back, else the newest kernel of the same notebook."""
        same_kernel = [k for k in kernels if self.kernel_id and k.get("kernel_id") == self.kernel_id]
        return next(iter(same_kernel or [k for k in kernels if self.matches(k)]), None)


# What the agent can do while its notebook's kernel is away (restarting, or shut down).
WAIT_ADVICE = (
    "Calls stay with this notebook: retry in a moment (list_notebooks shows when ipymcp is back in its new "
    "kernel; if it does not come back, run `%load_ext ipymcp` in the notebook), or call select_notebook to "
    "work in another notebook."
)


class NotebookAway(ConnectError):
    """The bound notebook has no kernel with ipymcp right now (it is restarting or was shut down)."""

    def __init__(self, binding: Binding):
        super().__init__(
            f"The kernel of {binding.label} is restarting or was shut down (ipymcp does not answer there): "
            f"this call did not run. {WAIT_ADVICE}"
        )
        self.binding = binding

