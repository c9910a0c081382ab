"""Where the policy meets the SDK: the per-tool guard and the request middleware.

- ``PolicyMiddleware`` (SDK ``ServerMiddleware``, sees every request): hides tools above the
  permission level from ``tools/list``, refuses calls to them, paces calls while a user cell
  runs, remembers handshake-era connections (to tell them when the tool list changes) and
  writes one audit line per ``tools/call`` — refusals and invalid arguments included.
- ``guard_tool`` wraps every tool function registered through ``Toolbox.tool``: re-checks
  the level, enforces the concurrency and queue limits, waits for approval (through an SDK
  ``Resolve`` parameter added to the signature), and runs sync tools on a bounded thread pool.

Server thread only (imports the SDK).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import time
import typing
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import anyio.to_thread
from mcp.server.mcpserver import Context, Resolve
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.context_injection import find_context_parameter
from mcp.types import CallToolResult, TextContent

from .approval import ApprovalGate, ApprovalOutcome, client_label
from .audit import audit_arguments
from .permissions import refusal

if TYPE_CHECKING:
    from . import Policy

log = logging.getLogger("ipymcp.policy")

CTX_PARAM = "ipymcp_ctx"
APPROVAL_PARAM = "ipymcp_approval"

# The audit record of the tools/call being served; the guard adds the approval decision to it.
current_call: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "ipymcp_call", default=None
)


class ToolGuard:
    """Per-server state shared by the guarded tools and the middleware."""

    def __init__(self, policy: Policy, runtime: Any):
        self.policy = policy
        self.runtime = runtime
        self.approval = ApprovalGate(policy)
        self.levels: dict[str, str] = {}
        config = runtime.config
        self.max_concurrent = int(config.max_concurrent_calls)
        self.max_queued = int(config.max_queued_executions)
        self.inspection_limiter = anyio.CapacityLimiter(max(1, int(config.inspection_threads)))
        self.connections: weakref.WeakSet[Any] = weakref.WeakSet()

    # -- the per-tool wrapper --------------------------------------------------------------------
    def wrap(
        self,
        fn: Callable[..., Any],
        tool_name: str,
        level: str,
        read_only: bool,
        approval: bool | Callable[[dict[str, Any]], bool] | None,
        kernel_queue: bool | None,
        explain: Callable[[Exception], ToolError],
    ) -> Callable[..., Any]:
        self.levels[tool_name] = level
        needs_approval = _approval_rule(approval, read_only, level)
        uses_queue = level == "execute" if kernel_queue is None else kernel_queue
        is_async = inspect.iscoroutinefunction(fn)
        own_ctx = find_context_parameter(fn)
        limiter = self.inspection_limiter if read_only else None
        guard, policy = self, self.policy

        async def guarded(**kwargs: Any) -> Any:
            ctx = kwargs.pop(CTX_PARAM, None) if own_ctx is None else kwargs.get(own_ctx)
            outcome = kwargs.pop(APPROVAL_PARAM, None)
            record = current_call.get()
            if not policy.allows(level):
                raise ToolError(refusal(tool_name, level, policy.level))
            if needs_approval is not None:
                arguments = _raw_arguments(ctx)
                verdict = guard.approval.outcome(tool_name, arguments, outcome)
                if record is not None:
                    record["approval"] = verdict.how
                if not verdict.allowed:
                    raise ToolError(verdict.refusal(tool_name))
            if guard.runtime_busy_queue(uses_queue):
                raise ToolError(
                    f"Too many queued executions: {len(guard.runtime.bridge.queued)} agent calls are already "
                    "waiting for the kernel. Wait for them to finish (kernel_status shows them), then retry."
                )
            if policy.in_flight >= guard.max_concurrent:
                raise ToolError(
                    f"Too many calls in progress ({policy.in_flight}, limit {guard.max_concurrent}). "
                    "Wait for some to finish, then retry; calls are cheaper one at a time."
                )
            policy.in_flight += 1
            try:
                if is_async:
                    return await fn(**kwargs)
                return await anyio.to_thread.run_sync(
                    functools.partial(_metered, fn, kwargs, policy.pacer.charge), limiter=limiter
                )
            except ToolError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise explain(exc) from exc
            finally:
                policy.in_flight -= 1

        # The SDK builds the schema and the injections from the signature: the tool's own
        # parameters, plus a Context (if the tool has none) and the approval resolver.
        hints = typing.get_type_hints(fn, include_extras=True)
        signature = inspect.signature(fn)
        parameters = [
            p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()
        ]
        annotations = {p.name: p.annotation for p in parameters}
        if own_ctx is None:
            parameters.append(
                inspect.Parameter(CTX_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=Context)
            )
            annotations[CTX_PARAM] = Context
        if needs_approval is not None:
            marker = Annotated[ApprovalOutcome, Resolve(self.approval.resolver(tool_name, needs_approval))]
            parameters.append(
                inspect.Parameter(APPROVAL_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=marker)
            )
            annotations[APPROVAL_PARAM] = marker
        if "return" in hints:
            annotations["return"] = hints["return"]
        guarded.__name__ = fn.__name__
        guarded.__qualname__ = fn.__qualname__
        guarded.__doc__ = fn.__doc__
        guarded.__module__ = fn.__module__
        guarded.__annotations__ = annotations
        guarded.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=_ordered(parameters),
            return_annotation=hints.get("return", signature.return_annotation),
        )
        return guarded

    def runtime_busy_queue(self, uses_queue: bool) -> bool:
        if not uses_queue:
            return False
        bridge = getattr(self.runtime, "bridge", None)
        return bridge is not None and len(bridge.queued) >= self.max_queued

    # -- tools/list_changed ------------------------------------------------------------------------
    @staticmethod
    def advertise_list_changed(mcp: Any) -> None:
        """Handshake-era ``initialize`` says ``tools.listChanged: true`` (the level can change).

        The SDK builds capabilities with default ``NotificationOptions`` (all false) and offers
        no MCPServer keyword for it; 2026-07-28 derives the flag from ``subscriptions/listen``.
        """
        from mcp.server.lowlevel.server import NotificationOptions

        lowlevel = mcp._lowlevel_server
        original = lowlevel.create_initialization_options

        def create_initialization_options(notification_options: Any = None, *args: Any, **kwargs: Any) -> Any:
            return original(notification_options or NotificationOptions(tools_changed=True), *args, **kwargs)

        lowlevel.create_initialization_options = create_initialization_options

    async def notify_tools_changed(self, mcp: Any) -> None:
        """Tell every connected client the tool list changed, in both protocol eras."""
        from mcp.shared.subscriptions import ToolsListChanged

        try:
            await mcp._subscriptions.publish(ToolsListChanged())  # 2026-07-28 subscriptions/listen
        except Exception:  # noqa: BLE001
            log.debug("subscriptions publish failed", exc_info=True)
        for connection in list(self.connections):  # handshake-era sessions, standalone stream
            try:
                with anyio.move_on_after(1):
                    await connection.send_tool_list_changed()
            except Exception:  # noqa: BLE001 - a closed session
                self.connections.discard(connection)


def _metered(fn: Callable[..., Any], kwargs: dict[str, Any], charge: Callable[[float], None]) -> Any:
    started = time.thread_time()
    try:
        return fn(**kwargs)
    finally:
        charge(time.thread_time() - started)


def _ordered(parameters: list[inspect.Parameter]) -> list[inspect.Parameter]:
    kinds = [
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.VAR_POSITIONAL,
        inspect.Parameter.KEYWORD_ONLY,
        inspect.Parameter.VAR_KEYWORD,
    ]
    return sorted(parameters, key=lambda p: kinds.index(p.kind))


def _approval_rule(
    approval: bool | Callable[[dict[str, Any]], bool] | None, read_only: bool, level: str
) -> Callable[[dict[str, Any]], bool] | None:
    """None when the tool never needs approval; else a per-call predicate on its arguments."""
    if approval is None:
        approval = not read_only and level != "read"
    if approval is False:
        return None
    if approval is True:
        return lambda arguments: True
    return approval


def _raw_arguments(ctx: Any) -> dict[str, Any]:
    try:
        params = ctx.request_context.params or {}
        arguments = params.get("arguments")
    except Exception:  # noqa: BLE001
        return {}
    return dict(arguments) if isinstance(arguments, dict) else {}


class PolicyMiddleware:
    """SDK ``ServerMiddleware``: listing filter, refusals, pacing, audit."""

    def __init__(self, guard: ToolGuard):
        self.guard = guard
        self.policy = guard.policy

    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        self._remember_connection(ctx)
        method = ctx.method
        if method == "tools/list":
            result = await call_next(ctx)
            log.debug("tools/list result type %s", type(result).__name__)
            return self._filter(result)
        if method != "tools/call":
            return await call_next(ctx)
        return await self._call_tool(ctx, call_next)

    def _remember_connection(self, ctx: Any) -> None:
        connection = getattr(ctx.session, "_connection", None)
        if connection is not None and connection.session_id and connection.has_standalone_channel:
            self.guard.connections.add(connection)

    def _filter(self, result: Any) -> Any:
        levels, policy = self.guard.levels, self.policy
        if isinstance(result, dict) and isinstance(result.get("tools"), list):
            tools = result["tools"]
            visible = [
                t
                for t in tools
                if not isinstance(t, dict) or policy.allows(levels.get(t.get("name"), "read"))
            ]
            return {**result, "tools": visible}
        tools = getattr(result, "tools", None)
        if tools is None:
            return result
        visible = [t for t in tools if policy.allows(levels.get(t.name, "read"))]
        return result.model_copy(update={"tools": visible}) if len(visible) != len(tools) else result

    async def _call_tool(self, ctx: Any, call_next: Any) -> Any:
        params = ctx.params if isinstance(ctx.params, dict) else {}
        name = params.get("name")
        arguments = params.get("arguments")
        record: dict[str, Any] = {
            "client": self._client(ctx),
            "tool": name if isinstance(name, str) else repr(name)[:100],
            "arguments": audit_arguments(arguments if arguments is not None else {}),
        }
        required = self.guard.levels.get(name) if isinstance(name, str) else None
        started = time.perf_counter()
        token = current_call.set(record)
        try:
            if required is not None and not self.policy.allows(required):
                result: Any = CallToolResult(
                    content=[TextContent(type="text", text=refusal(name, required, self.policy.level))],
                    is_error=True,
                )
                record["approval"] = "-"
            else:
                await self.policy.pacer.pace()
                result = await call_next(ctx)
        except BaseException as exc:
            record.update(outcome="error", message=_short(f"{type(exc).__name__}: {exc}"))
            raise
        else:
            self._outcome(record, result)
            return result
        finally:
            current_call.reset(token)
            record["duration_ms"] = round((time.perf_counter() - started) * 1000, 2)
            self.policy.audit.record(record)

    @staticmethod
    def _outcome(record: dict[str, Any], result: Any) -> None:
        if getattr(result, "is_error", None) is True:
            text = "".join(getattr(b, "text", "") for b in getattr(result, "content", []) or [])
            record.update(outcome="error", message=_short(text))
        elif type(result).__name__ == "InputRequiredResult":
            record.update(outcome="waiting for the user's answer")
        elif isinstance(result, dict) and result.get("isError"):
            record.update(outcome="error", message=_short(str(result.get("content"))))
        else:
            record["outcome"] = "ok"

    @staticmethod
    def _client(ctx: Any) -> dict[str, Any]:
        client: dict[str, Any] = {"protocol": ctx.protocol_version}
        try:
            info = getattr(ctx.session.client_params, "client_info", None)
            if info is not None:
                client["name"] = f"{info.name} {info.version}".strip()
        except Exception:  # noqa: BLE001
            pass
        request = ctx.request
        headers = getattr(request, "headers", None)
        if headers is not None and headers.get("mcp-session-id"):
            client["session"] = headers.get("mcp-session-id")[:12]
        peer = getattr(request, "client", None)
        if peer is not None:
            client["peer"] = f"{peer.host}:{peer.port}"
        return client


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = ["PolicyMiddleware", "ToolGuard", "client_label", "current_call"]
