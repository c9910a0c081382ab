"""The notebook the user sees: the labextension link (``comm``) and the no-extension fallbacks."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._runtime import Runtime


def install(runtime: Runtime) -> None:
    """At ``%load_ext``: announce the kernel to notebook views and start the activity log."""
    from .comm import FrontendLink
    from .fallback import ActivityLog

    runtime.activity = ActivityLog(runtime)
    runtime.cleanups.append(runtime.activity.close)
    runtime.frontend = FrontendLink(runtime)
    runtime.frontend.start()
    runtime.cleanups.append(runtime.frontend.stop)
