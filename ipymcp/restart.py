"""Restart the kernel for the agent, and come back after a restart.

* ``restart(runtime)``: through the notebook view (the labextension: the same restart the user's
  button does), else through the REST API of the Jupyter Server that manages this kernel (its
  token is read from the server's runtime file by a helper process and never reaches the agent),
  else an error that names the frontend and offers ``reset_namespace``.
* Come back: when a kernel that has ipymcp running is shut down *for a restart* (the
  ``shutdown_request`` says ``restart: true``), it starts a detached helper that waits for the new
  kernel on the same connection file (jupyter_client keeps ports and key across restarts) and
  sends it a silent ``%load_ext ipymcp`` with its own client session. The labextension does the
  same from the notebook view; loading twice is a no-op.
* Same URL and token: each server remembers its port and token per notebook (and per kernel id)
  in a 0600 file in ``discovery.runtime_dir()``, never in the notebook; the next server of that
  notebook reuses them when the port is free. Reading it is one small file: ``%load_ext`` stays fast.
  Stopping sharing forgets them. (The permission level and approval mode come back too, through
  their own memory: ``ipymcp/policy/memory.py``.)

Run as ``python -m ipymcp.restart comeback|rest ...`` for the helpers.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .server import discovery

if TYPE_CHECKING:
    from ._runtime import Runtime

log = logging.getLogger("ipymcp.restart")

# A restart marker older than this is not about the current start (a crashed restart).
MARKER_MAX_AGE = 300.0
# Remembered endpoints of kernels (not notebooks) are dropped after this long.
KERNEL_MEMORY_DAYS = 7
# The notebook view restarts this long after it answered, so the tool's answer gets out first.
VIEW_RESTART_DELAY_MS = 300
REST_RESTART_DELAY = 0.3


class RestartError(Exception):
    """Restart is not possible here; the message says what to do instead."""


# -- the remembered port and token -------------------------------------------------------------


def _memory_files(kernel_id: str | None, notebook_path: str | None) -> list[Path]:
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
    for path in _memory_files(kernel_id, notebook_path):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("port"), int) and data.get("token"):
            return data
    return None


def remember(runtime: Runtime, **extra: Any) -> None:
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
        "saved": _now(),
        **extra,
    }
    for path in _memory_files(runtime.kernel_id, runtime.notebook_path):
        try:
            discovery.write_private_json(path, data)
        except OSError:
            log.warning("could not remember the endpoint in %s", path, exc_info=True)


def forget(runtime: Runtime) -> None:
    """Drop the remembered port and token of this kernel and its notebook (sharing stopped)."""
    for notebook in {runtime._quick_notebook_path(), runtime.notebook_path}:
        for path in _memory_files(runtime.kernel_id, notebook):
            discovery.remove(path)


def forget_old_kernels(now: float | None = None) -> None:
    cutoff = (now or time.time()) - KERNEL_MEMORY_DAYS * 86400
    directory = discovery.runtime_dir()
    for path in [*directory.glob("remember-kernel-*.json"), *directory.glob("policy-kernel-*.json")]:
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except OSError:
            pass


def endpoint_sentence(config: Any) -> str:
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


def bind_remembered(runtime: Runtime) -> socket.socket:
    """Bind the listening socket: the remembered port and token when the port is free (with a
    configured port: its remembered token), else the configured port or a free one. Sets
    ``runtime.resumed``."""
    from .server.thread import bind_socket

    config = runtime.config
    runtime.resumed = None
    if not config.remember_endpoint:
        return bind_socket(config.host, config.port)
    notebook = runtime._quick_notebook_path()
    memory = recall(runtime.kernel_id, notebook)
    # With a fixed port, the token is remembered for that port (a direct-HTTP client keeps working).
    fits = memory is not None and (not config.port or int(memory["port"]) == config.port)
    if memory is not None and fits and memory.get("host", config.host) == config.host:
        try:
            sock = bind_socket(config.host, int(memory["port"]))
        except OSError:
            log.info("remembered port %s is taken: a new port and token", memory["port"])
        else:
            if not config.token:
                runtime.token_holder["token"] = str(memory["token"])
            runtime.resumed = memory
            return sock
    return bind_socket(config.host, config.port)


def on_ready(runtime: Runtime) -> None:
    """On the server thread once it serves: remember the endpoint, report a come-back, and arrange
    to come back after the next restart."""
    resumed = getattr(runtime, "resumed", None) or {}
    remember(runtime)
    marker = resumed.get("restart") or {}
    if marker and _age(marker.get("at")) < MARKER_MAX_AGE:
        from .frontend.fallback import record

        by = "the agent" if marker.get("by") == "agent" else "a kernel restart"
        runtime.came_back = marker
        record(
            runtime,
            "restart_kernel",
            f"kernel restarted ({by}{', through ' + marker['via'] if marker.get('via') else ''})",
            f"ipymcp loaded again by itself at the same URL {runtime.url}",
        )
        log.info("came back after a restart (%s)", marker)
    if runtime.config.reload_after_restart:
        runtime.cleanups.append(lambda: _on_stop(runtime))
    try:
        forget_old_kernels()
    except OSError:
        pass


def _on_stop(runtime: Runtime) -> None:
    """A cleanup: if this stop is a restart's shutdown_request, start the come-back helper."""
    if not restarting(runtime):
        return
    memory = recall(runtime.kernel_id, runtime.notebook_path) or {}
    marker = memory.get("restart") if _age((memory.get("restart") or {}).get("at")) < MARKER_MAX_AGE else None
    remember(runtime, restart=marker or {"by": "restart", "at": _now()})
    connection_file = _connection_file()
    if connection_file is None:
        return
    _spawn(["comeback", "--connection-file", connection_file, "--pid", str(os.getpid())], runtime)


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


