"""uvicorn serving the MCP app on a daemon thread of the kernel process."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from .gate import ConnectionGate, gated_protocol

log = logging.getLogger("ipymcp.server")

LISTEN_BACKLOG = 128


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind the listening socket up front, so the URL is known before the server starts.

    IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto is 6;
    with proto 0, Nagle + delayed ACK add ~45 ms to every keep-alive request.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(LISTEN_BACKLOG)
    sock.set_inheritable(False)
    return sock


class BackgroundServer:
    """Run ``build_app()`` under uvicorn in a daemon thread with its own asyncio loop.

    The app is built on the thread (the ``mcp`` import costs ~0.7 s) so ``%load_ext`` returns
    at once. ``ready`` is set when the server accepts requests or failed (see ``error``).
    Connections pass the ``ConnectionGate`` (``max_connections``, ``header_timeout``).
    """

    def __init__(
        self,
        sock: socket.socket,
        build_app: Callable[[], Any],
        on_ready: Callable[[], None],
        *,
        max_connections: int = 100,
        header_timeout: float = 10.0,
    ):
        self.sock = sock
        self.gate = ConnectionGate(max_connections, header_timeout)
        self.host, self.port = sock.getsockname()[:2]
        self._build_app = build_app
        self._on_ready = on_ready
        self.server: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="ipymcp-server", daemon=True)
        self._stopping = False

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            import uvicorn

            app = self._build_app()
            config = uvicorn.Config(
                app,
                http=gated_protocol(self.gate),
                log_config=None,  # never touch the kernel's logging; our logger writes to a file
                log_level="warning",
                lifespan="on",
                timeout_graceful_shutdown=1,
                access_log=False,
                # The audit log's peer is the socket's: uvicorn would otherwise believe an
                # X-Forwarded-For header from 127.0.0.1, i.e. from any local process.
                proxy_headers=False,
                # asyncio re-listens with this backlog and accepts up to that many connections in
                # one go, each taking a file descriptor before the gate sees it: uvicorn's 2048
                # would let one burst exhaust a 1024 limit (measured peak: 584 fds vs 331 at 128).
                backlog=LISTEN_BACKLOG,
            )
            self.server = uvicorn.Server(config)
            asyncio.run(self._serve())
        except BaseException as exc:  # uvicorn calls sys.exit(3) on startup failure
            self.error = exc
            if not self._stopping:
                log.exception("ipymcp server thread failed")
        finally:
            self.ready.set()
            try:
                self.sock.close()
            except OSError:
                pass

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        # asyncio's default handler logs to the "asyncio" logger, which the user's code owns and
        # which, without a handler, prints into whatever cell runs: this loop's errors (failed
        # accepts, unretrieved task exceptions) go to ipymcp's log file instead.
        self.loop.set_exception_handler(log_loop_error)
        self.gate.start(self.loop)
        task = asyncio.ensure_future(self.server.serve(sockets=[self.sock]))
        while not self.server.started and not task.done():
            await asyncio.sleep(0.005)
        if self.server.started:
            try:
                # Before ready is set, so whoever waits for ready also finds the runtime file.
                # It blocks this loop for at most ~1 s (a Jupyter server lookup) at start-up.
                self._on_ready()
            except Exception:
                log.exception("on_ready failed")
            self.ready.set()
        try:
            await task
        finally:
            self.gate.stop()

    @property
    def running(self) -> bool:
        return self.thread.is_alive() and self.server is not None and bool(self.server.started)

    def call_soon(self, coro_fn: Callable[[], Any], timeout: float = 2.0) -> Any:
        """Run an async function on the server loop from another thread and wait for it."""
        if self.loop is None or not self.thread.is_alive():
            return None
        fut = asyncio.run_coroutine_threadsafe(coro_fn(), self.loop)
        return fut.result(timeout)

    def stop(self, timeout: float = 2.0, before_stop: Callable[[], Any] | None = None) -> None:
        """Stop serving and join the thread; the port is free when this returns."""
        self._stopping = True
        if before_stop is not None and self.running:
            try:
                self.call_soon(before_stop, timeout=timeout / 2)
            except Exception:
                log.debug("before_stop failed", exc_info=True)
        if self.server is not None:
            self.server.should_exit = True
            # force_exit skips waiting on open keep-alive connections and SSE streams
            deadline = time.monotonic() + timeout
            self.thread.join(max(0.0, timeout / 2))
            if self.thread.is_alive():
                self.server.force_exit = True
                self.thread.join(max(0.0, deadline - time.monotonic()))
        elif self.thread.is_alive():
            self.thread.join(timeout)
        try:
            self.sock.close()
        except OSError:
            pass


_last_loop_error: dict[str, float] = {}


def log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The server loop's exception handler: one line in ipymcp's log per kind of error per 10 s."""
    message = str(context.get("message") or "error in the server loop")
    exception = context.get("exception")
    kind = f"{message}|{type(exception).__name__}"
    now = time.monotonic()
    if now - _last_loop_error.get(kind, -60.0) < 10:
        return
    if len(_last_loop_error) > 100:
        _last_loop_error.clear()
    _last_loop_error[kind] = now
    log.error("server loop: %s", message, exc_info=exception if isinstance(exception, BaseException) else None)
