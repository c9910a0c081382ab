"""One running ipymcp inside a kernel: the server, the hooks it installed, and how to undo them.

``%load_ext`` must return fast (target 150 ms): only cheap things happen on the main thread
(bind the port, install hooks); the ``mcp`` import and app build happen on the server thread,
and the status line in the loading cell is updated when the server is ready.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from . import _logging
from ._version import __version__
from .config import IPyMCP
from .kernel.bridge import MainThreadBridge
from .kernel.capture import CaptureHooks
from .kernel.history import HistoryStore
from .kernel.status import CellTracker
from .policy import Policy
from .server import discovery
from .server.security import new_token
from .server.thread import BackgroundServer

log = logging.getLogger("ipymcp")


class Runtime:
    def __init__(self, shell: Any, config: IPyMCP | None = None):
        self.shell = shell
        self.kernel = getattr(shell, "kernel", None)
        if self.kernel is None:
            raise RuntimeError("ipymcp needs an IPython kernel (Jupyter, VS Code, Colab); plain IPython is not supported")
        self.config = config or IPyMCP(config=shell.config)
        self.token_holder = {"token": self.config.token or new_token()}
        self.kernel_id = _kernel_id()
        self.bridge = MainThreadBridge(shell, self.kernel)
        self.capture_hooks = CaptureHooks(shell)
        self.cells = CellTracker(shell, self.bridge)
        self.history: HistoryStore | None = None
        self.server: BackgroundServer | None = None
        self.mcp: Any = None
        self.toolbox: Any = None
        self.started_at: str | None = None
        self.notebook_path: str | None = None
        # The remembered endpoint reused at start (ipymcp/restart.py), and the restart it came back from.
        self.resumed: dict[str, Any] | None = None
        self.came_back: dict[str, Any] | None = None
        self.runtime_file = discovery.runtime_file(self.kernel_id)
        self.log_file = discovery.runtime_dir() / f"kernel-{self.kernel_id}.log"
        self._log_handler: logging.Handler | None = None
        self._status_display: Any = None
        self._stop_lock = threading.Lock()
        # Hooks other features add (history tap, comms, terminals…): called on stop, newest first.
        self.cleanups: list[Any] = []
        # The notebook views (ipymcp.frontend.comm.FrontendLink) and the activity output log.
        self.frontend: Any = None
        self.activity: Any = None
        # MCP sessions through Jupyter (ipymcp.server.tunnel.KernelTunnel).
        self.tunnel: Any = None
        # Permission level, approval, audit log, limits (ipymcp/policy).
        self.policy = Policy(self)

    # -- facts -------------------------------------------------------------------------------
    @property
    def token(self) -> str:
        return self.token_holder["token"]

    @property
    def url(self) -> str:
        if self.server is None or not self.server.port:  # no HTTP listener (serve_http = False)
            return ""
        host = self.server.host if ":" not in self.server.host else f"[{self.server.host}]"
        return f"http://{host}:{self.server.port}/mcp"

    @property
    def state(self) -> str:
        if self.server is None:
            return "stopped"
        if self.server.error is not None:
            return f"failed: {type(self.server.error).__name__}: {self.server.error}"
        if self.server.running:
            return "running"
        if not self.server.ready.is_set():
            return "starting"
        return "stopped"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if not self.config.serve_http and self.config.port:
            raise ValueError(
                f"c.IPyMCP.port = {self.config.port} (or IPYMCP_PORT) asks for an HTTP listener, but "
                "c.IPyMCP.serve_http is False (or IPYMCP_SERVE_HTTP=0): drop one of the two"
            )
        self._log_handler = _logging.configure(self.log_file)
        from .restart import bind_remembered

        sock = bind_remembered(self) if self.config.serve_http else None  # the remembered port/token
        self.capture_hooks.install()
        self.cells.install()
        self.history = HistoryStore(
            self.shell, self.kernel, self.config.history_max_bytes, self.config.history_max_output_bytes
        )
        self.history.install()
        self.cleanups.append(self.history.uninstall)
        self.shell.observe(self._on_exit_now, names="exit_now")
        self.started_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.notebook_path = self._quick_notebook_path()
        self._install_frontend()
        self._install_tunnel()
        if sock is None:
            from .server.tunnel_only import TunnelOnlyServer

            self.server = TunnelOnlyServer(self._build_mcp, self._on_ready)
        else:
            self.server = BackgroundServer(sock, self._build_app, self._on_ready)
        self.server.start()
        log.info("starting at %s (kernel %s)", self.url, self.kernel_id)

    def _install_frontend(self) -> None:
        # The notebook link (comm announce, activity output); the server must start without it.
        from .frontend import install

        try:
            install(self)
        except Exception:  # noqa: BLE001
            log.exception("notebook frontend link not started")

    def _install_tunnel(self) -> None:
        # MCP sessions through the kernel's Jupyter websocket (ipymcp.mcp comms); cheap, no SDK import.
        from .server.tunnel import KernelTunnel

        self.tunnel = KernelTunnel(self)
        self.tunnel.install()
        self.cleanups.append(self.tunnel.uninstall)

    def _build_app(self) -> Any:
        from .server.app import build_app  # imports mcp (~0.7 s): on the server thread only

        return build_app(self)

    def _build_mcp(self) -> None:
        from .server.app import build_mcp  # no HTTP app: the tunnel is the only way in

        self.mcp, self.toolbox = build_mcp(self)

    def wait_ready(self, timeout: float | None = None) -> bool:
        if self.server is None:
            return False
        self.server.ready.wait(self.config.start_timeout if timeout is None else timeout)
        return self.server.running

    def _on_ready(self) -> None:
        """On the server thread, once it accepts requests."""
        self.notebook_path = self._lookup_notebook_path() or self.notebook_path
        self._attach_tunnel()
        if self.config.serve_http:  # without a listener there is nothing for a runtime file to name
            discovery.write_private_json(self.runtime_file, self.runtime_info())
        from .restart import on_ready as restart_on_ready

        restart_on_ready(self)  # remember port/token; come back after the next restart
        log.info("ready at %s", self.url)
        self._update_status_display()

    def _attach_tunnel(self) -> None:
        from .server.tunnel_session import SessionHost

        if self.tunnel is not None and self.server is not None and self.server.loop is not None:
            self.tunnel.attach(SessionHost(self.server.loop, self.mcp, self.tunnel))

    def runtime_info(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "token": self.token,
            "pid": os.getpid(),
            "kernel_id": self.kernel_id,
            "notebook_path": self.notebook_path,
            "cwd": os.getcwd(),
            "started": self.started_at,
            "version": __version__,
        }

    def stop(self) -> None:
        """Undo everything ``start`` did; safe to call twice and from any thread."""
        with self._stop_lock:
            log.info("stopping")
            try:
                self.shell.unobserve(self._on_exit_now, names="exit_now")
            except ValueError:
                pass
            while self.cleanups:
                cleanup = self.cleanups.pop()
                try:
                    cleanup()
                except Exception:  # noqa: BLE001 - one failing cleanup must not keep the port open
                    log.exception("cleanup failed")
            if self.server is not None:
                self.server.stop(timeout=1.0, before_stop=self._terminate_sessions)
            discovery.remove(self.runtime_file)
            self.policy.close()
            self.cells.uninstall()
            self.capture_hooks.uninstall()
            self.bridge.close()
            log.info("stopped")
            _logging.unconfigure(self._log_handler)
            self._log_handler = None

    async def _terminate_sessions(self) -> None:
        # Legacy (2025) sessions hold GET streams open; uvicorn's graceful stop waits for them.
        manager = getattr(getattr(self.mcp, "_lowlevel_server", None), "_session_manager", None)
        for transport in list(getattr(manager, "_server_instances", {}).values()):
            try:
                await transport.terminate()
            except Exception:  # noqa: BLE001
                pass

    def _on_exit_now(self, change: dict) -> None:
        # Fires on the Control thread at shutdown_request (restarts included): the earliest hook.
        if change.get("new"):
            self.stop()

    # -- notebook identity (best effort) -----------------------------------------------------
    def _quick_notebook_path(self) -> str | None:
        ns = self.shell.user_ns
        for candidate in (ns.get("__vsc_ipynb_file__"), os.environ.get("JPY_SESSION_NAME"), ns.get("__session__")):
            if isinstance(candidate, str) and candidate.endswith(".ipynb"):
                return candidate
        return None

    def _lookup_notebook_path(self) -> str | None:
        """The current path from the Jupyter server that manages this kernel (follows renames)."""
        vscode = self.shell.user_ns.get("__vsc_ipynb_file__")
        if isinstance(vscode, str):
            return vscode
        try:
            return jupyter_server_notebook_path(self.kernel_id)
        except Exception:  # noqa: BLE001
            log.debug("jupyter server lookup failed", exc_info=True)
            return None

    # -- the status line in the %load_ext cell -------------------------------------------------
    def show_status(self) -> None:
        if not self.config.show_status:
            return
        from IPython.display import display

        self._status_display = display(_StatusLine(self), display_id=True)

    def _update_status_display(self) -> None:
        if self._status_display is not None:
            try:
                self._status_display.update(_StatusLine(self))
            except Exception:  # noqa: BLE001
                log.debug("status update failed", exc_info=True)


class _StatusLine:
    def __init__(self, runtime: Runtime):
        activity = runtime.activity.markdown() if runtime.activity is not None else ""
        self.text = status_sentence(runtime) + activity

    def __repr__(self) -> str:
        return self.text

    def _repr_markdown_(self) -> str:
        return self.text


def status_sentence(runtime: Runtime) -> str:
    state = runtime.state
    if state == "running" and not runtime.url:
        return f"ipymcp {__version__}: MCP server ready, reachable only through Jupyter (no HTTP listener)"
    if state == "running":
        return (
            f"ipymcp {__version__}: MCP server ready at {runtime.url} "
            "(bearer token: `%mcp token`; client set-up: `%mcp config claude-code|claude-desktop|vscode|cursor`)"
        )
    if state == "starting":
        return f"ipymcp {__version__}: starting the MCP server at {runtime.url} … (`%mcp` shows when it is ready)"
    return f"ipymcp {__version__}: server {state} (`%mcp start` to retry; log: {runtime.log_file})"


def _kernel_id() -> str:
    try:
        import ipykernel.connect

        name = Path(ipykernel.connect.get_connection_file()).name
        match = re.match(r"(?:kernel-)?(.+?)(?:\.json)?$", name)
        if match:
            return match.group(1)
    except Exception:  # noqa: BLE001 - no connection file (embedded kernel)
        pass
    return f"pid{os.getpid()}-{uuid.uuid4().hex[:8]}"


def jupyter_server_notebook_path(kernel_id: str, timeout: float = 1.0) -> str | None:
    """Ask each Jupyter server on this machine which session owns ``kernel_id``."""
    from jupyter_core.paths import jupyter_runtime_dir

    for server_file in sorted(Path(jupyter_runtime_dir()).glob("jpserver-*.json")):
        try:
            info = json.loads(server_file.read_text())
            if not discovery.pid_alive(int(info.get("pid", 0))):
                continue
            request = urllib.request.Request(
                info["url"].rstrip("/") + "/api/sessions",
                headers={"Authorization": f"token {info.get('token', '')}"},
            )
            started = time.monotonic()
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback
                sessions = json.load(response)
            log.debug("sessions lookup took %.3f s", time.monotonic() - started)
        except Exception:  # noqa: BLE001
            continue
        for session in sessions:
            if (session.get("kernel") or {}).get("id") == kernel_id:
                root = info.get("root_dir") or ""
                path = session.get("path") or ""
                return str(Path(root) / path) if root else path
    return None
