"""Approval mode: a call that changes things waits for the user's decision.

Who asks the user, first that applies:
1. nobody, when approval is off or the user chose "allow for this session" for this tool;
2. the notebook, when the frontend extension registered an asker (``Policy.set_notebook_asker``);
3. the MCP client, by elicitation: a live ``elicitation/create`` on handshake-era sessions, an
   ``InputRequiredResult`` round trip on 2026-07-28 (the SDK's ``Resolve``/``Elicit``, which
   works in both eras).
No answer within ``approval_timeout`` denies; so does a client that cannot be asked.

Server thread only (imports the SDK).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import anyio
from mcp.server.elicitation import AcceptedElicitation, ElicitationResult
from mcp.server.mcpserver import Context, Elicit
from pydantic import BaseModel, Field

from . import ApprovalRequest

if TYPE_CHECKING:
    from . import Policy

log = logging.getLogger("ipymcp.policy")

DETAIL_LIMIT = 4_000


class Decision(BaseModel):
    """The form the client shows the user."""

    decision: Literal["allow", "allow_session", "deny"] = Field(
        description="allow: this call only; allow_session: this tool until approval is switched off; deny"
    )


@dataclass
class Verdict:
    allowed: bool
    how: str  # shown in the audit log: "not required", "allowed by user (notebook)", "denied: timed out"…

    def refusal(self, tool: str) -> str:
        reason = self.how.removeprefix("denied: ")
        return (
            f"Not approved: this {tool} call was refused ({reason}). Nothing was run or changed. "
            "Do not retry the same call unless the user asks you to; explain what you wanted to do instead."
        )


def client_label(ctx: Context) -> str:
    try:
        params = ctx.session.client_params
        info = getattr(params, "client_info", None)
        if info is not None:
            return f"{info.name} {info.version}".strip()
    except Exception:  # noqa: BLE001
        pass
    return "an MCP client"


def detail_of(tool: str, arguments: dict[str, Any]) -> str:
    """The exact thing to approve: code and commands verbatim, other arguments as JSON."""
    parts = []
    for key in ("code", "command", "cmd", "source", "keys", "input"):
        value = arguments.get(key)
        if isinstance(value, str):
            shown = (
                value
                if len(value) <= DETAIL_LIMIT
                else value[:DETAIL_LIMIT] + f"\n… ({len(value)} characters)"
            )
            parts.append(f"{key}:\n```\n{shown}\n```")
    rest = {
        k: v for k, v in arguments.items() if k not in ("code", "command", "cmd", "source", "keys", "input")
    }
    if rest:
        text = json.dumps(rest, ensure_ascii=False, default=repr, indent=1)
        parts.append(text if len(text) <= DETAIL_LIMIT else text[:DETAIL_LIMIT] + "…")
    return "\n".join(parts)


class ApprovalGate:
    """Builds the per-tool resolver and turns its outcome into a ``Verdict``."""

    def __init__(self, policy: Policy):
        self.policy = policy
        # 2026-07-28 round trips: when each question was first asked, to enforce the timeout
        # across the client's retry (the server holds no request open between rounds).
        self._first_asked: dict[str, float] = {}
        # The in-notebook prompt through the labextension, used when no asker was registered.
        self.frontend_asker: Any = frontend_asker(policy.runtime)

    def resolver(self, tool: str, needs_approval: Callable[[dict[str, Any]], bool]) -> Callable[..., Any]:
        gate = self

        async def ask_user(ctx: Context) -> Elicit[Decision] | Verdict:
            arguments = _raw_arguments(ctx)
            policy = gate.policy
            if not policy.approval or not needs_approval(arguments):
                return Verdict(True, "not required")
            if tool in policy.session_allowed:
                return Verdict(True, "allowed for this session")
            request = ApprovalRequest(
                tool, arguments, client_label(ctx), detail_of(tool, arguments), time.time()
            )
            asker = policy.notebook_asker or gate.frontend_asker
            if asker is not None:
                verdict = await gate._ask_notebook(asker, request)
                if verdict is not None:
                    return verdict
            if not _can_elicit(ctx):
                return Verdict(
                    False,
                    "denied: approval mode is on and nobody can be asked: the notebook extension is not "
                    "connected and this MCP client cannot ask the user (no elicitation support); the user can "
                    "open the notebook, use a client that supports elicitation, or run %mcp approve off",
                )
            message = "ipymcp approval: " + request.message()
            if _modern(ctx):
                gate._first_asked.setdefault(_question_key(tool, arguments), time.monotonic())
                gate._prune()
                return Elicit(message, Decision)
            try:
                with anyio.fail_after(policy.approval_timeout):
                    result = await ctx.elicit(message, Decision)
            except TimeoutError:
                return Verdict(False, f"denied: no answer within {policy.approval_timeout:g} s")
            return gate._from_elicitation(tool, result, "client")

        ask_user.__qualname__ = f"approval_{tool}"
        return ask_user

    async def _ask_notebook(self, asker: Any, request: ApprovalRequest) -> Verdict | None:
        """The user's answer in the notebook; None when no notebook view can ask (use elicitation)."""
        policy = self.policy
        try:
            with anyio.fail_after(policy.approval_timeout + 1):
                answer = await asker(request, policy.approval_timeout)
        except TimeoutError:
            return Verdict(False, f"denied: no answer in the notebook within {policy.approval_timeout:g} s")
        except Exception as exc:  # noqa: BLE001
            log.exception("notebook approval failed")
            return Verdict(False, f"denied: the notebook prompt failed ({exc})")
        if answer is None:
            return None
        return self._decide(request.tool, str(answer), "notebook")

    def outcome(self, tool: str, arguments: dict[str, Any], value: Any) -> Verdict:
        """The verdict from what the resolver injected into the tool."""
        if isinstance(value, AcceptedElicitation) and isinstance(value.data, Verdict):
            return value.data
        started = self._first_asked.pop(_question_key(tool, arguments), None)
        if started is not None and time.monotonic() - started > self.policy.approval_timeout:
            return Verdict(False, f"denied: the answer came after {self.policy.approval_timeout:g} s")
        return self._from_elicitation(tool, value, "client")

    def _from_elicitation(self, tool: str, result: ElicitationResult[Decision] | Any, via: str) -> Verdict:
        if isinstance(result, AcceptedElicitation) and isinstance(result.data, Decision):
            return self._decide(tool, result.data.decision, via)
        action = getattr(result, "action", "cancel")
        return Verdict(
            False, f"denied: the user {'declined' if action == 'decline' else 'cancelled'} ({via})"
        )

    def _decide(self, tool: str, answer: str, via: str) -> Verdict:
        if answer == "allow_session":
            self.policy.session_allowed.add(tool)
            return Verdict(True, f"allowed for this session by the user ({via})")
        if answer == "allow":
            return Verdict(True, f"allowed by the user ({via})")
        return Verdict(False, f"denied by the user ({via})")

    def _prune(self) -> None:
        horizon = time.monotonic() - 2 * self.policy.approval_timeout - 60
        for key, started in list(self._first_asked.items()):
            if started < horizon:
                self._first_asked.pop(key, None)


