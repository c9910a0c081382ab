"""The comm protocol on every kernel version, with jupyter_client clients playing notebook views.

The browser suite runs the real labextension; here scripted views (their own kernel clients)
check the kernel side where the browser suite cannot: ipykernel 6.29 and Colab's 6.17, stale
views, the choice among several views.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import KernelHarness, text_of
from jupyter_client.session import Session

pytestmark = pytest.mark.compat


class ScriptedView:
    """A notebook view: opens its own ``ipymcp`` comm and answers requests (or stays silent)."""

    def __init__(
        self,
        harness: KernelHarness,
        path: str,
        cells: list[str],
        answer: bool = True,
        protocol: int = 1,
        extra: dict[str, Any] | None = None,
        leave: str = "",
    ):
        # A session of its own: clients sharing one have the same ZMQ identity and lose messages.
        session = Session(key=harness.km.session.key, signature_scheme=harness.km.session.signature_scheme)
        self.kc = harness.km.client(session=session)
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=30)
        self.comm_id = uuid.uuid4().hex
        self.cells = [{"id": f"c{i}", "cell_type": "code", "source": s} for i, s in enumerate(cells)]
        self.answer = answer
        # Protocol 2 views acknowledge each request at once, as the labextension does.
        self.protocol = protocol
        # Added to read_notebook's result (what a view may claim besides the cells).
        self.extra = extra or {}
        # "before ack" / "after ack": on its first request other than hello, the page goes away
        # (closes its comm, as a reload does) before or after acknowledging it, never answering.
        self.leave = leave
        self.requests: list[str] = []
        self.closed_by_kernel = threading.Event()
        self._stop = threading.Event()
        self._outbox: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._send(
            "comm_open",
            {
                "comm_id": self.comm_id,
                "target_name": "ipymcp",
                "data": {"protocol": protocol, "path": path, "app": "Scripted", "appVersion": "1", "client": "t"},
            },
        )

    def _send(self, msg_type: str, content: dict[str, Any]) -> None:
        # Sent by the serving thread: one thread uses the client's sockets.
        self._outbox.put(self.kc.session.msg(msg_type, content))

    def focus(self) -> None:
        self._send("comm_msg", {"comm_id": self.comm_id, "data": {"event": "focus"}})

    def _serve(self) -> None:
        while not self._stop.is_set():
            while not self._outbox.empty():
                self.kc.shell_channel.send(self._outbox.get())
            try:
                msg = self.kc.get_iopub_msg(timeout=0.05)
            except Exception:  # noqa: BLE001 - queue.Empty
                continue
            content = msg["content"]
            if msg["msg_type"] == "comm_close" and content.get("comm_id") == self.comm_id:
                self.closed_by_kernel.set()
            if msg["msg_type"] != "comm_msg" or content.get("comm_id") != self.comm_id:
                continue
            request = content["data"]
            if "op" not in request:
                continue  # an event from the kernel (state)
            self.requests.append(request["op"])
            if self.leave and request["op"] != "hello":
                if self.leave == "after ack":
                    self._send("comm_msg", {"comm_id": self.comm_id, "data": {"id": request["id"], "ack": True}})
                self._send("comm_close", {"comm_id": self.comm_id, "data": {"reason": "page unloaded"}})
                self.answer = False
                self.leave = ""
            elif self.answer:
                if self.protocol >= 2:
                    self._send("comm_msg", {"comm_id": self.comm_id, "data": {"id": request["id"], "ack": True}})
                self._send("comm_msg", {"comm_id": self.comm_id, "data": self._reply(request)})

    def _reply(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request["op"]
        if op == "hello":
            return {"id": request["id"], "ok": True, "result": {}}
        if op == "read_notebook":
            cells = [
                {**c, "index": i, "revision": "r" + c["id"], "outputs": [], "execution_count": None}
                for i, c in enumerate(self.cells)
            ]
            result = {"path": "x.ipynb", "dirty": True, "n_cells": len(cells), "cells": cells, **self.extra}
            return {"id": request["id"], "ok": True, "result": result}
        return {"id": request["id"], "ok": False, "error": f"unknown op {op}"}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.kc.stop_channels()


@pytest.fixture
def loaded(tmp_path: Any) -> Any:
    harness = KernelHarness(cwd=tmp_path, env={"JPY_SESSION_NAME": str(tmp_path / "work" / "analysis.ipynb")})
    harness.load_ipymcp()
    yield harness
    harness.shutdown()


async def _status(harness: KernelHarness) -> dict[str, Any]:
    async with harness.client() as client:
        return json.loads(text_of(await client.call_tool("kernel_status", {})))["frontend"]


async def _wait_views(harness: KernelHarness, n: int) -> dict[str, Any]:
    for _ in range(100):
        status = await _status(harness)
        if len(status["views"]) == n:
            return status
        time.sleep(0.05)
    raise AssertionError(status)


async def test_a_view_connects_and_answers_read_notebook(loaded: KernelHarness) -> None:
    view = ScriptedView(loaded, "work/analysis.ipynb", ["x = 1", "print(x)"])
    try:
        status = await _wait_views(loaded, 1)
        assert status["extension"] == "connected" and status["notebook_tools"] == "live"
        async with loaded.client() as client:
            result = await client.call_tool("read_notebook", {})
        text = text_of(result)
        assert not result.is_error, text
        assert "live from the open notebook view (Scripted 1)" in text and "with unsaved changes" in text
        assert "id c0" in text and "x = 1" in text and "rev rc1" in text
        assert view.requests[-1] == "read_notebook"
    finally:
        view.close()


async def test_a_silent_view_is_dropped_after_a_failed_ping_and_the_live_one_is_used(
    loaded: KernelHarness,
) -> None:
    live = ScriptedView(loaded, "work/analysis.ipynb", ["live = True"])
    await _wait_views(loaded, 1)
    silent = ScriptedView(loaded, "work/analysis.ipynb", ["stale"], answer=False)  # newer: ranked first
    try:
        await _wait_views(loaded, 2)
        async with loaded.client() as client:
            result = await client.call_tool("read_notebook", {})
        assert not result.is_error, (text_of(result), live.requests, silent.requests)
        assert "live = True" in text_of(result)
        assert silent.requests == ["hello"]
        assert len((await _status(loaded))["views"]) == 1
    finally:
        live.close()
        silent.close()


async def test_the_view_of_this_notebook_file_wins_then_the_last_focused(loaded: KernelHarness) -> None:
    mine = ScriptedView(loaded, "work/analysis.ipynb", ["mine = 1"])
    await _wait_views(loaded, 1)
    other = ScriptedView(loaded, "elsewhere/other.ipynb", ["other = 1"])  # newer, other file
    second = None
    try:
        await _wait_views(loaded, 2)
        async with loaded.client() as client:
            assert "mine = 1" in text_of(await client.call_tool("read_notebook", {}))
            second = ScriptedView(loaded, "work/analysis.ipynb", ["second view = 1"])
            await _wait_views(loaded, 3)
            # Two views of this notebook: the newest wins until the user focuses the other one.
            assert "second view = 1" in text_of(await client.call_tool("read_notebook", {}))
            mine.focus()
            time.sleep(0.3)
            assert "mine = 1" in text_of(await client.call_tool("read_notebook", {}))
    finally:
        for view in (mine, other, second):
            if view is not None:
                view.close()


async def test_a_view_closing_its_comm_leaves_the_tools_explaining_what_to_do(loaded: KernelHarness) -> None:
    view = ScriptedView(loaded, "work/analysis.ipynb", ["x"])
    try:
        await _wait_views(loaded, 1)
        view._send("comm_close", {"comm_id": view.comm_id, "data": {"reason": "view closed"}})
        status = await _wait_views(loaded, 0)
        assert status["extension"] == "disconnected" and "open the notebook" in status["why"]
        async with loaded.client() as client:
            result = await client.call_tool("insert_cell", {"source": "# hi", "cell_type": "markdown"})
        assert result.is_error and "no notebook view is connected" in text_of(result)
    finally:
        view.close()


async def test_a_view_that_went_silent_is_dropped_at_once_and_the_call_goes_to_the_live_one(
    loaded: KernelHarness,
) -> None:
    # A page that crashed or lost its connection: it answered a moment ago, then nothing, no goodbye.
    live = ScriptedView(loaded, "work/analysis.ipynb", ["live = True"], protocol=2)
    await _wait_views(loaded, 1)
    gone = ScriptedView(loaded, "work/analysis.ipynb", ["gone = True"], protocol=2)  # newer: ranked first
    try:
        await _wait_views(loaded, 2)
        async with loaded.client() as client:
            assert "gone = True" in text_of(await client.call_tool("read_notebook", {}))
            gone.answer = False
            started = time.monotonic()
            result = await client.call_tool("read_notebook", {})
            elapsed = time.monotonic() - started
        assert not result.is_error, text_of(result)
        assert "live = True" in text_of(result)
        assert elapsed < 5, f"waited {elapsed:.1f} s for a view that is gone"
        assert len((await _status(loaded))["views"]) == 1
    finally:
        live.close()
        gone.close()


async def test_a_view_that_closes_before_it_got_the_request_passes_it_to_the_next_view(
    loaded: KernelHarness,
) -> None:
    live = ScriptedView(loaded, "work/analysis.ipynb", ["live = True"], protocol=2)
    await _wait_views(loaded, 1)
    leaving = ScriptedView(loaded, "work/analysis.ipynb", ["leaving"], protocol=2, leave="before ack")  # ranked first
    try:
        await _wait_views(loaded, 2)
        async with loaded.client() as client:
            result = await client.call_tool("read_notebook", {})
        assert not result.is_error and "live = True" in text_of(result), text_of(result)
        assert "read_notebook" in leaving.requests
    finally:
        live.close()
        leaving.close()


async def test_a_view_that_closes_after_it_got_a_write_says_the_write_may_have_happened(
    loaded: KernelHarness,
) -> None:
    # A reload right after the page received insert_cell: the cell may be in the notebook or not,
    # and "retry" could insert it twice.
    leaving = ScriptedView(loaded, "work/analysis.ipynb", ["x"], protocol=2, leave="after ack")
    try:
        await _wait_views(loaded, 1)
        async with loaded.client() as client:
            started = time.monotonic()
            result = await client.call_tool("insert_cell", {"source": "# once", "cell_type": "markdown"})
        told = text_of(result)
        assert result.is_error and "after it received insert_cell" in told, told
        assert "may or may not have been carried out" in told and "retry" not in told, told
        assert time.monotonic() - started < 10
        assert leaving.requests[-1] == "insert_cell"
    finally:
        leaving.close()


async def test_a_view_that_closes_during_a_read_says_retry(loaded: KernelHarness) -> None:
    leaving = ScriptedView(loaded, "work/analysis.ipynb", ["x"], protocol=2, leave="after ack")
    try:
        await _wait_views(loaded, 1)
        async with loaded.client() as client:
            result = await client.call_tool("read_notebook", {})
        told = text_of(result)
        assert result.is_error and "went away (closed or reloaded) before it answered read_notebook" in told, told
        assert "nothing was changed; retry" in told and "may or may not" not in told, told
        assert leaving.requests[-1] == "read_notebook"
    finally:
        leaving.close()


async def test_read_notebook_says_idle_from_the_kernels_own_tracking(loaded: KernelHarness) -> None:
    # Without comm subshells the view's kernel status is "busy" while it handles this very request.
    view = ScriptedView(loaded, "work/analysis.ipynb", ["x = 1"], extra={"kernel_busy": True})
    try:
        await _wait_views(loaded, 1)
        async with loaded.client() as client:
            header = text_of(await client.call_tool("read_notebook", {})).split("──")[0]
        assert "The kernel is idle." in header and "busy" not in header, header
        assert "with unsaved changes." in header and "; " not in header, header
    finally:
        view.close()


# -- one source of the protocol's names, and version skew -----------------------------------------


def test_the_kernel_side_names_exactly_the_ops_and_events_of_protocol_json() -> None:
    from typing import get_args

    from ipymcp.frontend import protocol

    spec = json.loads((Path(protocol.__file__).with_name("protocol.json")).read_text())
    assert list(get_args(protocol.Op)) == spec["ops"] == list(protocol.OPS)
    assert list(get_args(protocol.ViewEvent)) == spec["view_events"] == list(protocol.VIEW_EVENTS)
    assert list(get_args(protocol.KernelEvent)) == spec["kernel_events"] == list(protocol.KERNEL_EVENTS)
    assert (protocol.PROTOCOL, protocol.OLDEST_PROTOCOL) == (spec["protocol"], spec["oldest_protocol"])


def test_names_compiled_into_installed_extensions_and_helpers_stay_valid(fresh_kernel: KernelHarness) -> None:
    """Extensions already installed (any release) load ipymcp with this exact code after a restart
    or for a shared notebook, and open these comm targets; restart helpers are started with
    ``python -m ipymcp.restart comeback|rest``."""
    from ipymcp.frontend import protocol

    legacy_load_code = "__import__('ipymcp.restart', fromlist=['autoload']).autoload(get_ipython())"
    assert protocol.LOAD_CODE == legacy_load_code
    assert (protocol.ANNOUNCE_TARGET, protocol.VIEW_TARGET) == ("ipymcp.announce", "ipymcp")
    fresh_kernel.run(legacy_load_code)
    out = fresh_kernel.run(
        "import ipymcp._state as _s; print(_s.runtime.wait_ready(30), _s.runtime.config.port); del _s"
    )["stdout"].split()
    assert out[0] == "True"
    helper = subprocess.run(
        [sys.executable, "-m", "ipymcp.restart", "--help"], capture_output=True, text=True, check=True
    )
    assert "comeback" in helper.stdout and "rest" in helper.stdout


class CodedView(ScriptedView):
    """A view of today's extension: failures carry a code, and the text is its own."""

    def __init__(self, harness: KernelHarness, replies: dict[str, dict[str, Any]]):
        super().__init__(harness, "work/analysis.ipynb", ["x = 1"], protocol=2)
        self.replies = replies

    def _reply(self, request: dict[str, Any]) -> dict[str, Any]:
        if request["op"] in self.replies:
            return {"id": request["id"], **self.replies[request["op"]]}
        return super()._reply(request)


