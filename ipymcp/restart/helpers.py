"""Starting the detached helper processes of a restart (``python -m ipymcp.restart comeback|rest``,
see ``__main__``): outside the kernel's process group, so killing the old kernel spares them."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from ..server import discovery

log = logging.getLogger("ipymcp.restart")


def spawn(args: list[str], kernel_id: str) -> None:
    log_file = str(discovery.runtime_dir() / f"restart-{kernel_id}.log")
    subprocess.Popen(  # noqa: S603 - our own module, no shell
        [sys.executable, "-m", "ipymcp.restart", *args, "--log", log_file],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
        start_new_session=True,  # not in the kernel's process group: a kill of the old kernel spares it
        cwd=str(discovery.runtime_dir()),
    )
    log.info("started helper: %s", " ".join(args[:1]))


def connection_file() -> str | None:
    """This kernel's connection file (the new kernel of a restart listens on the same one)."""
    try:
        import ipykernel.connect

        path = ipykernel.connect.get_connection_file()
    except Exception:  # noqa: BLE001 - an embedded kernel: nothing to reconnect to
        return None
    return path if path and os.path.exists(path) else None
