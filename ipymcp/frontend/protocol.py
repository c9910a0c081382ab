"""The notebook protocol's constants, read from ``protocol.json``: the one file the kernel side
(here) and the labextension (``js/src/protocol.ts``, generated from it at build time) share.

The op and event names are also spelled out below as ``Literal`` types, so a typo in the kernel's
code is a type error; ``tests/test_notebook_protocol.py`` checks they list exactly the names of
``protocol.json``. The version-skew rule (an extension of one ipymcp release talking to a kernel
of another) is in ARCHITECTURE.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

_SPEC: dict[str, Any] = json.loads(Path(__file__).with_name("protocol.json").read_text(encoding="utf-8"))

# The protocol this kernel speaks, and the oldest view protocol it still serves.
PROTOCOL: int = _SPEC["protocol"]
OLDEST_PROTOCOL: int = _SPEC["oldest_protocol"]
# Views of this protocol and newer acknowledge each request the moment they receive it.
ACK_PROTOCOL = 2
# The comm the kernel opens to every view (on %load_ext), and the one each view opens back.
ANNOUNCE_TARGET: str = _SPEC["announce_target"]
VIEW_TARGET: str = _SPEC["view_target"]
# What a view (or the come-back helper) runs to load ipymcp silently after a restart. Compiled
# into labextensions already installed: ``ipymcp.restart.autoload`` keeps its name for them.
LOAD_CODE: str = _SPEC["load_code"]

Op = Literal[
    "hello",
    "read_notebook",
    "insert_cell",
    "edit_cell",
    "delete_cell",
    "move_cell",
    "execute_cell",
    "get_active",
    "approve",
    "save",
    "restart",
    "share",
    "show_token",
]
ViewEvent = Literal["focus", "stop_sharing"]
KernelEvent = Literal["state"]
# A failed reply's ``code`` (views before it send only the text: see ``reply_error_code``).
ErrorCode = Literal["unknown_op", "stale_cell"]

OPS: tuple[str, ...] = tuple(_SPEC["ops"])
VIEW_EVENTS: tuple[str, ...] = tuple(_SPEC["view_events"])
KERNEL_EVENTS: tuple[str, ...] = tuple(_SPEC["kernel_events"])


def reply_error_code(reply: dict[str, Any]) -> ErrorCode | None:
    """What went wrong, from a failed reply: its ``code``, or for views that predate codes, the
    ``stale`` flag and the words every extension has put in its unknown-op error."""
    code = reply.get("code")
    if code in ("unknown_op", "stale_cell"):
        return code
    if reply.get("stale"):
        return "stale_cell"
    if str(reply.get("error") or "").startswith("unknown op"):
        return "unknown_op"
    return None


def view_protocol(value: Any) -> int:
    """The protocol a view announced in its comm_open (views that said nothing speak 1)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1
