"""Restart the kernel for the agent through the REST API of the Jupyter Server that manages it.

The request is sent by a helper process a moment later, so the tool's answer gets out first; the
server's token is read from its own server file by that helper and never reaches the agent.
Where no server manages the kernel (VS Code, Colab), the agent is told what to do instead.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

from ..server import jupyter
from . import endpoint, helpers

# The notebook view restarts this long after it answered, so the tool's answer gets out first.
VIEW_RESTART_DELAY_MS = 300
REST_RESTART_DELAY = 0.3


class RestartError(Exception):
    """Restart is not possible here; the message says what to do instead."""


class Restartable(endpoint.Endpoint, Protocol):
    """What a REST restart needs of a running ipymcp (``Runtime`` is one)."""

    shell: Any


def restart_through_rest(runtime: Restartable) -> str:
    """Ask the Jupyter Server that manages this kernel to restart it; returns the server's URL."""
    server = jupyter.managing_server(runtime.kernel_id)
    if server is None:
        raise RestartError(no_restart_sentence(runtime.shell))
    endpoint.mark_restart(runtime, "agent", "the Jupyter Server API")
    arguments = ["rest", "--server-file", str(server.file), "--kernel-id", runtime.kernel_id]
    helpers.spawn([*arguments, "--delay", str(REST_RESTART_DELAY)], runtime.kernel_id)
    return server.url


def no_restart_sentence(shell: Any) -> str:
    from ..frontend.comm import guess_frontend

    where = {"vscode": "VS Code", "colab": "Colab"}.get(
        guess_frontend(shell),
        "this frontend (no ipymcp notebook extension connected, and no Jupyter Server on this machine manages this kernel)",
    )
    return (
        f"Restarting the kernel is not possible from inside {where}. Call reset_namespace() to clear "
        "the user's variables instead (imports and ipymcp stay), or ask the user to restart the kernel "
        "themselves (then `%load_ext ipymcp` again if it does not come back by itself)."
    )


# -- in the helper process (python -m ipymcp.restart rest) ---------------------------------------


def rest_restart(server_file: str, kernel_id: str, delay: float) -> str:
    time.sleep(delay)
    server = jupyter.read_server_file(Path(server_file))
    server.request("POST", f"/api/kernels/{kernel_id}/restart", timeout=120)
    return "ok: restarted through the Jupyter Server API"
