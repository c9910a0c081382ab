"""Come back after a restart: when a kernel running ipymcp is shut down *for a restart* (its
``shutdown_request`` says ``restart: true``), it starts a detached helper process that waits for
the new kernel on the same connection file (jupyter_client keeps ports and key across restarts)
and sends it the silent load code with a client session of its own. The labextension does the
same from the notebook view; loading twice is a no-op.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

from ..frontend.protocol import LOAD_CODE
from ..server import discovery
from . import endpoint, helpers

if TYPE_CHECKING:
    from .._runtime import Runtime

log = logging.getLogger("ipymcp.restart")


# -- in the kernel that stops ------------------------------------------------------------------


def on_stop(runtime: Runtime) -> None:
    """A cleanup of the running server: if this stop is a restart's shutdown_request, keep the
    restart marker (the agent's, or "a restart") and start the come-back helper."""
    if not restarting(runtime):
        return
    marker = endpoint.fresh_marker(endpoint.recall(runtime.kernel_id, runtime.notebook_path))
    endpoint.remember(runtime, restart=marker or {"by": "restart", "at": endpoint.now()})
    connection_file = helpers.connection_file()
    if connection_file is None:
        return
    helpers.spawn(["comeback", "--connection-file", connection_file, "--pid", str(os.getpid())], runtime.kernel_id)


def restarting(runtime: Runtime) -> bool:
    if not getattr(runtime.shell, "exit_now", False):
        return False
    try:
        parent = runtime.kernel.get_parent("control") or {}
    except Exception:  # noqa: BLE001
        return False
    return parent.get("header", {}).get("msg_type") == "shutdown_request" and bool(
        parent.get("content", {}).get("restart")
    )


# -- in the helper process (python -m ipymcp.restart comeback) ----------------------------------


def comeback(connection_file: str, old_pid: int, timeout: float = 90.0) -> str:
    """Wait for the old kernel to exit and the new one to answer, then load ipymcp silently."""
    from jupyter_client import BlockingKernelClient

    deadline = time.monotonic() + timeout
    while discovery.pid_alive(old_pid):
        if time.monotonic() > deadline:
            return f"the old kernel (pid {old_pid}) did not exit"
        time.sleep(0.05)
    client = BlockingKernelClient(connection_file=connection_file)
    client.load_connection_file()
    client.start_channels()
    try:
        _wait_for_ready(client, deadline)
        msg_id = client.execute(LOAD_CODE, silent=True, store_history=False, allow_stdin=False)
        while time.monotonic() < deadline:
            reply = client.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            if reply["parent_header"].get("msg_id") == msg_id:
                content = reply["content"]
                if content.get("status") == "ok":
                    return "ok: ipymcp loaded in the new kernel"
                return f"loading failed: {content.get('ename')}: {content.get('evalue')}"
        return "no reply to the load request"
    finally:
        client.stop_channels()


def _wait_for_ready(client: Any, deadline: float) -> None:
    while True:
        try:
            client.wait_for_ready(timeout=max(1.0, deadline - time.monotonic()))
            return
        except RuntimeError:
            # "Kernel died before replying": one missed heartbeat while the new kernel is still
            # importing on a loaded machine reads as death. It is not; ask again until the deadline.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
