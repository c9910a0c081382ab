"""Process-wide state that ``%reload_ext ipymcp`` must not re-create (it only re-runs __init__)."""

from __future__ import annotations

from typing import Any

from ._runtime import Runtime

runtime: Runtime | None = None
_magics_registered = False


def load(shell: Any) -> Runtime:
    global runtime, _magics_registered
    if not _magics_registered:
        from .magics import MCPMagics

        shell.register_magics(MCPMagics)
        _magics_registered = True
    if runtime is None:
        runtime = start(shell)
        runtime.show_status()
    else:
        # Loaded silently after a restart (ipymcp.restart.autoload): the user's own %load_ext
        # shows the status line (and the activity output) in their cell.
        runtime.show_status()
    return runtime


def start(shell: Any) -> Runtime:
    global runtime
    if runtime is not None:
        return runtime
    new = Runtime(shell)
    new.start()
    runtime = new
    return new


def stop() -> None:
    global runtime
    current, runtime = runtime, None
    if current is not None:
        current.stop()


def unload(shell: Any) -> None:
    global _magics_registered
    stop()
    if _magics_registered:
        magics = shell.magics_manager.magics
        magics["line"].pop("mcp", None)
        shell.magics_manager.registry.pop("MCPMagics", None)
        _magics_registered = False