# -- restarting on the agent's request ------------------------------------------------------------


def restart_through_rest(runtime: Runtime) -> str:
    """Ask the Jupyter Server that manages this kernel to restart it (from a helper process, so
    the tool's answer gets out first). Returns the server's URL."""
    server_file, url = managing_server(runtime.kernel_id)
    if server_file is None:
        raise RestartError(no_restart_sentence(runtime))
    remember(runtime, restart={"by": "agent", "via": "the Jupyter Server API", "at": _now()})
    _spawn(
        [
            "rest",
            "--server-file",
            str(server_file),
            "--kernel-id",
            runtime.kernel_id,
            "--delay",
            str(REST_RESTART_DELAY),
        ],
        runtime,
    )
    return url


def mark_view_restart(runtime: Runtime, app: str) -> None:
    remember(runtime, restart={"by": "agent", "via": app or "the notebook view", "at": _now()})


def managing_server(kernel_id: str, timeout: float = 2.0) -> tuple[Path | None, str]:
    """The runtime file of the live Jupyter Server that knows ``kernel_id`` (its token stays in it)."""
    from jupyter_core.paths import jupyter_runtime_dir

    for server_file in sorted(Path(jupyter_runtime_dir()).glob("jpserver-*.json")):
        try:
            info = json.loads(server_file.read_text())
            if not discovery.pid_alive(int(info.get("pid", 0))):
                continue
            _server_request(info, "GET", f"/api/kernels/{kernel_id}", timeout)
        except Exception:  # noqa: BLE001 - not this server (404), or not reachable
            continue
        return server_file, str(info.get("url", ""))
    return None, ""


