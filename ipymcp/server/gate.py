"""The connection gate: what a peer without the token can make the server hold.

uvicorn has no deadline for request headers, and ``limit_concurrency`` counts only requests whose
head is complete, so a peer that opens connections and sends half a header holds one file
descriptor each, forever: ~1,100 of them exhaust the kernel's 1024 soft limit and the user's next
``open()`` fails. The gate is a subclass of uvicorn's HTTP protocol that

- caps open connections (``max_connections``): at the cap, a new connection pushes out the oldest
  one that has no request in progress (one that never authenticated first); if every connection
  is busy serving a request, the new one is refused;
- drops a connection whose request head does not complete within ``header_timeout`` (a periodic
  sweep, so nothing is done per request). A connection with a request in progress — an SSE
  stream, a ``subscriptions/listen`` stream, a long tool call — is never dropped for idling.

Work per connection is O(1) (a dict insert and delete); per request, only the bearer-token gate's
mark on the request scope (``TRUSTED_SCOPE_KEY``). The sweep runs every quarter of the timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

log = logging.getLogger("ipymcp.server")

# Set on an HTTP scope by the bearer-token gate once the request carried the right token; the
# gate evicts connections that never authenticated before those that did.
TRUSTED_SCOPE_KEY = "ipymcp.trusted"


class ConnectionGate:
    def __init__(self, max_connections: int, header_timeout: float):
        self.max_connections = max(1, int(max_connections))
        self.header_timeout = max(0.1, float(header_timeout))
        # Open connections, oldest first (dicts keep insertion order): protocol -> sweep state.
        self.open: dict[Any, _Watch] = {}
        self.refused = 0
        self.dropped = 0
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_report = 0.0

    # -- admission (uvicorn's event loop) ---------------------------------------------------------
    def admit(self, connection: Any) -> bool:
        """A new connection: True when it may stay (making room if needed), False to refuse it."""
        if len(self.open) >= self.max_connections:
            victim = self._evictable()
            if victim is None:
                self.refused += 1
                self._report("refused a connection: all %d are serving requests", self.max_connections)
                return False
            self.drop(victim)
            self._report("at max_connections (%d): closed the oldest idle connection", self.max_connections)
        self.open[connection] = _Watch(connection.cycle, time.monotonic())
        return True

    def release(self, connection: Any) -> None:
        self.open.pop(connection, None)

    def drop(self, connection: Any) -> None:
        """Close a connection now; it stops counting at once (its fd is freed on the next loop turn)."""
        self.open.pop(connection, None)
        self.dropped += 1
        transport = getattr(connection, "transport", None)
        if transport is not None and not transport.is_closing():
            transport.abort()

    def _evictable(self) -> Any:
        """The oldest connection with no request in progress, preferring those never trusted."""
        fallback = None
        for connection in self.open:
            if _busy(connection.cycle):
                continue
            if not _trusted(connection.cycle):
                return connection
            if fallback is None:
                fallback = connection
        return fallback

    # -- the header deadline ------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._schedule()

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _schedule(self) -> None:
        assert self._loop is not None
        self._sweeper = self._loop.call_later(max(0.05, self.header_timeout / 4), self._sweep)

    def _sweep(self) -> None:
        """Drop connections that have waited ``header_timeout`` for a request head.

        A connection is waiting when no request is in progress on it; the clock restarts whenever
        a new request starts (its ``cycle`` changes), so keep-alive reuse is never cut short by an
        old deadline. uvicorn's own keep-alive timeout (5 s) still closes idle connections first.
        """
        now = time.monotonic()
        stale = []
        for connection, watch in self.open.items():
            cycle = connection.cycle
            if cycle is not watch.cycle:
                watch.cycle, watch.since = cycle, now
            elif not _busy(cycle) and now - watch.since >= self.header_timeout:
                stale.append(connection)
        for connection in stale:
            self.drop(connection)
        if stale:
            self._report("closed %d connections whose request head did not arrive in time", len(stale))
        self._schedule()

    def _report(self, message: str, *args: Any) -> None:
        # A flood produces one of these per connection: one log line per 10 s is enough.
        now = time.monotonic()
        if now - self._last_report >= 10:
            self._last_report = now
            log.warning(message + " (so far: %d refused, %d closed)", *args, self.refused, self.dropped)


class _Watch:
    __slots__ = ("cycle", "since")

    def __init__(self, cycle: Any, since: float):
        self.cycle = cycle
        self.since = since


def _busy(cycle: Any) -> bool:
    return cycle is not None and not cycle.response_complete


def _trusted(cycle: Any) -> bool:
    return cycle is not None and bool(cycle.scope.get(TRUSTED_SCOPE_KEY))


def gated_protocol(gate: ConnectionGate) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools when installed, else h11) behind ``gate``."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class GatedHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        _admitted = False

        def connection_made(self, transport: Any) -> None:
            if not gate.admit(self):
                transport.abort()  # refused before uvicorn knew of it: nothing else to undo
                return
            self._admitted = True
            super().connection_made(transport)

        def connection_lost(self, exc: Exception | None) -> None:
            if not self._admitted:
                return
            gate.release(self)
            super().connection_lost(exc)

    return GatedHTTPProtocol
