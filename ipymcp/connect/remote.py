"""``ipymcp connect --server``: the same stdio proxy, to kernels on a Jupyter server, through each
kernel's own websocket (``ipymcp.remote``).

- ``RemoteKernels``: the server's notebook kernels with ipymcp loaded. The list comes from REST
  (``/api/sessions``); whether ipymcp is loaded from one probe per kernel (an ``ipymcp.mcp`` comm
  opened and closed), remembered. Tunnel traffic is kernel activity (it would keep a hub's idle
  culler from stopping the server), so the bridge's own background look never probes a kernel it
  has already asked: kernels are asked again only when the agent asks (a call while not connected,
  list_notebooks, select_notebook), or right after restart_kernel.
- ``RemoteUpstream``: one MCP session through a ``KernelTunnelTransport``; the transport re-opens
  a dropped websocket by itself (calls in flight fail with "may or may not have run"), and its
  end (the kernel restarted, died, or ended the session) ends the upstream.
- ``RemoteProxy``: the proxy with those, the kernel's state from REST for kernels it is not
  connected to, and restart_kernel carried out through REST once the kernel's pipeline decided.

The Jupyter token lives in the ``Endpoint`` only: it goes to the Jupyter server in the
``Authorization`` header, never into a kernel, a log line or anything the agent reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import mcp_types as types
from mcp.client.subscriptions import SubscriptionLost
from mcp.server.subscriptions import PromptsListChanged, ResourcesListChanged, ToolsListChanged
from mcp.shared.exceptions import MCPError

from ..remote import (
    Endpoint,
    KernelTunnelTransport,
    ServerAPI,
    ServerError,
    ServerMisconfigured,
    ServerNotRunning,
    TunnelOptions,
    probe_kernel,
)
from ..remote.tunnel import CONNECTION_LOST
from ..text import report_progress
from .proxy import RESTART_TIMEOUT, Proxy, _lost_sentence, _restart_started
from .selection import ConnectError, Selection, choose_kernel, describe_kernel
from .upstream import ConnectionLost, Upstream

log = logging.getLogger("ipymcp.connect")

# A probe is one short kernel request; a kernel that does not answer in this time is skipped
# (not remembered: it may be busy on an old ipykernel).
PROBE_TIMEOUT = 8.0
# How long a session that ended without saying why is watched for its kernel's shutdown (REST).
GONE_WAIT = 5.0


def kernel_info(endpoint: Endpoint, session: dict[str, Any]) -> dict[str, Any] | None:
    """A session of ``/api/sessions`` in the shape the proxy uses for kernels (no token in it)."""
    kernel = session.get("kernel") or {}
    kernel_id = kernel.get("id")
    if not isinstance(kernel_id, str):
        return None
    return {
        "kernel_id": kernel_id,
        "notebook_path": session.get("path") or session.get("name") or None,
        "url": endpoint.http_url(f"api/kernels/{kernel_id}"),  # identifies the kernel; never has the token
        "started": kernel.get("last_activity"),
        "cwd": None,
        "execution_state": kernel.get("execution_state"),
        "remote": True,
    }


class RemoteKernels:
    """The Jupyter server's sessions whose kernel has ipymcp loaded, newest activity first."""

    def __init__(self, endpoint: Endpoint, options: TunnelOptions):
        self.endpoint = endpoint
        self.options = options
        self.api = ServerAPI(endpoint)
        self._loaded: dict[str, bool] = {}  # kernel id -> ipymcp answered (True) or said not loaded
        self.probes = 0  # kernel requests made by probing (tests read it)

    async def sessions(self) -> list[dict[str, Any]]:
        """Every notebook kernel on the server (REST only), newest activity first."""
        rows = [kernel_info(self.endpoint, s) for s in await self.api.sessions()]
        found = [row for row in rows if row is not None]
        found.sort(key=lambda row: str(row.get("started") or ""), reverse=True)
        return found

    async def with_ipymcp(self, *, recheck: bool) -> list[dict[str, Any]]:
        """The kernels with ipymcp loaded. ``recheck``: ask again the kernels that said "not
        loaded" (the agent is waiting; the user may have run ``%load_ext ipymcp`` since)."""
        rows = await self.sessions()
        ask = [row for row in rows if row["kernel_id"] not in self._loaded or (recheck and not self._loaded[row["kernel_id"]])]
        if ask:
            await asyncio.gather(*(self.probe(row) for row in ask))
        return [row for row in rows if self._loaded.get(row["kernel_id"])]

    async def probe(self, row: dict[str, Any]) -> bool:
        self.probes += 1
        options = TunnelOptions(
            route=self.options.route,
            message_type=self.options.message_type,
            framing=self.options.framing,
            open_timeout=PROBE_TIMEOUT,
        )
        probe = await probe_kernel(self.endpoint, row["kernel_id"], options)
        if probe.answered:
            self._loaded[row["kernel_id"]] = probe.loaded
        log.debug("probe of %s: %s", describe_kernel(row), probe.detail)
        if probe.server_info:
            row["pid"] = probe.server_info.get("pid")
        return probe.loaded

    async def not_running(self) -> str | None:
        """The sentence to tell when the server is a JupyterHub user server that is not running."""
        try:
            await self.api.status()
        except ServerNotRunning as exc:
            return str(exc)
        except ServerError:
            pass
        return None

    def forget(self, kernel_id: str | None) -> None:
        """Ask this kernel again next time (it restarted, or a connection to it failed)."""
        self._loaded.pop(kernel_id or "", None)

    async def aclose(self) -> None:
        await self.api.aclose()


