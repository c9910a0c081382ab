"""Same URL and token after a restart: each server remembers its port and token per kernel id and
per notebook, in owner-only files of ``discovery.runtime_dir()`` (never in the notebook); the next
server of that kernel or notebook reuses them when the port is free. Reading is one small file:
``%load_ext`` stays fast. Stopping sharing forgets them.

The same files carry the restart marker (who restarted the kernel, through what, when), so the
server that comes back can say so. The permission level and approval mode come back through their
own memory (``ipymcp/policy/memory.py``).

A remembered token is only taken from a file only this user can have written
(``discovery.read_private_json``): a file planted by another user would otherwise make the
server accept a token the attacker knows.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..server import discovery

if TYPE_CHECKING:
    from ..config import IPyMCP
    from ..server.thread import BackgroundServer

log = logging.getLogger("ipymcp.restart")

# A restart marker older than this is not about the current start (a crashed restart).
MARKER_MAX_AGE = 300.0
# Remembered endpoints of kernels (not notebooks) are dropped after this long.
KERNEL_MEMORY_DAYS = 7


class Endpoint(Protocol):
    """A running ipymcp as the endpoint memory sees it (``Runtime`` is one)."""

    server: BackgroundServer | None
    kernel_id: str
    notebook_path: str | None

    @property
    def token(self) -> str: ...

    def quick_notebook_path(self) -> str | None: ...


def memory_files(kernel_id: str | None, notebook_path: str | None) -> list[Path]:
    directory = discovery.runtime_dir()
    files = []
    if kernel_id:
        files.append(directory / f"remember-kernel-{kernel_id}.json")
    if notebook_path:
        digest = hashlib.sha256(os.path.abspath(notebook_path).encode()).hexdigest()[:24]
        files.append(directory / f"remember-notebook-{digest}.json")
    return files


def recall(kernel_id: str | None, notebook_path: str | None) -> dict[str, Any] | None:
    """The endpoint this kernel (after a restart) or this notebook (reopened) had last time."""
    for path in memory_files(kernel_id, notebook_path):
        try:
            data = discovery.read_private_json(path)
        except FileNotFoundError:
            continue
        except (discovery.UntrustedFile, OSError) as exc:
            log.warning("ignored %s: %s", path, exc)
            continue
        if isinstance(data.get("port"), int) and data.get("token"):
            return data
    return None


def remember(runtime: Endpoint, **extra: Any) -> None:
    """Write this server's port and token (plus ``extra``, e.g. a restart marker), owner-only."""
    server = runtime.server
    if server is None:
        return
    data = {
        "port": server.port,
        "host": server.host,
        "token": runtime.token,
        "kernel_id": runtime.kernel_id,
        "notebook_path": runtime.notebook_path,
        "saved": now(),
        **extra,
    }
    for path in memory_files(runtime.kernel_id, runtime.notebook_path):
        try:
            discovery.write_private_json(path, data)
        except OSError:
            log.warning("could not remember the endpoint in %s", path, exc_info=True)


def mark_restart(runtime: Endpoint, by: str, via: str | None = None) -> None:
    """Remember that a restart is coming, so the server that comes back can say who did it."""
    marker = {"by": by, "at": now(), **({"via": via} if via else {})}
    remember(runtime, restart=marker)


def fresh_marker(memory: dict[str, Any] | None) -> dict[str, Any] | None:
    """The restart marker of a remembered endpoint, if it is about this start."""
    marker = (memory or {}).get("restart")
    if isinstance(marker, dict) and marker and age(marker.get("at")) < MARKER_MAX_AGE:
        return marker
    return None


def forget(runtime: Endpoint) -> None:
    """Drop the remembered port and token of this kernel and its notebook (sharing stopped)."""
    for notebook in {runtime.quick_notebook_path(), runtime.notebook_path}:
        for path in memory_files(runtime.kernel_id, notebook):
            discovery.remove(path)


def forget_old_kernels(at: float | None = None) -> None:
    cutoff = (at or time.time()) - KERNEL_MEMORY_DAYS * 86400
    directory = discovery.runtime_dir()
    for path in [*directory.glob("remember-kernel-*.json"), *directory.glob("policy-kernel-*.json")]:
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except OSError:
            pass


def endpoint_sentence(config: IPyMCP) -> str:
    """What happens to the URL and token of this server at the next restart, as configured."""
    if config.port:
        url = f"The port is fixed ({config.port})"
    elif config.remember_endpoint:
        url = (
            "The URL is kept when this kernel restarts or this notebook is reopened, as long as its port "
            "is still free (if it was taken meanwhile, the URL and token both change)"
        )
    else:
        url = "The URL changes at every start (c.IPyMCP.remember_endpoint is off)"
    if config.token:
        token = "the token is fixed by your configuration"
    elif config.remember_endpoint:
        token = "the token is kept with it; `%mcp token --rotate` changes it, and `%mcp share off` forgets both"
    else:
        token = "the token changes at every start"
    return f"{url}; {token}."


def bind_remembered(config: IPyMCP, kernel_id: str, notebook: str | None) -> tuple[socket.socket, dict[str, Any] | None]:
    """Bind the listening socket: the remembered port when it is free (with a configured port:
    only that port's memory), else the configured port or a free one. Returns the socket and the
    memory it reused (whose token the server takes, unless one is configured), or None."""
    from ..server.thread import bind_socket

    if not config.remember_endpoint:
        return bind_socket(config.host, config.port), None
    memory = recall(kernel_id, notebook)
    # With a fixed port, the token is remembered for that port (a direct-HTTP client keeps working).
    fits = memory is not None and (not config.port or int(memory["port"]) == config.port)
    if memory is not None and fits and memory.get("host", config.host) == config.host:
        try:
            return bind_socket(config.host, int(memory["port"])), memory
        except OSError:
            log.info("remembered port %s is taken: a new port and token", memory["port"])
    return bind_socket(config.host, config.port), None


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def age(stamp: Any) -> float:
    """Seconds since an ISO time stamp; infinite when it is not one."""
    try:
        return (_dt.datetime.now(_dt.timezone.utc) - _dt.datetime.fromisoformat(str(stamp))).total_seconds()
    except (TypeError, ValueError):
        return float("inf")
