"""The request pipeline: every ``tools/call``, ``resources/read`` and ``completion/complete`` passes
the same steps, in this order, all defined here:

1. **level**: the permission level the request needs (a tool's may depend on its arguments),
   checked once;
2. **limits**: calls in progress and executions queued for the kernel (refused at once), then
   CPU pacing while a user cell runs (waits);
3. **approval**: the user's decision, for tools that change things (``policy.approval``);
4. **run**: the limits checked again and one slot held while the tool, resource or completion
   runs; unexpected exceptions become errors the agent can read;
5. **audit**: one line per call, refusals, invalid arguments and 2026-07-28 round trips included.

Where they run: steps 1, 2 and 5 in the SDK middleware (``Pipeline.__call__``), which sees each
request once, before the SDK validates its arguments. Step 3 runs inside the SDK's ``tools/call``
handler, after argument validation: it is a ``Resolve`` parameter on the registered tool, the
SDK's way to ask the user that also carries the 2026-07-28 ``input_required`` round trip. Step 4
is the function every tool is registered as (``Pipeline.tool_function``); for resources and
completions the middleware holds the slot around the SDK's handler. A call waiting for approval
holds no slot. The request's name and arguments are parsed once, into the ``Call`` the steps share.

Server thread only (imports the SDK).
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import inspect
import json
import logging
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import anyio.to_thread
from mcp.server.mcpserver import Context, Elicit, Resolve
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_REQUEST, CallToolResult, TextContent

from ..policy.approval import ApprovalGate, ApprovalOutcome, ApprovalRule, Decision, Verdict
from ..policy.audit import OUTCOME_LIMIT, audit_arguments
from ..policy.limits import LimitReached
from ..policy.permissions import LEVELS, refusal
from ..text import compact
from .sdk_compat import ToolListNotifier, client_name

if TYPE_CHECKING:
    from ..policy import Policy
    from ..policy.approval_detail import Diff

log = logging.getLogger("ipymcp.server")

# The level a request needs when it is not a tool call.
REQUEST_LEVELS = {"resources/read": "read", "completion/complete": "read"}
SERVED = ("tools/call", *REQUEST_LEVELS)
APPROVAL_PARAM = "ipymcp_approval"
# A 2026-07-28 call whose client never comes back with the user's answer is logged after this.
ABANDONED_AFTER = 60.0

LevelRule = str | Callable[[dict[str, Any]], str]


@dataclass
class ToolRule:
    """What the pipeline knows about one registered tool."""

    name: str
    level: str  # the tools/list level: what a call with no arguments needs
    level_for: Callable[[dict[str, Any]], str]
    approval: ApprovalRule | None
    kernel_queue: bool


@dataclass
class Call:
    """One request as every step sees it, parsed once."""

    method: str
    name: str  # the tool's name, the resource's URI, or the method
    arguments: dict[str, Any]  # tool arguments as sent ({} when absent or not an object)
    record: dict[str, Any]  # the audit line being built
    rule: ToolRule | None = None
    first_seen: float = field(default_factory=time.monotonic)  # kept across 2026-07-28 rounds

    @property
    def key(self) -> str:
        text = json.dumps([self.name, self.arguments], sort_keys=True, default=repr, ensure_ascii=True)
        return hashlib.sha256(text.encode()).hexdigest()


# The call being served, for the approval and run steps inside the SDK's handler.
current_call: contextvars.ContextVar[Call | None] = contextvars.ContextVar("ipymcp_call", default=None)


class Pipeline:
    """The SDK middleware (steps 1, 2, 5) and the tool wrapper (steps 3, 4), sharing ``Call``."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self.gate = ApprovalGate(policy)
        self.rules: dict[str, ToolRule] = {}
        self.notifier = ToolListNotifier()
        # 2026-07-28 calls that returned input_required: audited once, when the client comes back.
        self._waiting: dict[str, Call] = {}
        policy.on_close(self._log_abandoned)

    # -- registration --------------------------------------------------------------------------
    def rule(
        self,
        name: str,
        level: LevelRule,
        read_only: bool,
        approval: bool | Callable[[dict[str, Any]], bool] | None,
        kernel_queue: bool | None,
        diff: Callable[[dict[str, Any]], Diff | None] | None = None,
    ) -> ToolRule:
        level_for = level if callable(level) else (lambda arguments, fixed=level: fixed)
        listed = level_for({})
        if listed not in LEVELS:
            raise ValueError(f"unknown level {listed!r}")
        needs = _approval_needed(approval, read_only, listed)
        rule = ToolRule(
            name,
            listed,
            level_for,
            ApprovalRule(needs, diff) if needs is not None else None,
            LEVELS.index(listed) >= LEVELS.index("execute") if kernel_queue is None else kernel_queue,
        )
        self.rules[name] = rule
        return rule

    def tool_function(self, rule: ToolRule, fn: Callable[..., Any], services: Any) -> Callable[..., Any]:
        """``fn`` as registered with the SDK: ``services`` bound to its first parameter, the approval
        parameter added, the run step around it."""
        is_async = inspect.iscoroutinefunction(fn)
        pipeline = self

        async def run(**kwargs: Any) -> Any:
            call = current_call.get()
            outcome = kwargs.pop(APPROVAL_PARAM, None)
            if call is None or call.rule is not rule:
                raise ToolError(f"{rule.name} can only be called through the MCP server's request pipeline")
            pipeline._approved(call, outcome)
            limits, pacer = pipeline.policy.limits, pipeline.policy.pacer
            try:
                with limits.slot(rule.kernel_queue):
                    if is_async:
                        return await fn(services, **kwargs)
                    bound = functools.partial(fn, services)
                    return await anyio.to_thread.run_sync(functools.partial(_metered, bound, kwargs, pacer.charge))
            except LimitReached as exc:
                raise ToolError(str(exc)) from None
            except ToolError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise _explained(rule.name, exc) from exc

        return _with_signature(run, fn, self._resolver(rule) if rule.approval is not None else None)

    def _resolver(self, rule: ToolRule) -> Callable[..., Any]:
        gate = self.gate

        # The SDK reads this signature (with the module's globals) to inject the Context.
        async def ask_user(ctx: Context) -> Elicit[Decision] | Verdict:
            call = current_call.get()
            return await gate.ask(rule.name, call.arguments if call is not None else {}, rule.approval, ctx)

        # The SDK keys a resolver's question on the wire by its qualified name: one per tool.
        ask_user.__qualname__ = f"approval_{rule.name}"
        return ask_user

    def _approved(self, call: Call, outcome: Any) -> None:
        """Step 3's verdict, injected by the resolver; raises when the user did not allow the call."""
        if call.rule is None or call.rule.approval is None:
            return
        verdict = self.gate.verdict(call.name, outcome, call.first_seen)
        call.record["approval"] = verdict.how
        if not verdict.allowed:
            raise ToolError(verdict.refusal(call.name))

    # -- the middleware ------------------------------------------------------------------------
    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        self.notifier.remember(ctx)
        if ctx.method == "tools/list":
            return self._visible_tools(await call_next(ctx))
        if ctx.method not in SERVED:
            return await call_next(ctx)
        call = self._parse(ctx)
        token = current_call.set(call)
        try:
            return await self._serve(ctx, call, call_next)
        finally:
            current_call.reset(token)

    async def _serve(self, ctx: Any, call: Call, call_next: Any) -> Any:
        try:
            refused = self._level_refusal(call) or self._limit_refusal(call)
            if refused is not None:
                call.record["approval"] = "-"  # refused before anyone was asked
                result = self._refuse(call, refused)
            else:
                await self.policy.pacer.pace()
                if call.method == "tools/call":
                    result = await call_next(ctx)  # validation, approval, then the run step
                else:
                    result = await self._run_handler(ctx, call, call_next)
        except BaseException as exc:
            call.record.update(outcome="error", message=compact(f"{type(exc).__name__}: {exc}", OUTCOME_LIMIT))
            self._audit(call)
            raise
        if _input_required(result):
            earlier = self._waiting.get(call.key)
            if earlier is not None and earlier is not call:  # the same call asked twice at once
                self._log_abandoned_call(earlier)
            self._waiting[call.key] = call  # audited when the client comes back with the answer
        else:
            _record_outcome(call.record, result)
            self._audit(call)
        return result

    def _level_refusal(self, call: Call) -> str | None:
        """Step 1."""
        listed: str | None = None
        if call.method != "tools/call":
            required = REQUEST_LEVELS[call.method]
        elif call.rule is None:
            return None  # an unknown tool: the SDK answers "Unknown tool"
        else:
            listed, required = call.rule.level, _level_of(call.rule, call.arguments)
        if self.policy.allows(required):
            return None
        return refusal(call.name, required, self.policy.level, listed)

    def _limit_refusal(self, call: Call) -> str | None:
        """Step 2, the part that refuses (pacing waits in ``_serve``)."""
        return self.policy.limits.refusal(call.rule is not None and call.rule.kernel_queue)

    async def _run_handler(self, ctx: Any, call: Call, call_next: Any) -> Any:
        """Step 4 for resources and completions: the SDK's handler, holding a slot."""
        try:
            with self.policy.limits.slot(False):
                return await call_next(ctx)
        except LimitReached as exc:
            raise MCPError(code=INVALID_REQUEST, message=str(exc)) from None

    @staticmethod
    def _refuse(call: Call, message: str) -> Any:
        if call.method == "tools/call":
            return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)
        raise MCPError(code=INVALID_REQUEST, message=message)

    def _visible_tools(self, result: Any) -> Any:
        def shown(name: Any) -> bool:
            rule = self.rules.get(name) if isinstance(name, str) else None
            return self.policy.allows(rule.level if rule is not None else "read")

        if isinstance(result, dict) and isinstance(result.get("tools"), list):
            tools = [t for t in result["tools"] if not isinstance(t, dict) or shown(t.get("name"))]
            return {**result, "tools": tools}
        tools = getattr(result, "tools", None)
        if tools is None:
            return result
        visible = [t for t in tools if shown(t.name)]
        return result.model_copy(update={"tools": visible}) if len(visible) != len(tools) else result

    # -- parsing and audit ---------------------------------------------------------------------
    def _parse(self, ctx: Any) -> Call:
        """The request's name and arguments, read once; a 2026-07-28 retry continues its call."""
        params = ctx.params if isinstance(ctx.params, dict) else {}
        method = ctx.method
        if method == "tools/call":
            name = params.get("name")
            raw = params.get("arguments")
            call = Call(
                method,
                name if isinstance(name, str) else repr(name)[:100],
                dict(raw) if isinstance(raw, dict) else {},
                {"tool": name if isinstance(name, str) else repr(name)[:100]},
                self.rules.get(name) if isinstance(name, str) else None,
            )
            call.record["arguments"] = audit_arguments(raw if raw is not None else {})
        elif method == "resources/read":
            uri = str(params.get("uri"))
            call = Call(method, uri, {}, {"tool": method, "arguments": audit_arguments({"uri": uri})})
        else:
            shown = {k: params.get(k) for k in ("ref", "argument") if k in params}
            call = Call(method, method, {}, {"tool": method, "arguments": audit_arguments(shown)})
        call.record["client"] = _client(ctx)
        self._forget_abandoned()
        if "inputResponses" in params or "requestState" in params:
            earlier = self._waiting.pop(call.key, None)
            if earlier is not None:
                earlier.record["rounds"] = earlier.record.get("rounds", 1) + 1
                return earlier
        return call

    def _audit(self, call: Call) -> None:
        call.record["duration_ms"] = round((time.monotonic() - call.first_seen) * 1000, 2)
        self.policy.audit.record(call.record)

    def _forget_abandoned(self) -> None:
        horizon = time.monotonic() - self.policy.approval_timeout - ABANDONED_AFTER
        for key, call in list(self._waiting.items()):
            if call.first_seen < horizon:
                self._log_abandoned_call(self._waiting.pop(key))

    def _log_abandoned(self) -> None:
        for key in list(self._waiting):
            self._log_abandoned_call(self._waiting.pop(key))

    def _log_abandoned_call(self, call: Call) -> None:
        call.record.update(
            outcome="error",
            message="the client never came back with the user's answer; nothing was run",
            approval="no answer",
        )
        self._audit(call)


