"""Kernel side of the notebook protocol: talk to the ipymcp labextension in each open view.

``%load_ext`` registers the comm target ``ipymcp`` and opens one broadcast comm,
``ipymcp.announce``. Every notebook view running the labextension answers by opening its own
``ipymcp`` comm (also after a page reload: the extension asks for the announce comm with
``comm_info_request``). Requests are ``{id, op, args}``; each gets exactly one reply
``{id, ok, result | error}``, and (protocol 2) an ``{id, ack: true}`` the moment the view receives
it. Views also send ``{event: 'focus'}`` when the user focuses them, and close their comm when the
view is closed or the page unloads (goodbye). The kernel sends ``{event: 'state', came_back}``.

Gone views: a view not heard from for FRESH_SECONDS is pinged before use, and a request a view
does not acknowledge within PING_TIMEOUT, at a time the kernel could have handled the ack (a comm
subshell, or an idle main shell), drops that view and goes to the next one: no call waits out
its timeout for a page that is gone.

Threading: replies arrive on whatever thread the kernel handles comm messages on (the main
shell on ipykernel 6 and without subshells; a subshell thread with ipykernel 7 + JupyterLab
>= 4.4). Callers wait on an Event from the server thread, never from the kernel's main thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .protocol import (
    ACK_PROTOCOL,
    ANNOUNCE_TARGET,
    OLDEST_PROTOCOL,
    PROTOCOL,
    VIEW_TARGET,
    Op,
    reply_error_code,
    view_protocol,
)

if TYPE_CHECKING:
    from .._runtime import Runtime

log = logging.getLogger("ipymcp.frontend")

# Without a view after this long (or once the announce comm is closed back), there is no extension.
DETECT_SECONDS = 2.0
PING_TIMEOUT = 1.5
# A view that answered this recently is used without a fresh ping.
FRESH_SECONDS = 5.0


class FrontendError(Exception):
    """A notebook operation failed; the message says what to do next."""


class NoFrontendError(FrontendError):
    pass


class StaleCellError(FrontendError):
    """The user changed the cell since the agent read it (the view refused the write)."""


class UnknownOpError(FrontendError):
    """The view's extension predates this op (an older ipymcp in the Jupyter server's environment)."""


class FrontendTimeout(FrontendError):
    """The view did not answer in time."""


class ViewGoneError(FrontendError):
    """The view closed (tab closed, page reloaded) while a request to it was pending.

    ``received``: it had acknowledged the request, so it may have acted on it."""

    def __init__(self, message: str, received: bool):
        super().__init__(message)
        self.received = received


@dataclass
class View:
    """One open notebook view (browser tab / panel) connected through its own comm."""

    comm: Any
    path: str
    app: str
    app_version: str
    client: str
    protocol: int = 1
    connected_at: float = field(default_factory=time.monotonic)
    focused_at: float = 0.0
    last_reply: float = 0.0
    # Its comm messages arrive on a kernel subshell (JupyterLab >= 4.4 + ipykernel 7): it can
    # answer while a user cell runs, so a missed ping proves it is gone.
    subshell: bool = False

    @property
    def comm_id(self) -> str:
        return self.comm.comm_id

    def describe(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "path": self.path,
            "app": f"{self.app} {self.app_version}".strip(),
            "connected_s_ago": round(now - self.connected_at, 1),
            "focused_s_ago": round(now - self.focused_at, 1) if self.focused_at else None,
            "answers_while_busy": self.subshell,
        }


@dataclass
class Pending:
    id: int
    op: str
    view: View
    event: threading.Event = field(default_factory=threading.Event)
    # Set on the view's ack (or its reply): the view has the request.
    received: threading.Event = field(default_factory=threading.Event)
    reply: dict[str, Any] | None = None
    # Set when the view closed with this request pending: "before receipt" or "after receipt".
    gone: str = ""


class SeenCells:
    """Each cell as the agent last saw it (read_notebook, get_active_cell, its own insert or
    edit): writes must quote that revision (stale-write guard), and edit_cell's approval prompt
    shows the change against that source."""

    def __init__(self) -> None:
        self._revisions: dict[str, str] = {}
        self._sources: dict[str, tuple[str, str]] = {}

    def remember(self, cell: dict[str, Any]) -> None:
        cell_id, revision = cell.get("id"), cell.get("revision")
        if isinstance(cell_id, str) and revision:
            self._revisions[cell_id] = revision
            if isinstance(cell.get("source"), str):
                self._sources[cell_id] = (revision, cell["source"])

    def forget(self, cell_id: str) -> None:
        self._revisions.pop(cell_id, None)

    def revision(self, cell_id: str) -> str | None:
        return self._revisions.get(cell_id)

    def source(self, cell_id: str, revision: str | None) -> str | None:
        """The source last seen, if it is the one ``revision`` names (None: the last one)."""
        last = self._sources.get(cell_id)
        return last[1] if last is not None and revision in (None, last[0]) else None


class FrontendLink:
    """``runtime.frontend``: the views connected to this kernel and requests to them."""

    def __init__(self, runtime: Runtime, on_stop_sharing: Callable[[], None]):
        self.runtime = runtime
        self.kernel = runtime.kernel
        # The notice's "Stop sharing" button (a view event): stops ipymcp in this kernel.
        self._on_stop_sharing = on_stop_sharing
        self.seen = SeenCells()
        self._views: dict[str, View] = {}
        self._pending: dict[int, Pending] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._announce: Any = None
        self._announce_closed = False
        self._announced_at = 0.0
        self._ever_connected = False
        self._detected = threading.Event()
        self._manager: Any = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Register the view target and announce this kernel; cheap (one IOPub message)."""
        self._manager = getattr(self.kernel, "comm_manager", None)
        if self._manager is None:
            from comm import get_comm_manager

            self._manager = get_comm_manager()
        self._manager.register_target(VIEW_TARGET, self._on_view_open)
        self._announced_at = time.monotonic()
        try:
            self._announce = open_comm(ANNOUNCE_TARGET, {"protocol": PROTOCOL})
            self._announce.on_close(self._on_announce_closed)
        except Exception:  # noqa: BLE001 - no comm support: behave as "no extension"
            log.warning("could not open the announce comm", exc_info=True)
            self._announce_closed = True
            self._detected.set()

    def stop(self) -> None:
        try:
            self._manager.unregister_target(VIEW_TARGET, self._on_view_open)
        except Exception:  # noqa: BLE001
            pass
        with self._lock:
            views, self._views = list(self._views.values()), {}
            pending, self._pending = list(self._pending.values()), {}
        for slot in pending:
            slot.reply = {"ok": False, "error": "ipymcp stopped"}
            slot.received.set()
            slot.event.set()
        for comm in [self._announce] + [v.comm for v in views]:
            if comm is not None and not getattr(comm, "_closed", False):
                try:
                    comm.close()
                except Exception:  # noqa: BLE001
                    pass
        self._announce = None

    # -- what is connected -----------------------------------------------------------------
    @property
    def views(self) -> list[View]:
        with self._lock:
            return list(self._views.values())

    @property
    def state(self) -> str:
        """connected | detecting | no-extension | disconnected."""
        if self._views:
            return "connected"
        if self._ever_connected:
            return "disconnected"
        if self._announce_closed or time.monotonic() - self._announced_at >= DETECT_SECONDS:
            return "no-extension"
        return "detecting"

    def wait_detected(self, timeout: float = DETECT_SECONDS) -> str:
        """Wait (not on the main thread) until it is known whether a view will connect."""
        remaining = self._announced_at + timeout - time.monotonic()
        if self.state == "detecting" and remaining > 0:
            self._detected.wait(remaining)
        return self.state

    def capabilities(self) -> dict[str, Any]:
        state = self.state
        frontend = guess_frontend(self.runtime.shell)
        live = state == "connected"
        caps: dict[str, Any] = {
            "frontend": frontend,
            "extension": state,
            "notebook_tools": "live" if live else "read-only (from the .ipynb on disk)",
            "views": [v.describe() for v in self.views],
            "activity_output": self.runtime.status_display is not None,
            "set_next_input": frontend != "colab",
            "protocol": PROTOCOL,
        }
        if not live:
            caps["why"] = missing_extension_reason(frontend, state)
        return caps

    # -- requests --------------------------------------------------------------------------
    def request(self, op: Op, args: dict[str, Any] | None = None, timeout: float = 10.0) -> dict[str, Any]:
        """Send ``op`` to the chosen view and wait for its reply (blocking; never on the main thread)."""
        if threading.current_thread() is threading.main_thread():
            raise FrontendError("notebook requests cannot wait on the kernel's main thread")
        started = time.monotonic()
        slot = self.deliver(op, args or {})
        if not slot.event.wait(max(0.0, timeout - (time.monotonic() - started))):
            self._forget(slot)
            raise FrontendTimeout(self._timeout_message(op, timeout))
        return self._result(slot)

    async def arequest(
        self,
        op: Op,
        args: dict[str, Any] | None = None,
        timeout: float = 10.0,
        on_tick: Callable[[float], Awaitable[None]] | None = None,
    ) -> dict[str, Any]:
        """``request`` for the server's event loop, calling ``on_tick(elapsed)`` about once a second."""
        import anyio

        started, last_tick = time.monotonic(), 0.0
        slot = await anyio.to_thread.run_sync(self.deliver, op, args or {})
        try:
            while not slot.event.is_set():
                elapsed = time.monotonic() - started
                if elapsed >= timeout:
                    raise FrontendTimeout(self._timeout_message(op, timeout))
                if on_tick is not None and elapsed - last_tick >= 1.0:
                    last_tick = elapsed
                    await on_tick(elapsed)
                await asyncio.sleep(0.02)
        finally:
            if not slot.event.is_set():
                self._forget(slot)
        return self._result(slot)

    def deliver(self, op: Op, args: dict[str, Any]) -> Pending:
        """Send ``op`` to the chosen view and make sure it got there (blocking, up to PING_TIMEOUT
        per view that turns out to be gone); returns the slot to wait on for the reply."""
        while True:
            view = self.choose_view()
            idle_before = self._main_shell_idle()
            slot = self._send(view, op, args)
            if view.protocol < ACK_PROTOCOL or slot.received.wait(PING_TIMEOUT):
                if slot.gone == "before receipt":
                    continue  # it closed before it got the request: nothing was done, the next view gets it
                return slot
            if not (view.subshell or (idle_before and self._main_shell_idle())):
                # Its ack waits behind the running cell (no comm subshells): it may well be there.
                return slot
            self._forget(slot)
            log.info("dropping view %s (%s): it did not acknowledge %s", view.comm_id, view.path, op)
            self._drop(view)

    def choose_view(self) -> View:
        """The view to address: path match, then most recently focused, then most recent.

        Views that have not answered lately are pinged (all at once); those that miss the ping
        while the kernel could have answered are dropped (a reloaded page never closes its comm).
        """
        if not self._views:
            if self.wait_detected() != "connected":
                raise NoFrontendError(
                    missing_extension_reason(guess_frontend(self.runtime.shell), self.state)
                )
        ranked = self.ranked_views()
        if ranked and time.monotonic() - ranked[0].last_reply < FRESH_SECONDS:
            return ranked[0]
        idle_before = self._main_shell_idle()
        pings = {view.comm_id: self._send(view, "hello", {}) for view in ranked}
        deadline = time.monotonic() + PING_TIMEOUT
        for slot in pings.values():
            slot.event.wait(max(0.0, deadline - time.monotonic()))
        conclusive = idle_before and self._main_shell_idle()
        alive = []
        for view in ranked:
            slot = pings[view.comm_id]
            if slot.event.is_set() and slot.reply and slot.reply.get("ok"):
                alive.append(view)
                continue
            self._forget(slot)
            if view.subshell or conclusive:
                log.info("dropping stale view %s (%s): no answer to ping", view.comm_id, view.path)
                self._drop(view)
        if alive:
            return alive[0]
        remaining = self.ranked_views()
        if remaining:
            # Busy kernel without comm subshells: the view cannot answer now; queue behind the cell.
            return remaining[0]
        raise NoFrontendError(
            "no open notebook view answered (closed or reloaded?): open the notebook in JupyterLab or "
            "Notebook 7 with the ipymcp extension, then retry"
        )

    def ranked_views(self) -> list[View]:
        target = self.runtime.notebook_path or ""

        def key(view: View) -> tuple:
            path_match = bool(target and view.path and target.replace("\\", "/").endswith(view.path))
            return (path_match, view.focused_at, view.connected_at)

        return sorted(self.views, key=key, reverse=True)

    def _main_shell_idle(self) -> bool:
        runtime = self.runtime
        return not runtime.cells.user_cell_busy() and runtime.main_thread.current is None

    def _send(self, view: View, op: Op, args: dict[str, Any]) -> Pending:
        slot = Pending(id=next(self._ids), op=op, view=view)
        with self._lock:
            self._pending[slot.id] = slot
        send_without_parent(view.comm, {"id": slot.id, "op": op, "args": args}, self.kernel)
        return slot

    def _forget(self, slot: Pending) -> None:
        with self._lock:
            self._pending.pop(slot.id, None)

    def _result(self, slot: Pending) -> dict[str, Any]:
        if slot.gone:
            received = slot.gone == "after receipt"
            raise ViewGoneError(_gone_message(slot.op, received), received)
        reply = slot.reply or {}
        if reply.get("ok"):
            return reply.get("result") or {}
        error = str(reply.get("error") or "the notebook view reported an error")
        code = reply_error_code(reply)
        if code == "stale_cell":
            raise StaleCellError(error)
        if code == "unknown_op":
            raise UnknownOpError(error)
        raise FrontendError(error)

    def _timeout_message(self, op: str, timeout: float) -> str:
        cells = self.runtime.cells
        if cells.user_cell_busy():
            return (
                f"the notebook view did not answer {op} within {timeout:g} s: {cells.describe_wait()}, and this "
                "JupyterLab/kernel cannot answer comms while a cell runs (needs JupyterLab >= 4.4 with "
                "ipykernel 7). Retry when the cell has finished."
            )
        return f"the notebook view did not answer {op} within {timeout:g} s; retry, or call kernel_status"

    # -- comm callbacks (main shell or subshell thread) ----------------------------------------
    def _on_view_open(self, comm: Any, msg: dict[str, Any]) -> None:
        data = msg.get("content", {}).get("data") or {}
        if view_protocol(data.get("protocol")) < OLDEST_PROTOCOL:
            log.warning("a notebook view speaks protocol %s, older than %s: not used", data.get("protocol"), OLDEST_PROTOCOL)
            send_without_parent_close(comm, self.kernel)
            return
        view = View(
            comm=comm,
            path=str(data.get("path") or ""),
            app=str(data.get("app") or ""),
            app_version=str(data.get("appVersion") or ""),
            client=str(data.get("client") or ""),
            protocol=view_protocol(data.get("protocol")),
        )
        if data.get("focused"):
            view.focused_at = time.monotonic()
        comm.on_msg(lambda m: self._on_view_msg(view, m))
        comm.on_close(lambda m: self._drop(view, close=False))
        with self._lock:
            self._views[comm.comm_id] = view
            self._ever_connected = True
        self._detected.set()
        log.info("notebook view connected: %s in %s %s", view.path, view.app, view.app_version)
        self._send_state(view)

    def send_state(self) -> None:
        """Tell every view what all of them show in their banner (e.g. after a restart's come-back)."""
        for view in self.views:
            self._send_state(view)

    def _send_state(self, view: View) -> None:
        state = {"event": "state", "came_back": self.runtime.came_back is not None}
        try:
            send_without_parent(view.comm, state, self.kernel)
        except Exception:  # noqa: BLE001 - a view that just went away
            log.debug("could not send the state to %s", view.comm_id, exc_info=True)

    def _on_view_msg(self, view: View, msg: dict[str, Any]) -> None:
        if msg.get("header", {}).get("subshell_id"):
            view.subshell = True
        data = msg.get("content", {}).get("data") or {}
        if data.get("event") == "focus":
            view.focused_at = time.monotonic()
            return
        if data.get("event") == "stop_sharing":
            # Not on this (comm) thread: stopping closes the comms.
            threading.Thread(target=self._on_stop_sharing, name="ipymcp-stop-sharing", daemon=True).start()
            return
        view.last_reply = time.monotonic()
        if data.get("ack"):
            with self._lock:
                slot = self._pending.get(data.get("id"))
            if slot is not None:
                slot.received.set()
            return
        with self._lock:
            slot = self._pending.pop(data.get("id"), None)
        if slot is not None:
            slot.received.set()
            slot.reply = data
            slot.event.set()

    def _on_announce_closed(self, msg: Any = None) -> None:
        # JupyterLab without the extension closes an unknown target's comm right away.
        self._announce_closed = True
        self._detected.set()

    def _drop(self, view: View, close: bool = True) -> None:
        with self._lock:
            self._views.pop(view.comm_id, None)
            orphans = [s for s in self._pending.values() if s.view is view]
            for slot in orphans:
                self._pending.pop(slot.id, None)
        for slot in orphans:
            slot.gone = "after receipt" if slot.received.is_set() else "before receipt"
            slot.received.set()
            slot.event.set()
        if close and not getattr(view.comm, "_closed", False):
            try:
                send_without_parent_close(view.comm, self.kernel)
            except Exception:  # noqa: BLE001
                pass


