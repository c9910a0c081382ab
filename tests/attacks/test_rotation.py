"""Rotation ends everything the old token started: sessions, listen streams, background processes.

`%mcp token --rotate` is what the user does when a token leaked. An agent holding the old token
must be cut off at once, not at its next request: an open `subscriptions/listen` stream, a
handshake-era session with its GET stream, and the programs it started with `start_process`
all end.
"""

from __future__ import annotations

import os

import anyio
import pytest
from conftest import KernelHarness, mcp_client


@pytest.fixture(scope="module")
def harness():
    kernel = KernelHarness()
    kernel.load_ipymcp("get_ipython().config.IPyMCP.permissions = 'full'")
    yield kernel
    kernel.shutdown()


async def rotate(harness: KernelHarness) -> str:
    await anyio.to_thread.run_sync(harness.run, "%mcp token --rotate")
    new = (await anyio.to_thread.run_sync(harness.run, "import ipymcp._state as _s; print(_s.runtime.token)"))[
        "stdout"
    ].strip()
    assert new and new != harness.token
    harness.token = new  # the next test's agent is given the new one
    return new


async def test_rotation_ends_an_open_listen_stream_of_the_old_token(harness):
    ended = anyio.Event()
    async with mcp_client(harness.url, harness.token) as agent:
        async with agent.listen(tools_list_changed=True) as subscription:

            async def follow() -> None:
                try:
                    async for _ in subscription:
                        pass
                except Exception:  # noqa: BLE001 - an abrupt end (SubscriptionLost) counts as ended too
                    pass
                ended.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                await rotate(harness)
                with anyio.move_on_after(15):
                    await ended.wait()
                tg.cancel_scope.cancel()
    assert ended.is_set(), "the listen stream opened with the old token is still open after rotation"


async def test_rotation_ends_the_old_tokens_handshake_session(harness):
    async with mcp_client(harness.url, harness.token, mode="legacy") as agent:
        assert not (await agent.call_tool("kernel_status", {})).is_error
        await rotate(harness)
        with pytest.raises(Exception):  # noqa: B017 - the session is gone and the token refused
            with anyio.fail_after(15):
                await agent.call_tool("kernel_status", {})


async def test_rotation_ends_a_call_still_running_with_the_old_token(harness, tmp_path):
    pid_file = tmp_path / "pid"
    async with mcp_client(harness.url, harness.token) as agent:
        outcome: list[object] = []

        async def long_call() -> None:
            try:
                command = f"echo $$ > {pid_file}; exec sleep 60"
                outcome.append(await agent.call_tool("run_command", {"command": command, "timeout": 120}))
            except Exception as exc:  # noqa: BLE001
                outcome.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(long_call)
            with anyio.fail_after(20):
                while not pid_file.exists() or not pid_file.read_text().strip():
                    await anyio.sleep(0.05)
            await rotate(harness)
            with anyio.fail_after(15):
                while not outcome:
                    await anyio.sleep(0.05)
    result = outcome[0]
    assert isinstance(result, Exception) or getattr(result, "is_error", False), result
    await process_ends(int(pid_file.read_text()))


async def process_ends(pid: int, timeout: float = 10) -> None:
    with anyio.fail_after(timeout):
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            # A zombie has no command line left: it is dead, only not yet reaped.
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if not f.read():
                        return
            except FileNotFoundError:
                return
            await anyio.sleep(0.1)


async def test_rotation_ends_the_old_tokens_background_processes(harness):
    async with mcp_client(harness.url, harness.token) as agent:
        assert (await agent.call_tool("list_processes", {})).structured_content["processes"] == []
        started = await agent.call_tool("start_process", {"command": "sleep 300"})
        assert not started.is_error, started
        listed = (await agent.call_tool("list_processes", {})).structured_content["processes"]
        pid = listed[0]["pid"]
        await rotate(harness)
    await process_ends(pid)
    # The new token's agent finds nothing left running from before.
    async with mcp_client(harness.url, harness.token) as agent:
        assert (await agent.call_tool("list_processes", {})).structured_content["processes"] == []
