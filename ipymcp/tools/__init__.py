"""The tools, one module per family. Tool names and argument names are public API.

A tool is a module-level function whose first parameter is the ``Services`` it works with; the
rest of its signature is the tool's input schema (the SDK derives it), its return annotation the
output schema (``tools.results``), its docstring the description the model reads. Each module
declares its tools on a ``ToolSet``; ``register_all`` hands them to the server's ``Toolbox``,
which runs every call through the request pipeline (``server/pipeline.py``) with the services
bound. To add a tool: write the function in the family's module under ``@tools.tool(level=…)``,
give it a result type, and add it to the README's tool table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..server.app import Toolbox
    from .base import Services


def register_all(toolbox: Toolbox, services: Services) -> None:
    """Every family's tools, in the order tools/list shows them, then the resources. (Imported
    here, not above: ``tools.results`` is imported by ``ipymcp connect``, which needs none of them.)"""
    from . import files, history, kernel, notebook, processes, restart

    for module in (kernel, files, processes, history, notebook, restart):
        for spec in module.tools.specs:
            toolbox.add(spec, services)
    history.register_resources(toolbox.mcp, services)


