"""Approval mode: a call that changes things waits for the user's decision.

This is the approval step of the request pipeline (``ipymcp.server.pipeline``), which runs it
after the permission level and the limits, and before the call runs. Who asks the user, first
that applies:
1. nobody, when approval is off or the user chose "allow for this session" for this tool;
2. the notebook, when a registered asker (``Policy.set_notebook_asker``) or the labextension's
   ``approve`` op answers;
3. the MCP client, by elicitation: a live ``elicitation/create`` on handshake-era sessions, an
   ``InputRequiredResult`` round trip on 2026-07-28 (the SDK's ``Resolve``/``Elicit``, which
   works in both eras).
No answer within ``approval_timeout`` denies; so does a client that cannot be asked. A call too
long to show in full (``approval_max_chars``) is refused without asking.

Server thread only (imports the SDK).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import anyio
from mcp.server.elicitation import AcceptedElicitation, ElicitationResult
from mcp.server.mcpserver import Context, Elicit
from pydantic import BaseModel, Field

from ..server.sdk_compat import client_name
from . import ApprovalRequest
from .approval_detail import Diff, as_text, describe, size, visible

if TYPE_CHECKING:
    from . import Policy

log = logging.getLogger("ipymcp.policy")


class Decision(BaseModel):
    """The form the client shows the user."""

    decision: Literal["allow", "allow_session", "deny"] = Field(
        description="allow: this call only; allow_session: this tool until approval is switched off; deny"
    )


@dataclass
class Verdict:
    allowed: bool
    how: str  # shown in the audit log: "not required", "allowed by user (notebook)", "denied: timed out"…
    # The sentence the agent gets when refused; by default "Not approved: … (how)".
    message: str = ""

    def refusal(self, tool: str) -> str:
        if self.message:
            return self.message
        reason = self.how.removeprefix("denied: ")
        return (
            f"Not approved: this {tool} call was refused ({reason}). Nothing was run or changed. "
            "Do not retry the same call unless the user asks you to; explain what you wanted to do instead."
        )


def client_label(ctx: Context) -> str:
    """The client as the approval prompt names it (invisible characters made visible)."""
    name = client_name(ctx.session)
    return visible(name) if name is not None else "an MCP client"


@dataclass(frozen=True)
class ApprovalRule:
    """How one tool is approved: whether a call needs it, and how an edit is shown."""

    needs: Callable[[dict[str, Any]], bool]
    diff: Callable[[dict[str, Any]], Diff | None] | None = None


class ApprovalGate:
    """Asks the user (the resolver body) and turns the answer into a ``Verdict`` (at the run)."""

    def __init__(self, policy: Policy):
        self.policy = policy
        # The in-notebook prompt through the labextension, used when no asker was registered.
        self.frontend_asker: Any = frontend_asker(policy.runtime)

    async def ask(
        self, tool: str, arguments: dict[str, Any], rule: ApprovalRule, ctx: Context
    ) -> Elicit[Decision] | Verdict:
        """The user's decision, or the question to put to the client (2026-07-28 round trip)."""
        policy = self.policy
        if not policy.approval or not rule.needs(arguments):
            return Verdict(True, "not required")
        if tool in policy.session_allowed:
            return Verdict(True, "allowed for this session")
        request = self.request(tool, arguments, rule, client_label(ctx))
        too_long = self._too_long(tool, request)
        if too_long is not None:
            return too_long
        asker = policy.notebook_asker or self.frontend_asker
        if asker is not None:
            verdict = await self._ask_notebook(asker, request)
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
            return Elicit(message, Decision)
        try:
            with anyio.fail_after(policy.approval_timeout):
                result = await ctx.elicit(message, Decision)
        except TimeoutError:
            return Verdict(False, f"denied: no answer within {policy.approval_timeout:g} s")
        return self._from_elicitation(tool, result, "client")

    def request(self, tool: str, arguments: dict[str, Any], rule: ApprovalRule, client: str) -> ApprovalRequest:
        diff = rule.diff(arguments) if rule.diff is not None else None
        sections = describe(arguments, diff)
        head = f"An agent ({client}) wants to call {tool}."
        return ApprovalRequest(
            tool,
            arguments,
            client,
            as_text(sections),
            time.time(),
            sections=[s.as_json() for s in sections],
            shown_chars=size(sections) + len(head),
        )

    def _too_long(self, tool: str, request: ApprovalRequest) -> Verdict | None:
        limit = self.policy.approval_max_chars
        if request.shown_chars <= limit:
            return None
        return Verdict(
            False,
            f"denied: {request.shown_chars:,} characters to show, over approval_max_chars ({limit:,})",
            message=(
                f"Not approved: this {tool} call has {request.shown_chars:,} characters to show, more than the "
                f"approval prompt shows in full (c.IPyMCP.approval_max_chars = {limit:,}), so the user was not "
                "asked and nothing was run or changed. Split the work into smaller calls (less code per call, "
                "a file written in parts), or ask the user to raise the limit."
            ),
        )

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

    def verdict(self, tool: str, outcome: Any, asked_at: float) -> Verdict:
        """The verdict from what the resolver injected into the tool.

        ``asked_at`` is when the call's first round arrived: a 2026-07-28 answer that comes back
        after ``approval_timeout`` denies, as a late answer does in the other eras.
        """
        if isinstance(outcome, AcceptedElicitation) and isinstance(outcome.data, Verdict):
            return outcome.data
        if time.monotonic() - asked_at > self.policy.approval_timeout:
            return Verdict(False, f"denied: the answer came after {self.policy.approval_timeout:g} s")
        return self._from_elicitation(tool, outcome, "client")

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


def frontend_asker(runtime: Any) -> Callable[[ApprovalRequest, float], Any]:
    """Ask in the notebook through the labextension (``ipymcp.frontend``): op ``approve``.

    Contract with the extension: request ``approve`` with args ``{tool, client, message, detail,
    sections, timeout_s}``; the view shows a dialog with every section in full (``detail``, the
    same as one text, for extensions that predate ``sections``) and Allow / Allow for this
    session / Deny, and replies ``{"decision": "allow" | "allow_session" | "deny"}``. No
    connected view, or a view whose extension does not know ``approve`` yet: returns None and
    the client is asked by elicitation instead.
    """

    async def ask(request: ApprovalRequest, timeout: float) -> str | None:
        link = getattr(runtime, "frontend", None)
        if link is None or getattr(link, "state", None) != "connected":
            return None
        from ..frontend.comm import FrontendTimeout, NoFrontendError, UnknownOpError

        args = {
            "tool": request.tool,
            "client": request.client,
            "message": request.message(),
            "detail": request.detail,
            "sections": request.sections,
            "timeout_s": timeout,
        }
        try:
            reply = await link.arequest("approve", args, timeout=timeout)
        except (NoFrontendError, UnknownOpError):
            return None
        except FrontendTimeout as exc:
            raise TimeoutError(str(exc)) from exc
        return str(reply.get("decision", "deny"))

    return ask


def _modern(ctx: Context) -> bool:
    version = ctx.protocol_version or ""
    return version >= "2026-07-28"


def _can_elicit(ctx: Context) -> bool:
    capabilities = ctx.client_capabilities
    elicitation = getattr(capabilities, "elicitation", None) if capabilities is not None else None
    if elicitation is None or (elicitation.form is None and elicitation.url is not None):
        return False
    return _modern(ctx) or bool(ctx.session.can_send_request)


# The resolver's consumer wants the full outcome (accept / decline / cancel), not just the model.
ApprovalOutcome = ElicitationResult[Decision]
