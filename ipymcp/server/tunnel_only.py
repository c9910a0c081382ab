"""The server thread without an HTTP listener (``c.IPyMCP.serve_http = False``).

The kernel is then reachable only through Jupyter (``ipymcp.mcp`` comms, ``server/tunnel.py``):
no port, no bearer token in use, no runtime file. Same interface as ``BackgroundServer`` where
the runtime uses it: ``ready``, ``running``, ``error``, ``loop``, ``call_soon``, ``stop``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from .thread import log_loop_error

log = logging.getLogger("ipymcp.server")


class TunnelOnlyServer:
    """An asyncio loop on a daemon thread that hosts the MCP server for tunnel sessions."""

    host = ""
    port = 0

    def __init__(self, build: Callable[[], Any], on_ready: Callable[[], None]):
        self._build = build
        self._on_ready = on_ready
        self.loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="ipymcp-server", daemon=True)
        self._stop: asyncio.Event | None = None
        self._serving = False

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported through state, like BackgroundServer
            self.error = exc
            log.exception("ipymcp server thread failed")
        finally:
            self._serving = False
            self.ready.set()

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop.set_exception_handler(log_loop_error)  # never into a user's cell (as BackgroundServer)
        self._stop = asyncio.Event()
        self._build()  # imports the SDK and builds the MCP server (~0.7 s), off the kernel's thread
        self._serving = True
        try:
            self._on_ready()
        except Exception:
            log.exception("on_ready failed")
        self.ready.set()
        await self._stop.wait()

    @property
    def running(self) -> bool:
        return self.thread.is_alive() and self._serving

    def call_soon(self, coro_fn: Callable[[], Any], timeout: float = 2.0) -> Any:
        if self.loop is None or not self.thread.is_alive():
            return None
        return asyncio.run_coroutine_threadsafe(coro_fn(), self.loop).result(timeout)

    def stop(self, timeout: float = 2.0, before_stop: Callable[[], Any] | None = None) -> None:
        if self.loop is not None and self._stop is not None and self.thread.is_alive():
            try:
                self.loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # the loop has already closed
                pass
        self.thread.join(timeout)
