"""``%mcp share on|off``: the per-notebook opt-in (``metadata.ipymcp.share``, set through the
notebook extension) that makes the extension load ipymcp whenever the notebook is opened."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._runtime import Runtime

log = logging.getLogger("ipymcp.restart")


def share(runtime: Runtime, on: bool, done: Callable[[str], None], stop_sharing: Callable[[], None]) -> None:
    """In a background thread (the view answers after the cell ends): set or remove
    ``metadata.ipymcp.share`` in the notebook; ``off`` also stops ipymcp (``stop_sharing``).
    ``done(markdown)`` reports the outcome."""
    from ..frontend.comm import FrontendError

    frontend = runtime.frontend
    try:
        if frontend is None or frontend.wait_detected(timeout=10) != "connected":
            raise FrontendError("no notebook view with the ipymcp extension is connected")
        result = frontend.request("share", {"share": on}, timeout=15)
    except FrontendError as exc:
        done(
            f"ipymcp: could not record the opt-in in the notebook ({exc}). Without the JupyterLab / Notebook 7 "
            "extension, put `%load_ext ipymcp` in the notebook's first cell instead"
            + ("" if on else "; `%mcp stop` stops the server now")
            + "."
        )
        if not on:
            stop_sharing()
        return
    saved = "saved" if result.get("saved") else "save the notebook to keep it"
    if on:
        done(
            f"ipymcp: `{result.get('path')}` is shared: `metadata.ipymcp.share = true` ({saved}; no secrets in it). "
            "When the notebook is opened again, the ipymcp extension loads ipymcp in its kernel and shows a notice "
            "with *Stop sharing*. `%mcp share off` undoes it."
        )
    else:
        done(f"ipymcp: sharing stopped and the opt-in removed from `{result.get('path')}` ({saved}).")
        stop_sharing()
