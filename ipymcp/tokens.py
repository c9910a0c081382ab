"""The bearer token never lands in the notebook.

A cell's outputs are saved in the ``.ipynb`` and shared with it, so no output of ipymcp contains
the token: ``%mcp token`` shows it in a dialog of the notebook view (the labextension's
``show_token``: not an output, not saved) or, without the extension, prints the terminal command
that prints it (``ipymcp token --kernel-id …``); client snippets take it from that command or an
environment variable; the activity output is scrubbed of it.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING

from .text import scrub as text_scrub

if TYPE_CHECKING:
    from ._runtime import Runtime

log = logging.getLogger("ipymcp")

def token_command(runtime: Runtime) -> list[str]:
    """The terminal command that prints this kernel's token (the kernel id survives restarts)."""
    from .clients import ipymcp_command

    return [ipymcp_command(), "token", "--kernel-id", runtime.kernel_id]


def terminal_sentence(runtime: Runtime) -> str:
    return f"in a terminal, `{shlex.join(token_command(runtime))}` prints it"


def scrub(text: str, runtime: Runtime) -> str:
    """``text`` without this kernel's current or recent tokens."""
    return text_scrub(text, runtime.known_tokens())


def reveal(runtime: Runtime, report: Callable[[str], None], show: Callable[[str], Callable[[str], None]]) -> None:
    """``%mcp token``: a dialog in the notebook view when the extension is there, else the command.

    ``report(text)`` prints a final sentence; ``show(text)`` displays a sentence that can be
    updated later and returns its updater (the view answers only after the cell has ended on
    kernels without comm subshells, so the request waits on a thread of its own).
    """
    frontend = runtime.frontend
    state = frontend.state if frontend is not None else "no-extension"
    if state in ("no-extension", "disconnected"):
        report(
            "ipymcp: the token is not printed here (cell outputs are saved with the notebook); "
            + terminal_sentence(runtime)
            + "."
        )
        return
    import threading

    update = show("ipymcp: asking the notebook view to show the token in a dialog …")
    threading.Thread(
        target=_show_in_view, args=(runtime, update), name="ipymcp-show-token", daemon=True
    ).start()


def _show_in_view(runtime: Runtime, update: Callable[[str], None]) -> None:
    from .frontend.comm import FrontendError

    frontend = runtime.frontend
    try:
        if frontend is None or frontend.wait_detected() != "connected":
            raise FrontendError("no notebook view with the ipymcp extension is connected")
        frontend.request(
            "show_token",
            {"token": runtime.token, "url": runtime.url, "command": shlex.join(token_command(runtime))},
            timeout=15,
        )
    except FrontendError as exc:
        update(
            f"ipymcp: could not show the token in the notebook view ({scrub(str(exc), runtime)}); "
            + terminal_sentence(runtime)
            + "."
        )
        return
    except Exception:  # noqa: BLE001 - never a traceback (with locals) in the cell
        log.exception("show_token failed")
        update("ipymcp: could not show the token in the notebook view; " + terminal_sentence(runtime) + ".")
        return
    update(
        "ipymcp: the token is shown in a dialog of the notebook view (with a Copy button); it is not "
        "saved in this notebook. Also " + terminal_sentence(runtime) + "."
    )
