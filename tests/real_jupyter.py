"""A real Jupyter server for tests: a free port, its own token, the session's private Jupyter dirs."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterServer:
    """``python -m <module>`` (jupyter_server, or jupyterlab for the browser suites) serving ``root``."""

    # The interpreter of the server's environment (its kernels run there too, as python3).
    python = sys.executable

    def __init__(
        self,
        root: Path,
        module: str = "jupyter_server",
        extra_args: tuple[str, ...] = (),
        timeout: float = 90,
        tls_ca: Path | None = None,  # serving https (certfile/keyfile in extra_args) with a cert from this CA
    ):
        self.root, self.port, self.token = root, free_port(), uuid.uuid4().hex
        self.base = f"{'https' if tls_ca else 'http'}://127.0.0.1:{self.port}"
        self.ssl_context = ssl.create_default_context(cafile=str(tls_ca)) if tls_ca else None
        self.log = open(root.parent / "jupyter-server.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                self.python, "-m", module, "--no-browser", "--allow-root", "--ip=127.0.0.1",
                f"--port={self.port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={root}", *extra_args,
            ],
            cwd=root, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.api("GET", "/api/status")
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{module} did not start; see {self.log.name}") from None
                time.sleep(0.2)

    def api(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
        request = urllib.request.Request(
            self.base + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout, context=self.ssl_context) as response:  # noqa: S310
            raw = response.read()
        return json.loads(raw) if raw else None

    def stop(self) -> None:
        try:
            for session in self.api("GET", "/api/sessions"):
                try:
                    self.api("DELETE", f"/api/sessions/{session['id']}")
                except OSError:
                    pass
        except OSError:
            pass
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
