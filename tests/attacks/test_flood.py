"""No token, no harm: what a peer without the token (or an agent with one) can make the server hold.

A peer that opens connections and sends half a request header holds a file descriptor each; at the
common 1024 soft limit, ~1,100 of them used to take the user's `open()` and `import` down and
stream asyncio tracebacks into the running cell. The server now caps connections
(`max_connections`), drops heads that do not complete in time (`header_timeout`), keeps its loop's
errors in its own log, caps live MCP sessions (`max_sessions`) and expires idle ones
(`session_idle_timeout`).
"""

from __future__ import annotations

import asyncio
import json
import queue
import re
import resource
import socket
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from conftest import KernelHarness, mcp_client

FLOOD = 1_100
HEADER_TIMEOUT = 2.0
HALF_HEADER = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl"
HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
# What server-side trouble looks like if it escapes into a cell or the kernel's own streams.
SERVER_TEXT = re.compile(
    r"Traceback|Too many open files|asyncio|uvicorn|ipymcp|Task exception|socket\.accept|Errno", re.I
)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def room_for_the_attacker(needed: int) -> None:
    """The test process itself opens ~1,100 sockets: make sure its own limit allows it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


class HalfHeaderFlood:
    """Keeps ``size`` connections open, each having sent half a request header and waiting.

    A connection the server closes is opened again (after a pause, as a patient attacker would),
    so the flood lasts until ``stop``. Runs its own asyncio loop on a thread.
    """

    def __init__(self, port: int, size: int = FLOOD):
        self.port = port
        self.size = size
        self.opened = 0  # connections established, in total
        self.closed_by_server = 0
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._loop is not None and self._stop_event is not None:
            self._loop.call_soon_threadsafe(self._stop_event.set)
        self._thread.join(30)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        holders = [asyncio.ensure_future(self._hold()) for _ in range(self.size)]
        await self._stop_event.wait()
        for holder in holders:
            holder.cancel()
        await asyncio.gather(*holders, return_exceptions=True)

    async def _hold(self) -> None:
        assert self._stop_event is not None
        while not self._stopping.is_set():
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 10)
            except (OSError, asyncio.TimeoutError):
                await asyncio.sleep(0.5)
                continue
            self.opened += 1
            try:
                writer.write(HALF_HEADER)
                read = asyncio.ensure_future(reader.read(65536))
                stop = asyncio.ensure_future(self._stop_event.wait())
                await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
                if read.done():
                    self.closed_by_server += 1
                else:
                    read.cancel()
                stop.cancel()
            except OSError:
                self.closed_by_server += 1
            finally:
                writer.transport.abort()
            await asyncio.sleep(1.0)  # then come back


def collect_outputs(harness: KernelHarness, msg_id: str, timeout: float = 60) -> list[dict[str, Any]]:
    """Every IOPub message of one cell, until its idle status."""
    outputs: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = harness.kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return outputs
        outputs.append(msg)
    raise AssertionError(f"the user's cell never finished: the kernel went silent for {timeout:g} s")


@pytest.fixture(scope="module")
def flooded(tmp_path_factory):
    """A kernel limited to 1024 open files (the common default), its own stdout/stderr captured."""
    room_for_the_attacker(4 * FLOOD)
    streams = tmp_path_factory.mktemp("kernel-streams")
    with open(streams / "stdout", "wb") as out, open(streams / "stderr", "wb") as err:
        harness = KernelHarness(stdout=out, stderr=err)
    harness.streams = streams
    harness.run(
        "import resource as _r\n"
        "_r.setrlimit(_r.RLIMIT_NOFILE, (1024, _r.getrlimit(_r.RLIMIT_NOFILE)[1]))\n"
        "del _r"
    )
    # No CPU pacing: the token holder's call during the flood would otherwise wait its turn
    # behind the running user cell, by design, and slow this test down.
    harness.load_ipymcp(
        f"c = get_ipython().config.IPyMCP\nc.header_timeout = {HEADER_TIMEOUT}\nc.busy_cpu_share = 0.0\ndel c"
    )
    yield harness
    harness.shutdown()


USER_CELL = """
import os, time, json, pathlib
_go, _stop, _checked = pathlib.Path({go!r}), pathlib.Path({stop!r}), pathlib.Path({checked!r})
_failures, _check = [], None
while not _stop.exists():  # a stat: needs no file descriptor
    try:
        open(os.devnull).close()
    except OSError as e:
        _failures.append(str(e))
    if _go.exists() and _check is None:
        try:
            _files = [open(os.devnull) for _ in range(400)]  # the server must leave the user room
            for _f in _files:
                _f.close()
            import xml.dom.minidom  # first import in this kernel: opens files
            _check = "ok"
        except Exception as e:
            _check = f"{{type(e).__name__}}: {{e}}"
        try:
            _checked.touch()
        except OSError:
            pass
    time.sleep(0.05)
