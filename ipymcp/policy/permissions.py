"""Permission levels: what an agent connected to this kernel may do.

``read`` < ``edit`` < ``execute`` < ``full``; every tool declares the lowest level that allows it
(``Toolbox.tool(level=...)``), or a function of the call's arguments when some calls need more
(``insert_cell(execute=True)`` runs code). Pure Python: imported on the kernel's main thread by ``%mcp``.
"""

from __future__ import annotations

from typing import Literal, get_args

Level = Literal["read", "edit", "execute", "full"]
# The levels, lowest first: the one definition (config's choices, tools, %mcp read it from here).
LEVELS: tuple[Level, ...] = get_args(Level)

DESCRIPTIONS = {
    "read": "inspect variables, history, files and the notebook; change nothing",
    "edit": "read, plus write files and notebook cells; run nothing",
    "execute": "edit, plus run code in the kernel (magics and !shell included)",
    "full": "execute, plus the terminal",
}


def check_level(level: str) -> Level:
    level = str(level).strip().lower()
    for known in LEVELS:
        if level == known:
            return known
    raise ValueError(f"unknown permission level {level!r}; use one of: {', '.join(LEVELS)}")


def allows(current: str, required: str) -> bool:
    return LEVELS.index(current) >= LEVELS.index(required)


def refusal(tool: str, required: str, current: str, listed: str | None = None) -> str:
    """The agent's error; ``listed`` is the tool's own level when these arguments need more."""
    what = tool if listed in (None, required) else f"this {tool} call (with these arguments; {tool} itself is '{listed}')"
    return (
        f"Permission denied: {what} needs the '{required}' permission level, and this kernel is at "
        f"'{current}'. Only the user can change it, in the notebook: %mcp permissions {required}. "
        "Ask them if you need it; do not try to work around it."
    )