def _level_of(rule: ToolRule, arguments: dict[str, Any]) -> str:
    try:
        level = rule.level_for(arguments)
    except Exception:  # noqa: BLE001 - a rule that cannot decide asks for the most
        log.exception("level rule of %s failed", rule.name)
        return LEVELS[-1]
    return level if level in LEVELS else LEVELS[-1]


def _approval_needed(
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


def _with_signature(run: Callable[..., Any], fn: Callable[..., Any], resolver: Callable[..., Any] | None) -> Any:
    """``run`` with ``fn``'s signature but its first parameter (the services ``run`` binds): the SDK
    builds the schema and the injections from it. Plus the approval parameter filled by ``resolver``."""
    hints = typing.get_type_hints(fn, include_extras=True)
    signature = inspect.signature(fn)
    parameters = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in list(signature.parameters.values())[1:]]
    if resolver is not None:
        marker = Annotated[ApprovalOutcome, Resolve(resolver)]
        parameters.append(inspect.Parameter(APPROVAL_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=marker))
    annotations = {p.name: p.annotation for p in parameters}
    if "return" in hints:
        annotations["return"] = hints["return"]
    run.__name__, run.__qualname__ = fn.__name__, fn.__qualname__
    run.__doc__, run.__module__ = fn.__doc__, fn.__module__
    run.__annotations__ = annotations
    run.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=sorted(parameters, key=lambda p: p.kind),
        return_annotation=hints.get("return", signature.return_annotation),
    )
    return run