print(json.dumps({{"check": _check, "failures": len(_failures), "first": _failures[:1]}}))
"""


async def kernel_status(harness: KernelHarness, tries: int = 2) -> dict[str, Any]:
    """A token holder's call; like any client it retries a dropped connection."""
    for attempt in range(tries):
        try:
            with anyio.fail_after(20):
                async with mcp_client(harness.url, harness.token) as c:
                    return (await c.call_tool("kernel_status", {})).structured_content
        except Exception:  # noqa: BLE001
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


async def test_half_header_flood_leaves_the_users_cells_working_and_silent(flooded, tmp_path):
    go, stop, checked = tmp_path / "go", tmp_path / "stop", tmp_path / "checked"
    msg_id = flooded.send(USER_CELL.format(go=str(go), stop=str(stop), checked=str(checked)))
    flood = HalfHeaderFlood(port_of(flooded.url))
    flood.start()
    served_during: Any = None
    try:
        with anyio.move_on_after(60):  # 1,100 sockets take a second or two when the server keeps up
            while flood.opened < FLOOD:
                await anyio.sleep(0.05)
        assert flood.opened >= FLOOD * 0.9, f"the flood never got going ({flood.opened} connections)"
        try:
            served_during = await kernel_status(flooded)
        except Exception as exc:  # noqa: BLE001 - reported below, after the user's side is checked
            served_during = exc
        go.touch()
        with anyio.move_on_after(30):  # the cell cannot even touch a file if the server took them all
            while not checked.exists():
                await anyio.sleep(0.05)
    finally:
        stop.touch()
        flood.stop()
    outputs = await anyio.to_thread.run_sync(collect_outputs, flooded, msg_id)
    texts = [
        m["content"].get("text") or json.dumps(m["content"]) for m in outputs if m["msg_type"] not in ("execute_input", "status")
    ]
    assert len(texts) == 1, texts[:3]  # the cell's own line, nothing from the server
    report = json.loads(texts[0])
    assert report == {"check": "ok", "failures": 0, "first": []}, report
    assert isinstance(served_during, dict) and served_during["pid"], f"token holder not served during: {served_during!r}"
    assert (await kernel_status(flooded))["pid"]  # and afterwards
    for name in ("stdout", "stderr"):
        captured = (flooded.streams / name).read_bytes().decode("utf-8", "replace")
        assert not SERVER_TEXT.search(captured), f"kernel {name}: {captured[:2000]}"


def test_a_header_that_never_completes_is_dropped_after_the_timeout(flooded):
    with socket.create_connection(("127.0.0.1", port_of(flooded.url)), timeout=HEADER_TIMEOUT * 4 + 10) as sock:
        sock.sendall(HALF_HEADER)
        started = time.monotonic()
        assert sock.recv(65536) == b""  # closed by the server, not by our timeout (that raises)
        waited = time.monotonic() - started
    assert waited >= HEADER_TIMEOUT * 0.9


def test_a_silent_connection_is_dropped_after_the_timeout(flooded):
    with socket.create_connection(("127.0.0.1", port_of(flooded.url)), timeout=HEADER_TIMEOUT * 4 + 10) as sock:
        assert sock.recv(65536) == b""


def test_at_the_cap_connections_that_never_authenticated_go_first(flooded):
    port = port_of(flooded.url)
    request = (
        f"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {flooded.token}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as agent:
        agent.sendall(request)
        assert agent.recv(65536).startswith(b"HTTP/1.1 ")  # answered; the connection stays open
        others = []
        try:
            for _ in range(110):  # past the cap of 100, each pushing out the oldest idle one
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                sock.sendall(HALF_HEADER)
                others.append(sock)
            agent.sendall(request)  # the oldest connection of all, but it authenticated
            assert agent.recv(65536).startswith(b"HTTP/1.1 ")
        finally:
            for sock in others:
                sock.close()


async def test_authenticated_streams_outlive_the_header_timeout(flooded):
    events: list[Any] = []
    async with mcp_client(flooded.url, flooded.token) as modern, mcp_client(
        flooded.url, flooded.token, mode="legacy"
    ) as legacy:
        async with modern.listen(tools_list_changed=True) as subscription:

            async def collect() -> None:
                async for event in subscription:
                    events.append(event)

            async with anyio.create_task_group() as tg:
                tg.start_soon(collect)
                # The deadline concerns request heads only: an open stream is never "idle".
                await anyio.sleep(HEADER_TIMEOUT * 2.5)
                await anyio.to_thread.run_sync(flooded.run, "%mcp permissions read")
                await anyio.to_thread.run_sync(flooded.run, "%mcp permissions execute")
                with anyio.fail_after(20):
                    while len(events) < 2:
                        await anyio.sleep(0.05)
                tg.cancel_scope.cancel()
        assert not (await legacy.call_tool("kernel_status", {})).is_error
    assert len(events) >= 2


# -- token holders: sessions ---------------------------------------------------------------------

INITIALIZE = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "f", "version": "0"}},
    }
).encode()

