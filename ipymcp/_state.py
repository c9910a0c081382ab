"""Process-wide state that ``%reload_ext ipymcp`` must not re-create (it only re-runs __init__):
the running server, and whether ``%mcp`` is registered."""

from __future__ import annotations

import logging
from typing import Any

from ._runtime import Runtime

log = logging.getLogger("ipymcp")

runtime: Runtime | None = None
_magics: type | None = None


def load(shell: Any, magics: type) -> Runtime:
    """``%load_ext ipymcp`` (and the silent load after a restart): ``%mcp``, then the server."""
    global _magics
    if _magics is None:
        shell.register_magics(magics)
        _magics = magics
    # Loaded silently after a restart (ipymcp.restart.autoload), the user's own %load_ext shows the
    # status line (and the activity output) in their cell.
    current = start(shell)
    current.show_status()
    return current


def start(shell: Any) -> Runtime:
    global runtime
    if runtime is not None:
        return runtime
    new = Runtime(shell, on_stop_sharing=stop_sharing)
    new.start()
    runtime = new
    return new


def stop() -> None:
    global runtime
    current, runtime = runtime, None
    if current is not None:
        current.stop()


def stop_sharing() -> None:
    """Stop ipymcp in this kernel and forget its endpoint, so the next start gets a new port and
    token: the notice's Stop sharing button in a notebook view, and ``%mcp share off``."""
    from .restart import endpoint

    log.info("stop sharing")
    current = runtime
    stop()
    if current is not None:
        endpoint.forget(current)


def unload(shell: Any) -> None:
    global _magics
    stop()
    if _magics is not None:
        shell.magics_manager.magics["line"].pop("mcp", None)
        shell.magics_manager.registry.pop(_magics.__name__, None)
        _magics = None
