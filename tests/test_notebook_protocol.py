"""The comm protocol on every kernel version, with jupyter_client clients playing notebook views.

The browser suite runs the real labextension; here scripted views (their own kernel clients)
check the kernel side where the browser suite cannot: ipykernel 6.29 and Colab's 6.17, stale
views, the choice among several views.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
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
        self.requests: list[str] = []
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
            if msg["msg_type"] != "comm_msg" or content.get("comm_id") != self.comm_id:
                continue
            request = content["data"]
            if "op" not in request:
                continue  # an event from the kernel (state)
            self.requests.append(request["op"])
            if self.answer:
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
