"""One upstream connection of ``ipymcp connect``: an SDK ``Client`` to one kernel's server, in a
task of its own (the SDK tears its task group down when the server goes away: that must end the
upstream, never the proxy)."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ListenNotSupportedError
from mcp.server.context import ServerRequestContext
from mcp.server.subscriptions import PromptsListChanged, ResourcesListChanged, ServerEvent, ToolsListChanged
from mcp.shared.exceptions import MCPError

from .selection import ConnectError, describe_kernel

log = logging.getLogger("ipymcp.connect")

# Bounded: an agent must get an answer, never a hang, while a kernel restarts.
CONNECT_TIMEOUT = 10.0

_T = TypeVar("_T")

# The downstream request being forwarded: the upstream Client asks its questions (elicitation) from
# inside that request's task, so they can go to the client that made the call.
downstream_request: contextvars.ContextVar[ServerRequestContext[Any] | None] = contextvars.ContextVar(
    "ipymcp_downstream_request", default=None
)


# -- one upstream connection -----------------------------------------------------------------


class Upstream:
    """One SDK ``Client`` to one kernel's server, owned by its own task (``run``)."""

    def __init__(self, info: dict[str, Any], on_event: Callable[[ServerEvent], Awaitable[None]]):
        self.info = info
        self.client: Client | None = None
        self.dead = anyio.Event()
        self.error: BaseException | None = None
        # True once an agent's call was answered with the error about this connection's loss.
        self.loss_reported = False
        self._on_event = on_event
        self._stop = anyio.Event()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        started = False
        try:
            headers = {"Authorization": f"Bearer {self.info['token']}"}
            # No read timeout: tool calls run as long as the tool allows, and the listen stream is
            # long-lived. A dead server shows up as a closed connection instead.
            timeout = httpx2.Timeout(CONNECT_TIMEOUT, read=None)
            async with httpx2.AsyncClient(headers=headers, timeout=timeout) as http:
                transport = streamable_http_client(self.info["url"], http_client=http)
                async with Client(
                    transport, cache=None, message_handler=self._on_message, elicitation_callback=_forward_elicitation
                ) as client:
                    self.client = client
                    started = True
                    task_status.started()
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self._listen, client)
                        await self._stop.wait()
                        tg.cancel_scope.cancel()
        except Exception as exc:  # noqa: BLE001 - an ExceptionGroup from the SDK when the server goes away
            self.error = exc
            if not started:
                raise ConnectError(_connect_failure(self.info, exc)) from exc
            log.info("connection to %s lost: %s", self.info.get("url"), root_cause(exc))
        finally:
            self.client = None
            self.dead.set()

    def close(self) -> None:
        self._stop.set()

    async def _listen(self, client: Client) -> None:
        """List-changed events of the 2026-07-28 era; its end also tells that the server went away."""
        try:
            async with client.listen(
                tools_list_changed=True, prompts_list_changed=True, resources_list_changed=True
            ) as subscription:
                async for event in subscription:
                    await self._on_event(event)
        except ListenNotSupportedError:
            return  # a handshake-era server: list changes arrive through _on_message
        except Exception as exc:  # noqa: BLE001
            if self._stop.is_set():
                return
            self.error = exc
            log.info("event stream from %s ended: %s", self.info.get("url"), root_cause(exc))
        self._stop.set()

    async def _on_message(self, message: Any) -> None:
        events = {
            types.ToolListChangedNotification: ToolsListChanged,
            types.PromptListChangedNotification: PromptsListChanged,
            types.ResourceListChangedNotification: ResourcesListChanged,
        }
        for notification, event in events.items():
            if isinstance(message, notification):
                await self._on_event(event())

    async def call(self, fn: Callable[[Client], Awaitable[_T]]) -> _T:
        """Run one request; if the server goes away meanwhile, raise ``ConnectionLost`` at once."""
        client = self.client
        if client is None or self.dead.is_set():
            raise ConnectionLost(self.error)
        outcome: list[_T] = []
        failure: list[Exception] = []
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                await self.dead.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            try:
                outcome.append(await fn(client))
            except Exception as exc:  # noqa: BLE001 - sorted out below, outside the task group
                failure.append(exc)
            finally:
                tg.cancel_scope.cancel()
        if failure:
            exc = failure[0]
            lost = isinstance(exc, (httpx2.HTTPError, anyio.ClosedResourceError, anyio.BrokenResourceError)) or (
                isinstance(exc, MCPError) and exc.code == types.CONNECTION_CLOSED
            )
            if not lost:
                raise exc
            await self._wait_dead()
            raise ConnectionLost(exc) from exc
        if not outcome:
            raise ConnectionLost(self.error)
        return outcome[0]

    async def _wait_dead(self) -> None:
        self._stop.set()
        with anyio.move_on_after(2):
            await self.dead.wait()


class ConnectionLost(Exception):
    def __init__(self, cause: BaseException | None):
        super().__init__(root_cause(cause) if cause is not None else "connection closed")


def root_cause(exc: BaseException | None) -> str:
    while exc is not None and getattr(exc, "exceptions", None):  # an (exception) group: its first cause
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    if exc is None:
        return "unknown error"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _forward_elicitation(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult | types.ErrorData:
    """A question from the kernel (approval, ...) to the user, through the client that made the call."""
    ctx = downstream_request.get()
    session = ctx.session if ctx is not None else None
    capabilities = session.client_capabilities if session is not None else None
    if (
        session is None
        or capabilities is None
        or capabilities.elicitation is None
        or not session.can_send_request
        or not isinstance(params, types.ElicitRequestFormParams)
    ):
        return types.ErrorData(
            code=types.INVALID_REQUEST,
            message="the MCP client connected through `ipymcp connect` cannot answer this question (no form "
            "elicitation on this connection)",
        )
    return await session.elicit_form(params.message, params.requested_schema, related_request_id=ctx.request_id)


def _connect_failure(info: dict[str, Any], exc: BaseException) -> str:
    cause = root_cause(exc)
    if "401" in cause or "invalid_token" in cause:
        return f"the server at {info.get('url')} refused the token; copy it again with `%mcp token` in the notebook"
    return f"could not reach the ipymcp server of {describe_kernel(info)} at {info.get('url')} ({cause})"