def _metered(fn: Callable[..., Any], kwargs: dict[str, Any], charge: Callable[[float], None]) -> Any:
    started = time.thread_time()
    try:
        return fn(**kwargs)
    finally:
        charge(time.thread_time() - started)


def _explained(tool_name: str, exc: Exception) -> ToolError:
    """The SDK hides the message of anything but ``ToolError``: say what went wrong."""
    log.info("tool %s failed", tool_name, exc_info=True)
    message = str(exc) or type(exc).__name__
    # Our own errors are written for the agent; show them without the class name.
    return ToolError(message if type(exc).__module__.startswith("ipymcp") else f"{type(exc).__name__}: {message}")


def _input_required(result: Any) -> bool:
    if isinstance(result, dict):
        return result.get("resultType") == "input_required"
    return getattr(result, "result_type", None) == "input_required"


def _record_outcome(record: dict[str, Any], result: Any) -> None:
    if getattr(result, "is_error", None) is True:
        text = "".join(getattr(b, "text", "") for b in getattr(result, "content", []) or [])
        record.update(outcome="error", message=compact(text, OUTCOME_LIMIT))
    elif isinstance(result, dict) and result.get("isError"):
        text = "".join(b.get("text", "") for b in result.get("content") or [] if isinstance(b, dict))
        record.update(outcome="error", message=compact(text or str(result.get("content")), OUTCOME_LIMIT))
    else:
        record["outcome"] = "ok"


def _client(ctx: Any) -> dict[str, Any]:
    client: dict[str, Any] = {"protocol": ctx.protocol_version}
    name = client_name(ctx.session)
    if name is not None:
        client["name"] = name
    request = ctx.request
    headers = getattr(request, "headers", None)
    if headers is not None and headers.get("mcp-session-id"):
        client["session"] = headers.get("mcp-session-id")[:12]
    peer = getattr(request, "client", None)
    if peer is not None:
        client["peer"] = f"{peer.host}:{peer.port}"
    via = getattr(request, "via", None)  # a tunnel session (server/tunnel.py TunnelPeer)
    if isinstance(via, str):
        client["via"] = via
    return client