NOBODY_ASKED = "nobody can be asked"


async def _approval_answer(harness: KernelHarness) -> str:
    harness.run("%mcp approve on")
    try:
        async with harness.client() as client:  # this client cannot show forms (no elicitation)
            result = await client.call_tool("execute", {"code": "1 + 1"})
        assert result.is_error
        return text_of(result)
    finally:
        harness.run("%mcp approve off")


async def test_a_protocol_1_view_without_the_approve_op_leaves_approval_to_the_client(loaded: KernelHarness) -> None:
    """An extension of an older release: protocol 1 (no acks), and no approve op (its error says
    "unknown op approve (frontend protocol 1)…" and has no code): the kernel serves it as before."""
    view = ScriptedView(loaded, "work/analysis.ipynb", ["x = 1"], protocol=1)
    try:
        await _wait_views(loaded, 1)
        async with loaded.client() as client:
            read = await client.call_tool("read_notebook", {})
        assert not read.is_error and "x = 1" in text_of(read)
        answer = await _approval_answer(loaded)
        assert "approve" in view.requests and NOBODY_ASKED in answer, answer
    finally:
        view.close()


async def test_failures_are_told_apart_by_their_code_not_their_words(loaded: KernelHarness) -> None:
    view = CodedView(
        loaded,
        {
            "approve": {"ok": False, "code": "unknown_op", "error": "this view cannot ask"},
            "edit_cell": {"ok": False, "code": "stale_cell", "error": "cell x changed"},
        },
    )
    try:
        await _wait_views(loaded, 1)
        answer = await _approval_answer(loaded)
        assert NOBODY_ASKED in answer, answer  # an unknown op: ask elsewhere, not "the prompt failed"
        async with loaded.client() as client:
            await client.call_tool("read_notebook", {})
            edit = await client.call_tool("edit_cell", {"cell_id": "c0", "source": "x = 2"})
        assert edit.is_error and "the user changed this cell, read it again" in text_of(edit), text_of(edit)
    finally:
        view.close()


async def test_a_view_older_than_the_oldest_protocol_is_not_used(loaded: KernelHarness) -> None:
    from ipymcp.frontend.protocol import OLDEST_PROTOCOL

    view = ScriptedView(loaded, "work/analysis.ipynb", ["old"], protocol=OLDEST_PROTOCOL - 1)
    try:
        assert view.closed_by_kernel.wait(20), "the kernel kept the comm of a view it cannot serve"
        status = await _status(loaded)
        assert status["views"] == [] and view.requests == []
    finally:
        view.close()


async def test_a_view_without_the_restart_op_leaves_restart_kernel_to_the_jupyter_server(loaded: KernelHarness) -> None:
    """An extension older than the restart op: restart_kernel goes on to the Jupyter Server API
    (here there is none, so the answer offers reset_namespace) instead of failing on the op."""
    view = ScriptedView(loaded, "work/analysis.ipynb", ["x = 1"], protocol=1)
    try:
        await _wait_views(loaded, 1)
        async with loaded.client() as client:
            result = await client.call_tool("restart_kernel", {})
        assert "restart" in view.requests
        assert result.is_error and "reset_namespace" in text_of(result), text_of(result)
    finally:
        view.close()
