"""The policy half of ``%mcp``: permissions, approve, log, token --rotate (kernel main thread)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from IPython.display import Markdown, display

from .audit import render_table
from .permissions import DESCRIPTIONS, LEVELS

if TYPE_CHECKING:
    from .._runtime import Runtime

logger = logging.getLogger("ipymcp.policy")


def permissions(runtime: Runtime, level: str | None) -> None:
    policy = runtime.policy
    if level:
        try:
            changed = policy.set_level(level)
        except ValueError as exc:
            print(f"ipymcp: {exc}")
            return
        print(
            f"ipymcp: permissions {'set to' if changed else 'already'} '{policy.level}': {DESCRIPTIONS[policy.level]}."
            + (" Connected clients were told the tool list changed." if changed else "")
        )
        return
    lines = [f"ipymcp permissions: **{policy.level}**", ""]
    for name in LEVELS:
        mark = "→" if name == policy.level else "  "
        lines.append(f"- {mark} `{name}`: {DESCRIPTIONS[name]}")
    lines += ["", "Change with `%mcp permissions LEVEL`."]
    display(Markdown("\n".join(lines)))


def approve(runtime: Runtime, switch: str | None) -> None:
    policy = runtime.policy
    if switch not in ("on", "off", None):
        print("usage: %mcp approve on|off")
        return
    if switch is not None:
        policy.set_approval(switch == "on")
    if policy.approval:
        print(
            f"ipymcp: approval on: calls that run code or commands, write or delete files, or change cells "
            f"wait for your decision, {where_asked(runtime)}; no answer in {policy.approval_timeout:g} s denies."
        )
    else:
        print("ipymcp: approval off: agents act within the permission level without asking.")


def where_asked(runtime: Runtime) -> str:
    """Where the approval prompt appears now, as the approval step chooses it."""
    if runtime.policy.notebook_asker is not None:
        return "asked in this notebook"
    link = runtime.frontend
    if link is not None and link.state == "connected":
        return (
            "asked in a dialog in the notebook (the ipymcp extension is connected; if the notebook is "
            "closed, the agent's MCP client asks instead, if it can show forms)"
        )
    return (
        "asked by the agent's MCP client (a form, if the client supports elicitation; clients that do "
        "not are refused), because no notebook view with the ipymcp extension is connected"
    )


def log(runtime: Runtime, count: str | None) -> None:  # noqa: A001 - the subcommand's name
    try:
        n = int(count) if count else 20
    except ValueError:
        print("usage: %mcp log [N]")
        return
    entries = [e for e in runtime.policy.audit.recent(max(1, n) * 2) if "tool" in e][-max(1, n) :]
    display(
        Markdown(
            f"ipymcp audit log (`{runtime.policy.audit.path}`), last {len(entries)} calls:\n\n"
            + render_table(entries)
        )
    )


def rotate_token(runtime: Runtime) -> None:
    """New token; everything the old one started ends: its handshake-era sessions, every request
    in progress (``subscriptions/listen`` and SSE streams, calls still running) and the agent's
    background processes and commands. The runtime file and the remembered endpoint get the new one."""
    from ..restart import endpoint
    from ..server import discovery
    from ..server.security import new_token

    old, new = runtime.token, new_token()
    runtime.policy.retire_token(old)  # scrubbed from the audit log from now on
    ended = _switch_token(runtime, new)
    discovery.write_private_json(runtime.runtime_file, runtime.runtime_info())
    endpoint.remember(runtime)  # a restart must not bring the old token back
    if runtime.processes is not None:
        ended["processes"] = runtime.processes.stop_all()
    runtime.policy.audit.record({"event": "token rotated", "ended": ended})


def _switch_token(runtime: Runtime, new: str) -> dict[str, int]:
    """Swap the token and end the old one's requests and sessions in one step on the server loop,
    so no request can slip in between (the gate reads the token on that loop)."""
    server, auth = runtime.server, runtime.http_auth
    if server is None or not server.running or auth is None:
        runtime.replace_token(new)
        return {}

    async def switch() -> dict[str, int]:
        runtime.replace_token(new)  # from here on the old token gets 401
        requests = auth.end_requests()
        await runtime.terminate_sessions()
        return {"requests": requests}

    try:
        return server.call_soon(switch, timeout=3) or {}
    except Exception:  # noqa: BLE001 - the new token must hold even if ending the old one's work failed
        runtime.replace_token(new)
        logger.warning("could not end every request and session of the old token", exc_info=True)
        return {}
