"""Tool families. Each module has ``register(toolbox, runtime)``; names are the public contract."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._runtime import Runtime
    from ..server.app import Toolbox


def register_all(toolbox: Toolbox, runtime: Runtime) -> None:
    from . import kernel

    kernel.register(toolbox, runtime)

    from . import files, processes

    files.register(toolbox, runtime)
    processes.register(toolbox, runtime)

    from . import history

    history.register(toolbox, runtime)

    from . import notebook

    notebook.register(toolbox, runtime)

    from . import restart

    restart.register(toolbox, runtime)
