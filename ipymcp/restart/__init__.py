"""Restarts: the agent's restart of the kernel, ipymcp coming back in the new kernel, and notebooks
that load ipymcp when they are opened.

* ``endpoint``: each server's port and token, remembered so the next server of the same kernel or
  notebook has the same URL and token; the restart marker;
* ``rest``: restart through the Jupyter Server's REST API (the notebook view's own restart is the
  ``restart`` op of the notebook protocol, used first by the restart_kernel tool);
* ``comeback``: the helper process that loads ipymcp in the kernel that replaces this one;
* ``share``: ``%mcp share on|off``, the notebook's opt-in;
* ``__main__``: ``python -m ipymcp.restart comeback|rest``, the helpers' command line.

``autoload`` is the entry point of the silent load: the load code in
``frontend/protocol.json`` calls it, and labextensions already installed (possibly of another
ipymcp release) have that code compiled in, so it keeps this name and module.
"""

from __future__ import annotations

from typing import Any


def autoload(shell: Any) -> None:
    """The silent load after a restart or on opening a shared notebook. Not registered with
    IPython's extension manager, so the user's own ``%load_ext ipymcp`` still runs and shows the
    status line in their cell instead of "already loaded"."""
    if "ipymcp" not in shell.extension_manager.loaded:
        from .. import load_ipython_extension

        load_ipython_extension(shell)