# Ops that change nothing: a view that went away during one leaves nothing to find out.
_READS = ("hello", "read_notebook", "get_active")


def _gone_message(op: str, received: bool) -> str:
    if not received or op in _READS:
        return f"the notebook view went away (closed or reloaded) before it answered {op}: nothing was changed; retry"
    return (
        f"the notebook view went away (closed or reloaded) after it received {op} and before it answered: "
        "it may or may not have been carried out (unknown). Call read_notebook before trying again"
    )


def open_comm(target: str, data: dict[str, Any]) -> Any:
    """A kernel-side comm on every ipykernel we support (``comm.create_comm`` from 6.18 on; before
    that, the ``comm`` package's default is a dummy that sends nothing)."""
    import ipykernel

    if _version_tuple(ipykernel.__version__) >= (6, 18):
        from comm import create_comm

        return create_comm(target_name=target, data=data)
    # ipykernel < 6.18 (Colab): comm.create_comm would return a DummyComm that sends nothing.
    from ipykernel.comm import Comm

    return Comm(target_name=target, data=data)


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _without_parent(kernel: Any, action: Callable[[], None]) -> None:
    # ipykernel 7 routes the frontend's reply to the subshell of the *sender's* parent; from a
    # thread that is the main shell, so replies would wait behind a running cell. With an
    # empty parent the reply stays on the frontend's comm subshell.
    var = getattr(kernel, "_shell_parent", None)
    if isinstance(var, contextvars.ContextVar):

        def run() -> None:
            var.set({})
            action()

        contextvars.copy_context().run(run)
    else:
        action()