class RemoteUpstream(Upstream):
    """One MCP session with a kernel's ipymcp, through its websocket on the Jupyter server."""

    def __init__(self, info: dict[str, Any], on_event: Any, kernels: RemoteKernels):
        super().__init__(info, on_event)
        self.kernels = kernels
        self.endpoint = kernels.endpoint
        self.options = kernels.options
        self.transport: KernelTunnelTransport | None = None

    async def open_transport(self, stack: contextlib.AsyncExitStack) -> Any:
        self.transport = KernelTunnelTransport(self.endpoint, self.info["kernel_id"], self.options)
        return self.transport  # entered (opened) by the SDK's Client

    async def watch_transport(self) -> None:
        assert self.transport is not None
        transport = self.transport
        await transport.finished.wait()
        reason = transport.ended
        self.error = ConnectionError(reason)
        if "idle for more than" in reason:
            # The kernel ended a session nobody used: nothing was lost, the next call reconnects.
            self.loss_reported = True
            self.loss = f"The MCP session with {describe_kernel(self.info)} had ended ({reason}); this call did not run: retry it."
        elif "kernel is restarting" not in reason and "kernel is dead" not in reason:
            self.loss = await self._loss_sentence(reason)  # before dead: the proxy reads it then
        self.close()
        self.dead.set()  # unusable now; closing the transport can take seconds on a gone kernel
        log.info("session with %s ended: %s", describe_kernel(self.info), reason)

    async def _loss_sentence(self, reason: str) -> str:
        """Not known to be a restart: REST tells a kernel that was shut down from one still there
        (the websocket could not be re-opened, %unload_ext…: its variables may well be there)."""
        # ipymcp stops at the shutdown request, a moment before the server forgets the kernel.
        deadline = anyio.current_time() + GONE_WAIT
        with contextlib.suppress(ServerError):
            while anyio.current_time() < deadline:
                if await self.kernels.api.kernel(self.info["kernel_id"]) is None:
                    return _lost_sentence(self.info).replace("it restarted or shut down", "it was shut down")
                await anyio.sleep(0.25)
        return f"The session with {describe_kernel(self.info)} ended ({reason}); this call did not run."

    def listen_again(self, exc: Exception) -> bool:
        # A dropped websocket fails every request in flight, the listen stream too; the transport
        # re-opened it (or ends, which ends this upstream anyway).
        transport = self.transport
        dropped = isinstance(exc, SubscriptionLost) or (isinstance(exc, MCPError) and exc.code == CONNECTION_LOST)
        return dropped and transport is not None and not transport.ended

    def connect_failure(self, exc: BaseException) -> str:
        from .upstream import root_cause

        cause = root_cause(exc)
        for prefix in ("TunnelError: ", "NotLoadedError: ", "KernelConnectionError: "):
            cause = cause.removeprefix(prefix)
        return f"could not open an MCP session with {describe_kernel(self.info)} through the Jupyter server: {cause}"

    async def call(self, fn: Callable[[Any], Awaitable[Any]]) -> Any:
        """As ``Upstream.call``; once the kernel ended the session, one sentence says why (the
        dropped websocket's "may or may not have run" error passes as it is)."""
        transport = self.transport
        if transport is not None and transport.ended:
            await self.dead.wait()  # the loss sentence is ready then
            raise ConnectionLost(self.error, self.loss_text("did not run"))
        try:
            return await super().call(fn)
        except MCPError as exc:
            if exc.code != CONNECTION_LOST or transport is None or not transport.ended:
                raise
            cause: BaseException = exc
        except ConnectionLost as exc:
            if transport is None or not transport.ended:
                raise
            cause = exc
        await self.dead.wait()
        raise ConnectionLost(cause, self.loss_text("did not complete")) from cause

    def loss_text(self, ran: str) -> str:
        return self.loss.replace("did not run", ran) if self.loss else _lost_sentence(self.info, ran)


