"""The Jupyter servers on this machine, found through their ``jpserver-<pid>.json`` files in the
Jupyter runtime directory: which notebook this kernel belongs to, which server manages it, and
that server's REST API (the restart helper uses it).

A server file carries the server's URL and token, and the kernel acts on what that server says
(the notebook path decides the workspace root and the remembered permissions). So a file is used
only if the user's own Jupyter server can have written it (``discovery.read_users_json``: the
user's, writable by nobody else, in a directory nobody else can write) and its pid is alive: a
file planted by another user is never read, and its server never gets a request.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import discovery

log = logging.getLogger("ipymcp.jupyter")


@dataclass(frozen=True)
class JupyterServer:
    """One running Jupyter server, as its own server file describes it."""

    file: Path
    url: str
    token: str
    root_dir: str
    pid: int

    def request(self, method: str, path: str, timeout: float) -> Any:
        """One REST call with the server's token; the parsed JSON answer (None when empty)."""
        request = urllib.request.Request(
            self.url.rstrip("/") + path,
            method=method,
            data=b"" if method == "POST" else None,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - the user's own server
            raw = response.read()
        return json.loads(raw) if raw else None


def read_server_file(path: Path) -> JupyterServer:
    """The server a trusted server file describes; raises ``discovery.UntrustedFile`` (or
    ``OSError``, ``ValueError``) when the file is not one to act on."""
    info = discovery.read_users_json(path)
    url, pid = info.get("url"), info.get("pid")
    if not isinstance(url, str) or type(pid) is not int:
        raise discovery.UntrustedFile("it lacks the url and pid a Jupyter server writes")
    return JupyterServer(path, url, str(info.get("token") or ""), str(info.get("root_dir") or ""), pid)


def running_servers() -> list[JupyterServer]:
    """Every Jupyter server of this user that is still running (files of others are skipped)."""
    from jupyter_core.paths import jupyter_runtime_dir

    servers = []
    for path in sorted(Path(jupyter_runtime_dir()).glob("jpserver-*.json")):
        try:
            server = read_server_file(path)
        except (discovery.UntrustedFile, OSError, ValueError) as exc:
            log.debug("skipped %s: %s", path, exc)
            continue
        if discovery.pid_alive(server.pid):
            servers.append(server)
    return servers


def notebook_path_of(kernel_id: str, timeout: float = 1.0) -> str | None:
    """The path of the notebook whose session owns ``kernel_id``, asking each running server."""
    for server in running_servers():
        started = time.monotonic()
        try:
            sessions = server.request("GET", "/api/sessions", timeout)
        except Exception:  # noqa: BLE001 - not reachable: ask the next one
            continue
        log.debug("sessions lookup took %.3f s", time.monotonic() - started)
        for session in sessions if isinstance(sessions, list) else []:
            if (session.get("kernel") or {}).get("id") == kernel_id:
                path = session.get("path") or ""
                return str(Path(server.root_dir) / path) if server.root_dir else path
    return None


def managing_server(kernel_id: str, timeout: float = 2.0) -> JupyterServer | None:
    """The running server that knows ``kernel_id`` (its token stays in its file)."""
    for server in running_servers():
        try:
            server.request("GET", f"/api/kernels/{kernel_id}", timeout)
        except Exception:  # noqa: BLE001 - not this server (404), or not reachable
            continue
        return server
    return None
