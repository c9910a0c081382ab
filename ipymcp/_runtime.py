"""One running ipymcp inside a kernel: the server, the hooks it installed, and how to undo them.

``%load_ext`` must return fast (target 150 ms): only cheap things happen on the main thread
(bind the port, install hooks); the ``mcp`` import and app build happen on the server thread,
and the status line in the loading cell is updated when the server is ready.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import re
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _logging
from ._version import __version__
from .config import IPyMCP
from .frontend.comm import FrontendLink
from .frontend.fallback import ActivityLog
from .kernel.capture import CaptureHooks
from .kernel.history import HistoryStore
from .kernel.inspection import InspectionPool
from .kernel.mainthread import MainThreadExecutor
from .kernel.status import CellTracker
from .policy import Policy
from .restart import comeback, endpoint
from .server import discovery
from .server.security import new_token
from .server.thread import BackgroundServer

if TYPE_CHECKING:
    from .processes import Processes
    from .server.app import Toolbox
    from .server.security import BearerAuth
    from .server.tunnel import KernelTunnel

log = logging.getLogger("ipymcp")


class Runtime:
    """Everything ipymcp runs in one kernel. Only ``Runtime`` sets these attributes; the rest of
    the package reads them (tools through ``ipymcp.tools.Services``)."""

    def __init__(self, shell: Any, config: IPyMCP | None = None, on_stop_sharing: Callable[[], None] | None = None):
        kernel = getattr(shell, "kernel", None)
        if kernel is None:
            raise RuntimeError("ipymcp needs an IPython kernel (Jupyter, VS Code, Colab); plain IPython is not supported")
        self.shell: Any = shell
        self.kernel: Any = kernel
        self.config: IPyMCP = config or IPyMCP(config=shell.config)
        # A dict, shared with the HTTP gate (server.security.BearerAuth): rotation changes it in place.
        self.token_holder: dict[str, str] = {"token": self.config.token or new_token()}
        self.kernel_id: str = _kernel_id()
        # Where the kernel was when ipymcp loaded: the workspace root when nothing else says.
        self.load_cwd: str = os.getcwd()
        self.main_thread = MainThreadExecutor(shell, kernel)
        self.capture_hooks = CaptureHooks(shell)
        self.cells = CellTracker(shell, self.main_thread)
        self.history: HistoryStore | None = None
        self.server: BackgroundServer | None = None
        # The SDK's MCPServer and ipymcp's Toolbox, built on the server thread (server/app.py).
        self.mcp: Any = None
        self.toolbox: Toolbox | None = None
        # The HTTP gate, once the app is built: rotation ends its requests.
        self.http_auth: BearerAuth | None = None
        # The agent's commands and background processes (made on the server thread, with the tools).
        self.processes: Processes | None = None
        self.started_at: str | None = None
        self.notebook_path: str | None = None
        # The remembered endpoint reused at start (restart/endpoint.py), and the restart marker it carried.
        self.resumed: dict[str, Any] | None = None
        self.came_back: dict[str, Any] | None = None
        self.runtime_file: Path = discovery.runtime_file(self.kernel_id)
        self.log_file: Path = discovery.runtime_dir() / f"kernel-{self.kernel_id}.log"
        # The status line (and activity output) in the cell that ran %load_ext.
        self.status_display: Any = None
        # Hooks run on stop, newest first (history tap, comms, processes…).
        self.cleanups: list[Callable[[], None]] = []
        # The notebook views (labextension comms) and the activity output, once started.
        self.frontend: FrontendLink | None = None
        self.activity: ActivityLog | None = None
        # MCP sessions through the kernel's Jupyter websocket (server/tunnel.py), once started.
        self.tunnel: KernelTunnel | None = None
        # Permission level, approval, audit log, limits (ipymcp/policy).
        self.policy = Policy(self)
        self.inspection = InspectionPool(self.config.inspection_threads, self.policy.pacer.charge)
        self._on_stop_sharing = on_stop_sharing or self.stop
        self._log_handler: logging.Handler | None = None
        self._stop_lock = threading.Lock()

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
        sock = None
        if self.config.serve_http:
            # The remembered port and token after a restart, when the port is free.
            sock, self.resumed = endpoint.bind_remembered(self.config, self.kernel_id, self.quick_notebook_path())
            if self.resumed is not None and not self.config.token:
                self.token_holder["token"] = str(self.resumed["token"])
        self.capture_hooks.install()
        self.main_thread.install()
        self.cells.install()
        self.history = HistoryStore(
            self.shell, self.kernel, self.config.history_max_bytes, self.config.history_max_output_bytes
        )
        self.history.install()
        self.cleanups.append(self.history.uninstall)
        self.cleanups.append(self.inspection.close)
        self.shell.observe(self._on_exit_now, names="exit_now")
        self.started_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.notebook_path = self.quick_notebook_path()
        self._install_frontend()
        self._install_tunnel()
        if sock is None:
            from .server.tunnel_only import TunnelOnlyServer

            self.server = TunnelOnlyServer(self._build_mcp, self._on_ready)
        else:
            self.server = BackgroundServer(
                sock,
                self._build_app,
                self._on_ready,
                max_connections=self.config.max_connections,
                header_timeout=self.config.header_timeout,
            )
        self.server.start()
        log.info("starting at %s (kernel %s)", self.url, self.kernel_id)

    def _install_frontend(self) -> None:
        """The activity output and the notebook link (comm announce); the server starts without them."""
        try:
            self.activity = ActivityLog(self.update_status_display, self.known_tokens)
            self.cleanups.append(self.activity.close)
            self.frontend = FrontendLink(self, self._on_stop_sharing)
            self.frontend.start()
            self.cleanups.append(self.frontend.stop)
        except Exception:  # noqa: BLE001
            log.exception("notebook frontend link not started")

    def _install_tunnel(self) -> None:
        # MCP sessions through the kernel's Jupyter websocket (ipymcp.mcp comms); cheap, no SDK import.
        from .server.tunnel import KernelTunnel

        self.tunnel = KernelTunnel(self)
        self.tunnel.install()
        self.cleanups.append(self.tunnel.uninstall)

    def _build_app(self) -> Any:
        """On the server thread: the agent's process table, then the app (imports mcp, ~0.7 s)."""
        from .server.app import build_app

        self._before_first_request()
        self.mcp, self.toolbox, self.http_auth = build_app(self)
        return self.http_auth

    def _build_mcp(self) -> None:
        """On the server thread, without an HTTP listener: the tunnel is the only way in."""
        from .server.app import build_mcp

        self._before_first_request()
        self.mcp, self.toolbox = build_mcp(self)

    def _before_first_request(self) -> None:
        from .processes import Processes

        config = self.config
        self.processes = Processes(config.process_buffer_bytes, config.process_stop_grace, config.max_processes)
        self.cleanups.append(self.processes.close)
        # Before the first request is served (the socket only queues connections until then).
        self.policy.tighten_from_notebook()

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
            endpoint.remember(self)  # the same port and token after the next restart
        self.came_back = endpoint.fresh_marker(self.resumed)
        if self.came_back is not None:
            self._report_come_back(self.came_back)
        if self.config.reload_after_restart:
            self.cleanups.append(lambda: comeback.on_stop(self))
        try:
            endpoint.forget_old_kernels()
        except OSError:
            pass
        log.info("ready at %s", self.url)
        self.update_status_display()

    def _report_come_back(self, marker: dict[str, Any]) -> None:
        by = "the agent" if marker.get("by") == "agent" else "a kernel restart"
        via = f", through {marker['via']}" if marker.get("via") else ""
        if self.activity is not None:
            self.activity.record(
                "restart_kernel", f"kernel restarted ({by}{via})", f"ipymcp loaded again by itself at the same URL {self.url}"
            )
        log.info("came back after a restart (%s)", marker)
        if self.frontend is not None:
            self.frontend.send_state()  # every view's banner says it came back

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

    def replace_token(self, new: str) -> None:
        """From now on requests need ``new`` (the gate reads the same dict: see ``token_holder``)."""
        self.token_holder["token"] = new

    def known_tokens(self) -> list[str]:
        """The current token and the rotated ones still worth hiding from outputs and logs."""
        return [t for t in (self.token, *self.policy.retired_tokens) if t]

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
                self.server.stop(timeout=1.0, before_stop=self.terminate_sessions)
            discovery.remove(self.runtime_file)
            self.policy.close()
            self.cells.uninstall()
            self.capture_hooks.uninstall()
            self.main_thread.close()
            log.info("stopped")
            _logging.unconfigure(self._log_handler)
            self._log_handler = None

    async def terminate_sessions(self) -> None:
        """On the server loop: end every handshake-era session (their GET streams would hold
        uvicorn's graceful stop, and a rotated token must not keep them)."""
        if self.mcp is not None:
            from .server.sdk_compat import terminate_sessions

            await terminate_sessions(self.mcp)

    def _on_exit_now(self, change: dict) -> None:
        # Fires on the Control thread at shutdown_request (restarts included): the earliest hook.
        if change.get("new"):
            self.stop()

    # -- notebook identity (best effort) -----------------------------------------------------
    def quick_notebook_path(self) -> str | None:
        """The notebook's path as the frontend told the kernel (no network): VS Code's variable,
        Jupyter's ``JPY_SESSION_NAME``, IPython's ``__session__``."""
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
        from .server import jupyter

        try:
            return jupyter.notebook_path_of(self.kernel_id)
        except Exception:  # noqa: BLE001
            log.debug("jupyter server lookup failed", exc_info=True)
            return None

    # -- the status line in the %load_ext cell -------------------------------------------------
    def show_status(self) -> None:
        if not self.config.show_status:
            return
        from IPython.display import display

        self.status_display = display(_StatusLine(self), display_id=True)

    def update_status_display(self) -> None:
        if self.status_display is not None:
            try:
                self.status_display.update(_StatusLine(self))
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