def _server_request(info: dict[str, Any], method: str, path: str, timeout: float) -> Any:
    import urllib.request

    request = urllib.request.Request(
        str(info["url"]).rstrip("/") + path,
        method=method,
        data=b"" if method == "POST" else None,
        headers={"Authorization": f"token {info.get('token', '')}"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback server
        raw = response.read()
    return json.loads(raw) if raw else None


def no_restart_sentence(runtime: Runtime) -> str:
    from .frontend.comm import guess_frontend

    frontend = guess_frontend(runtime.shell)
    where = {
        "vscode": "VS Code",
        "colab": "Colab",
    }.get(
        frontend,
        "this frontend (no ipymcp notebook extension connected, and no Jupyter Server on this machine manages this kernel)",
    )
    return (
        f"Restarting the kernel is not possible from inside {where}. Call reset_namespace() to clear "
        "the user's variables instead (imports and ipymcp stay), or ask the user to restart the kernel "
        "themselves (then `%load_ext ipymcp` again if it does not come back by itself)."
    )


# -- helper processes ----------------------------------------------------------------------------


def _spawn(args: list[str], runtime: Runtime) -> None:
    log_file = str(discovery.runtime_dir() / f"restart-{runtime.kernel_id}.log")
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


def _connection_file() -> str | None:
    try:
        import ipykernel.connect

        path = ipykernel.connect.get_connection_file()
    except Exception:  # noqa: BLE001 - an embedded kernel: nothing to reconnect to
        return None
    return path if path and os.path.exists(path) else None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _age(stamp: Any) -> float:
    try:
        return (_dt.datetime.now(_dt.timezone.utc) - _dt.datetime.fromisoformat(str(stamp))).total_seconds()
    except (TypeError, ValueError):
        return float("inf")


# Binds no name in the user's namespace; see autoload.
LOAD_CODE = "__import__('ipymcp.restart', fromlist=['autoload']).autoload(get_ipython())"


def autoload(shell: Any) -> None:
    """The silent load after a restart or on opening a shared notebook. Not registered with
    IPython's extension manager, so the user's own ``%load_ext ipymcp`` still runs and shows the
    status line in their cell instead of "already loaded"."""
    from . import _state

    if "ipymcp" not in shell.extension_manager.loaded:
        _state.load(shell)


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


def rest_restart(server_file: str, kernel_id: str, delay: float) -> str:
    time.sleep(delay)
    info = json.loads(Path(server_file).read_text())
    _server_request(info, "POST", f"/api/kernels/{kernel_id}/restart", timeout=120)
    return "ok: restarted through the Jupyter Server API"


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ipymcp.restart")
    sub = parser.add_subparsers(dest="command", required=True)
    back = sub.add_parser("comeback", help="load ipymcp in the kernel that replaces pid")
    back.add_argument("--connection-file", required=True)
    back.add_argument("--pid", type=int, required=True)
    back.add_argument("--timeout", type=float, default=90.0)
    rest = sub.add_parser("rest", help="restart a kernel through its Jupyter Server")
    rest.add_argument("--server-file", required=True)
    rest.add_argument("--kernel-id", required=True)
    rest.add_argument("--delay", type=float, default=REST_RESTART_DELAY)
    for p in (back, rest):
        p.add_argument("--log")
    args = parser.parse_args(argv)
    try:
        if args.command == "comeback":
            outcome = comeback(args.connection_file, args.pid, args.timeout)
        else:
            outcome = rest_restart(args.server_file, args.kernel_id, args.delay)
    except Exception as exc:  # noqa: BLE001 - written to the log, nobody else is listening
        outcome = f"failed: {type(exc).__name__}: {exc}"
    if args.log:
        try:
            with open(args.log, "a") as f:
                f.write(f"{_now()} {args.command}: {outcome}\n")
        except OSError:
            pass
    return 0 if outcome.startswith("ok") else 1


if __name__ == "__main__":
    sys.exit(main())


# -- per-notebook opt-in (metadata.ipymcp.share, set through the notebook extension) ---------------


def stop_sharing() -> None:
    """The notice's Stop sharing button: stop ipymcp in this kernel (the view removes the opt-in)."""
    from . import _state

    log.info("stop sharing (from the notebook view)")
    runtime = _state.runtime
    _state.stop()
    if runtime is not None:
        forget(runtime)  # the next start gets a new port and token


def share(runtime: Runtime, on: bool, done: Any) -> None:
    """``%mcp share on|off`` in a background thread (the view answers after the cell ends):
    set or remove ``metadata.ipymcp.share`` in the notebook; ``off`` also stops ipymcp.
    ``done(markdown)`` reports the outcome."""
    from .frontend.comm import FrontendError

    frontend = runtime.frontend
    try:
        if frontend is None or frontend.wait_detected(timeout=10) != "connected":
            raise FrontendError("no notebook view with the ipymcp extension is connected")
        result = frontend.request("share", {"share": on}, timeout=15)
    except FrontendError as exc:
        done(
            f"ipymcp: could not record the opt-in in the notebook ({exc}). Without the JupyterLab / Notebook 7 "
            "extension, put `%load_ext ipymcp` in the notebook's first cell instead"
            + ("" if on else "; `%mcp stop` stops the server now")
            + "."
        )
        if not on:
            stop_sharing()
        return
    saved = "saved" if result.get("saved") else "save the notebook to keep it"
    if on:
        done(
            f"ipymcp: `{result.get('path')}` is shared: `metadata.ipymcp.share = true` ({saved}; no secrets in it). "
            "When the notebook is opened again, the ipymcp extension loads ipymcp in its kernel and shows a notice "
            "with *Stop sharing*. `%mcp share off` undoes it."
        )
    else:
        done(f"ipymcp: sharing stopped and the opt-in removed from `{result.get('path')}` ({saved}).")
        stop_sharing()
