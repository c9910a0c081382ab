"""ipymcp: ``%load_ext ipymcp`` runs an MCP server inside this kernel.

Kept tiny on purpose: ``%reload_ext`` re-executes this module, so process-wide state (the running
server) lives in ``ipymcp._state``, which a reload does not touch.
"""

from __future__ import annotations

from ._version import __version__

__all__ = ["__version__", "load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(ipython):  # noqa: ANN001, ANN201 - IPython's hook signature
    from . import _state
    from .magics import MCPMagics

    _state.load(ipython, MCPMagics)


def unload_ipython_extension(ipython):  # noqa: ANN001, ANN201
    from . import _state

    _state.unload(ipython)


def _jupyter_labextension_paths():  # noqa: ANN202
    return [{"src": "labextension", "dest": "ipymcp"}]
