"""uvicorn serving the MCP app on a daemon thread of the kernel process."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("ipymcp.server")


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
    sock.listen(128)
    sock.set_inheritable(False)
    return sock


class BackgroundServer:
    """Run ``build_app()`` under uvicorn in a daemon thread with its own asyncio loop.

    The app is built on the thread (the ``mcp`` import costs ~0.7 s) so ``%load_ext`` returns
    at once. ``ready`` is set when the server accepts requests or failed (see ``error``).
    """

    def __init__(self, sock: socket.socket, build_app: Callable[[], Any], on_ready: Callable[[], None]):
        self.sock = sock
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
                log_config=None,  # never touch the kernel's logging; our logger writes to a file
                log_level="warning",
                lifespan="on",
                timeout_graceful_shutdown=1,
                access_log=False,
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
        await task

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