def frontend_asker(runtime: Any) -> Callable[[ApprovalRequest, float], Any]:
    """Ask in the notebook through the labextension (``ipymcp.frontend``): op ``approve``.

    Contract with the extension: request ``approve`` with args ``{tool, client, message, detail,
    timeout_s}``; the view shows a dialog with the exact detail and Allow / Allow for this
    session / Deny, and replies ``{"decision": "allow" | "allow_session" | "deny"}``. No
    connected view, or a view whose extension does not know ``approve`` yet: returns None and
    the client is asked by elicitation instead.
    """

    async def ask(request: ApprovalRequest, timeout: float) -> str | None:
        link = getattr(runtime, "frontend", None)
        if link is None or getattr(link, "state", None) != "connected":
            return None
        from ..frontend.comm import FrontendError, FrontendTimeout, NoFrontendError

        args = {
            "tool": request.tool,
            "client": request.client,
            "message": request.message(),
            "detail": request.detail,
            "timeout_s": timeout,
        }
        try:
            reply = await link.arequest("approve", args, timeout=timeout)
        except NoFrontendError:
            return None
        except FrontendTimeout as exc:
            raise TimeoutError(str(exc)) from exc
        except FrontendError as exc:
            if "unknown op" in str(exc):
                return None
            raise
        return str(reply.get("decision", "deny"))

    return ask


def _raw_arguments(ctx: Context) -> dict[str, Any]:
    params = ctx.request_context.params or {}
    arguments = (
        params.get("arguments")
        if isinstance(params, dict)
        else getattr(params, "get", lambda k: None)("arguments")
    )
    return dict(arguments) if isinstance(arguments, dict) else {}


def _modern(ctx: Context) -> bool:
    version = ctx.protocol_version or ""
    return version >= "2026-07-28"


def _can_elicit(ctx: Context) -> bool:
    capabilities = ctx.client_capabilities
    elicitation = getattr(capabilities, "elicitation", None) if capabilities is not None else None
    if elicitation is None or (elicitation.form is None and elicitation.url is not None):
        return False
    return _modern(ctx) or bool(ctx.session.can_send_request)


def _question_key(tool: str, arguments: dict[str, Any]) -> str:
    text = json.dumps([tool, arguments], sort_keys=True, default=repr, ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


# Re-exported for the guard's signature: the resolver's consumer wants the full outcome.
ApprovalOutcome = ElicitationResult[Decision]