class RemoteProxy(Proxy):
    """``ipymcp connect --server``: the proxy, for the notebooks of one Jupyter server."""

    def __init__(self, selection: Selection, endpoint: Endpoint, options: TunnelOptions | None = None):
        super().__init__(selection)
        self.endpoint = endpoint
        self.options = options or TunnelOptions(restarts_kernel=True)
        self.remote = RemoteKernels(endpoint, self.options)

    async def kernels(self, *, agent: bool = True) -> list[dict[str, Any]]:
        try:
            return await self.remote.with_ipymcp(recheck=agent)
        except ServerError as exc:
            raise ConnectError(str(exc)) from exc

    async def _rediscover(self, *, agent: bool = True) -> tuple[dict[str, Any] | None, str]:
        try:
            return await super()._rediscover(agent=agent)
        except ConnectError as exc:
            return None, str(exc)

    def choose(self, kernels: list[dict[str, Any]], selection: Selection) -> tuple[dict[str, Any] | None, str]:
        if selection.kernel_id or selection.notebook:
            info, because = choose_kernel(kernels, selection)
            if info is None:
                because += f" on {self.endpoint.display_url} (or it is not a notebook session there)"
            return info, because
        if not kernels:
            return None, f"no notebook on {self.endpoint.display_url} has ipymcp loaded"
        return kernels[0], f"the most recently active notebook with ipymcp on {self.endpoint.display_url}"

    def new_upstream(self, info: dict[str, Any]) -> Upstream:
        return RemoteUpstream(info, self._forward_event, self.remote)

    async def connect(self, info: dict[str, Any], because: str) -> Upstream:
        try:
            upstream = await super().connect(info, because)
        except (ConnectError, TimeoutError):
            self.remote.forget(info.get("kernel_id"))
            raise
        transport = getattr(upstream, "transport", None)
        if transport is not None and transport.route is not None:
            info["route"] = transport.route.describe()
            info["pid"] = transport.server_info.get("pid")
            if not transport.route.answers_while_busy:
                log.warning("%s: %s", describe_kernel(info), transport.route.describe())
        return upstream

    async def _watch(self, upstream: Upstream) -> None:
        await upstream.dead.wait()
        self.remote.forget(upstream.info.get("kernel_id"))  # restarted or gone: ask it again
        await super()._watch(upstream)

    async def _where_calls_go_now(self) -> str:
        stopped = await self.remote.not_running()  # a hub stopped the whole server: no new kernel coming
        return stopped + "." if stopped else await super()._where_calls_go_now()

    def instructions(self) -> str:
        text = super().instructions()
        info = self.upstream.info if self.upstream is not None else {}
        route = info.get("route")
        if route and "waits until" in route:
            text += f"\n\nThis kernel is reached through {route}."
        return text

    async def _kernel_state(self, info: dict[str, Any], current: Upstream | None) -> str:
        """The connected kernel answers kernel_status; the others' state comes from REST, so
        listing notebooks is not activity in every kernel."""
        if current is not None and info.get("url") == current.info.get("url"):
            return await super()._kernel_state(info, current)
        state = info.get("execution_state")
        return f"{state} (Jupyter server)" if isinstance(state, str) else "unknown"

    async def _wait_for_restart(
        self, result: types.CallToolResult, progress: Callable[[float, float | None, str | None], Awaitable[None]]
    ) -> types.CallToolResult:
        """The kernel's pipeline decided (level, approval, audit); restart it through REST (unless
        an older ipymcp in the kernel restarted it itself), then wait for ipymcp in the new kernel."""
        facts = _restart_started(result) or {}
        old = self.upstream
        kernel_id = facts.get("kernel_id") or (old.info.get("kernel_id") if old else None)
        if old is not None:
            old.loss_reported = True  # the agent asked for it: not a loss to report
        self._lost_notice = None
        started = anyio.current_time()
        if (result.meta or {}).get("restart_by_client"):
            try:
                await self.remote.api.restart_kernel(str(kernel_id))
            except ServerError as exc:
                return _error(f"The kernel approved the restart, but the Jupyter server did not restart it: {exc}.")
        self.remote.forget(kernel_id)
        await report_progress(progress, anyio.current_time() - started, "waiting for ipymcp to load in the new kernel")
        with anyio.move_on_after(RESTART_TIMEOUT):
            while True:
                back = await self._restarted_kernel(str(kernel_id), facts.get("pid"))
                if back is not None:
                    async with self._switch_lock:
                        try:
                            upstream = await self.connect(back, "the same kernel after restart_kernel")
                        except (ConnectError, TimeoutError):
                            upstream = None
                    if upstream is not None:
                        self._lost_notice = None
                        await self._announce(ToolsListChanged(), PromptsListChanged(), ResourcesListChanged())
                        return self._restarted(upstream, anyio.current_time() - started)
                await anyio.sleep(0.5)
                elapsed = anyio.current_time() - started
                await report_progress(progress, elapsed, "waiting for the kernel to restart and ipymcp to load")
        return _error(
            f"The kernel restart started, but ipymcp did not come back within {RESTART_TIMEOUT:g} s (the kernel "
            "may have failed to start, or c.IPyMCP.reload_after_restart is off). Ask the user to run "
            "`%load_ext ipymcp` in the notebook; list_notebooks shows when it is back."
        )

    async def _restarted_kernel(self, kernel_id: str, old_pid: Any) -> dict[str, Any] | None:
        """The kernel's row once ipymcp answers in the new process (another pid), else None."""
        try:
            rows = await self.remote.sessions()
        except ServerError:
            return None
        row = next((r for r in rows if r["kernel_id"] == kernel_id), None)
        if row is None:
            return None
        self.remote.forget(kernel_id)
        if not await self.remote.probe(row):
            return None
        if old_pid is not None and row.get("pid") == old_pid:
            self.remote.forget(kernel_id)  # still the old process (an in-kernel restart not begun yet)
            return None
        return row

    async def serve(self, read_stream: Any, write_stream: Any) -> None:
        try:
            await super().serve(read_stream, write_stream)
        finally:
            with anyio.CancelScope(shield=True):
                await self.remote.aclose()


def _error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


async def check_server(endpoint: Endpoint) -> str | None:
    """Before serving: a token the server refuses, a URL that is not a Jupyter server, or a TLS
    certificate not trusted is a configuration error (the sentence); an unreachable or stopped
    server is not (it may come up later)."""
    async with ServerAPI(endpoint) as api:
        try:
            await api.sessions()
        except ServerMisconfigured as exc:
            return str(exc)
        except ServerError as exc:  # unreachable or stopped: it may come up later
            log.warning("%s", exc)
    return None


async def run_stdio(selection: Selection, endpoint: Endpoint, options: TunnelOptions | None = None) -> None:
    from mcp.server.stdio import stdio_server

    proxy = RemoteProxy(selection, endpoint, options)
    async with stdio_server() as (read_stream, write_stream):
        await proxy.serve(read_stream, write_stream)