RSS = "print(int(open('/proc/self/statm').read().split()[1]) * __import__('os').sysconf('SC_PAGE_SIZE'))"


async def test_four_thousand_initialize_calls_hold_nothing_beyond_the_session_cap():
    harness = KernelHarness()
    try:
        harness.load_ipymcp(
            "c = get_ipython().config.IPyMCP\nc.max_sessions = 5\nc.session_idle_timeout = 2\ndel c"
        )
        rss_before = int(harness.run(RSS)["stdout"])
        statuses: dict[int, int] = {}
        refusals: list[str] = []
        async with mcp_client(harness.url, harness.token, mode="legacy") as agent:
            auth = {"Authorization": f"Bearer {harness.token}", **HEADERS}
            async with httpx2.AsyncClient(headers=auth, timeout=60) as http:

                async def initialize_many(n: int) -> None:
                    for _ in range(n):
                        response = await http.post(harness.url, content=INITIALIZE)
                        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                        if response.status_code != 200 and len(refusals) < 3:
                            refusals.append(response.text)

                async with anyio.create_task_group() as tg:
                    for _ in range(8):
                        tg.start_soon(initialize_many, 500)
            # The agent's own session was never evicted to make room.
            assert not (await agent.call_tool("kernel_status", {})).is_error
        assert sum(statuses.values()) == 4_000
        assert statuses.get(503, 0) > 3_000, statuses  # most were refused: 5 sessions at a time
        assert refusals and "max_sessions" in refusals[0] and "session_idle_timeout" in refusals[0], refusals
        # Idle sessions expire: room for new ones without anyone closing the old.
        async with httpx2.AsyncClient(headers=auth, timeout=60) as http:
            with anyio.fail_after(30):
                while (await http.post(harness.url, content=INITIALIZE)).status_code != 200:
                    await anyio.sleep(0.2)
        rss_after = int(harness.run(RSS)["stdout"])
        assert rss_after - rss_before < 40_000_000, (rss_before, rss_after)
    finally:
        harness.shutdown()


# -- loggers ---------------------------------------------------------------------------------

LOGGER_STATE = """
import json, logging
_names = ["", "asyncio", "ipymcp", "mcp", "mcp_types", "uvicorn", "uvicorn.error", "uvicorn.access",
          "sse_starlette", "httpx"]
print(json.dumps({n: [logging.getLogger(n).level, logging.getLogger(n).propagate,
                      [type(h).__name__ for h in logging.getLogger(n).handlers]] for n in _names}))
"""


def test_unload_leaves_every_logger_as_it_was_found(fresh_kernel):
    fresh_kernel.run("import logging; logging.getLogger('uvicorn').setLevel(logging.DEBUG)")  # the user's choice
    before = json.loads(fresh_kernel.run(LOGGER_STATE)["stdout"])
    fresh_kernel.load_ipymcp()
    fresh_kernel.run("%unload_ext ipymcp")
    after = json.loads(fresh_kernel.run(LOGGER_STATE)["stdout"])
    assert after == before


def test_server_loop_errors_go_to_the_log_file_not_to_asyncio(fresh_kernel):
    fresh_kernel.load_ipymcp()
    log_file = Path(fresh_kernel.run("import ipymcp._state as _s; print(_s.runtime.log_file)")["stdout"].strip())
    fresh_kernel.run(
        "import asyncio, logging\n"
        "_seen = []\n"
        "class _Catch(logging.Handler):\n"
        "    def emit(self, record): _seen.append(record.getMessage())\n"
        "logging.getLogger('asyncio').addHandler(_Catch())\n"
        "async def _boom(): raise RuntimeError('boom from the server loop')\n"
        "_s.runtime.server.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(_boom()))"
    )
    deadline = time.monotonic() + 20
    while "boom from the server loop" not in (log_file.read_text() if log_file.exists() else ""):
        assert time.monotonic() < deadline, "the loop's error never reached ipymcp's log file"
        time.sleep(0.1)
    result = fresh_kernel.run("print(_seen)")
    streams = [m["content"]["text"] for m in result["outputs"] if m["msg_type"] == "stream"]
    assert streams == ["[]\n"]  # the user's asyncio logger saw nothing, the cell got nothing