def send_without_parent(comm: Any, data: dict[str, Any], kernel: Any) -> None:
    _without_parent(kernel, lambda: comm.send(data))


def send_without_parent_close(comm: Any, kernel: Any) -> None:
    _without_parent(kernel, comm.close)


def guess_frontend(shell: Any) -> str:
    ns = getattr(shell, "user_ns", {}) or {}
    if "__vsc_ipynb_file__" in ns:
        return "vscode"
    if "google.colab" in sys.modules:
        return "colab"
    return "jupyter"


def missing_extension_reason(frontend: str, state: str) -> str:
    if state == "detecting":
        return "still waiting for the notebook view to connect (just loaded); retry in a second"
    if frontend == "vscode":
        return (
            "VS Code has no ipymcp notebook extension yet, so the agent cannot edit or run cells here; "
            "use execute to run code, and read_notebook reads the saved .ipynb"
        )
    if frontend == "colab":
        return (
            "Colab does not let kernel extensions edit cells, so the agent cannot edit or run cells here; "
            "use execute to run code, and read_notebook reads the saved .ipynb if there is one"
        )
    if state == "disconnected":
        return (
            "no notebook view is connected any more (tab closed?): open the notebook in JupyterLab or "
            "Notebook 7 again; it reconnects by itself"
        )
    return (
        "the ipymcp JupyterLab/Notebook 7 extension is not active in this frontend (not installed in the "
        "environment that runs the Jupyter server, or disabled): `pip install ipymcp` there and reload "
        "the page; until then use execute, and read_notebook reads the saved .ipynb"
    )
