"""The agent and a busy user: inspection answers, execution queues with progress, never overlaps."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import status_until, text_of, user_cell_running

pytestmark = pytest.mark.compat


async def test_inspection_answers_while_a_user_cell_sleeps(kernel):
    kernel.run("busy_marker = 'set before'")
    async with kernel.client() as c:
        await c.call_tool("kernel_status", {})  # the client's own first-call costs are not the server's
        msg_id = kernel.send("import time; time.sleep(5)")
        try:
            await user_cell_running(c, "time.sleep(5)")
            started = time.monotonic()
            listed = await c.call_tool("list_variables", {"pattern": "busy_*"})
            inspected = await c.call_tool("inspect_variable", {"name": "busy_marker"})
            status = await c.call_tool("kernel_status", {})
            elapsed = time.monotonic() - started
        finally:
            kernel.wait_idle(msg_id)
    assert elapsed < 1.5, f"inspection took {elapsed:.2f} s while the user cell slept"
    assert listed.structured_content["variables"][0]["name"] == "busy_marker"
    assert inspected.structured_content["value"] == "set before"
    running = status.structured_content
    assert running["state"] == "busy"
    assert "time.sleep(5)" in running["user_cell"]["code_head"]
    assert any("sleep" in frame["code"] for frame in running["user_cell"]["frames"])


async def test_execute_queued_behind_a_user_cell_reports_progress_then_runs(kernel):
    progress: list[str] = []

    async def on_progress(value, total, message):
        progress.append(message or "")

    async with kernel.client() as c:
        await c.call_tool("kernel_status", {})
        msg_id = kernel.send("import time; time.sleep(3); queued_order = ['user']")
        try:
            await user_cell_running(c, "time.sleep(3)")
            result = await c.call_tool(
                "execute", {"code": "queued_order.append('agent'); queued_order"}, progress_callback=on_progress
            )
        finally:
            kernel.wait_idle(msg_id)
    assert text_of(result).strip() == "['user', 'agent']"
    assert any(m.startswith("waiting: user cell [") and "running for" in m for m in progress), progress


async def test_execute_times_out_as_kernel_busy_and_never_runs_later(kernel):
    kernel.run("never_ran = True")
    async with kernel.client() as c:
        await c.call_tool("kernel_status", {})
        msg_id = kernel.send("import time; time.sleep(4)")
        try:
            await user_cell_running(c, "time.sleep(4)")
            result = await c.call_tool("execute", {"code": "never_ran = False", "timeout": 1})
        finally:
            kernel.wait_idle(msg_id)
    assert result.is_error
    assert "kernel busy: user cell [" in text_of(result) and "did not run" in text_of(result)
    time.sleep(0.5)
    assert kernel.run("print(never_ran)")["stdout"] == "True\n"


async def test_agent_code_waits_for_an_async_user_cell(kernel):
    async with kernel.client() as c:
        await c.call_tool("kernel_status", {})
        msg_id = kernel.send(
            "import asyncio\nasync_log = ['user start']\nawait asyncio.sleep(2)\nasync_log.append('user end')"
        )
        try:
            await user_cell_running(c, "import asyncio")
            result = await c.call_tool("execute", {"code": "async_log.append('agent'); async_log"})
        finally:
            kernel.wait_idle(msg_id)
    assert text_of(result).strip() == "['user start', 'user end', 'agent']"


async def test_infinite_agent_loop_is_interrupted_at_its_timeout(kernel):
    async with kernel.client() as c:
        started = time.monotonic()
        result = await c.call_tool("execute", {"code": "n = 0\nwhile True:\n    n += 1", "timeout": 1.5})
        elapsed = time.monotonic() - started
    assert result.is_error and "KeyboardInterrupt" in text_of(result)
    assert "timeout of 1.5 s" in text_of(result)
    assert elapsed < 6
    assert kernel.run("print('user cell fine')")["stdout"] == "user cell fine\n"


async def test_sleeping_agent_code_is_interrupted_at_its_timeout(kernel):
    async with kernel.client() as c:
        result = await c.call_tool("execute", {"code": "import time; time.sleep(30)", "timeout": 1})
    assert result.is_error and "KeyboardInterrupt" in text_of(result)
    assert kernel.run("print('next')")["stdout"] == "next\n"


async def test_awaiting_agent_code_is_interrupted_at_its_timeout(kernel):
    async with kernel.client() as c:
        result = await c.call_tool("execute", {"code": "import asyncio\nawait asyncio.sleep(30)", "timeout": 1})
        after = await c.call_tool("execute", {"code": "'loop alive'"})
    assert result.is_error and "KeyboardInterrupt" in text_of(result)
    assert "loop alive" in text_of(after)
    assert kernel.run("print('next')")["stdout"] == "next\n"


async def agent_job_running(client) -> None:
    """Wait until another call's agent code has been running on the main thread for a moment."""
    await status_until(client, lambda s: (s.get("agent_job") or {}).get("running_s", 0) >= 0.3, pause=0.05)


async def test_interrupt_tool_stops_the_agent_job_not_the_user(kernel):
    async with kernel.client() as c, kernel.client() as other:
        call = asyncio.create_task(c.call_tool("execute", {"code": "import time\nwhile True: time.sleep(0.05)"}))
        await agent_job_running(other)
        answer = await other.call_tool("interrupt", {"target": "agent"})
        result = await asyncio.wait_for(call, 10)
    assert "Interrupted" in text_of(answer)
    assert result.is_error and "KeyboardInterrupt" in text_of(result)


async def test_interrupt_user_stops_the_users_cell(kernel):
    msg_id = kernel.send("import time; time.sleep(20)")
    async with kernel.client() as c:
        await user_cell_running(c, "time.sleep(20)")
        answer = await c.call_tool("interrupt", {"target": "user"})
    reply = kernel.wait_idle(msg_id, timeout=10)
    assert "KeyboardInterrupt" in text_of(answer)
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"


async def test_cancelled_request_interrupts_the_agent_code(kernel):
    async with kernel.client() as c, kernel.client() as watcher:
        call = asyncio.create_task(c.call_tool("execute", {"code": "import time\nwhile True: time.sleep(0.05)"}))
        await agent_job_running(watcher)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        status = await status_until(c, lambda s: "agent_job" not in s, timeout=10, pause=0.1)
    assert "agent_job" not in status
    assert kernel.run("print('free')", timeout=10)["stdout"] == "free\n"


async def test_users_concurrent_prints_are_not_stolen(kernel):
    # A user thread keeps printing after its cell returned, while the agent runs code.
    started = kernel.run(
        "import threading, time\n"
        "def _chatter():\n"
        "    for i in range(20):\n"
        "        print(f'user line {i}', flush=True); time.sleep(0.05)\n"
        "chatter = threading.Thread(target=_chatter); chatter.start()"
    )
    async with kernel.client() as c:
        for _ in range(8):
            result = await c.call_tool("execute", {"code": "print('agent line')"})
            assert text_of(result) == "agent line\n"
            await asyncio.sleep(0.05)
        joined = await c.call_tool("execute", {"code": "chatter.join(30); chatter.is_alive()"})
    assert text_of(joined).strip() == "False"
    user_lines = [line for line in (started["stdout"] + _all_stdout(kernel)).splitlines() if line]
    assert user_lines == [f"user line {i}" for i in range(20)]


def _all_stdout(kernel) -> str:
    """Every stdout stream the frontend received since the last drain, whatever its cell."""
    text = []
    while True:
        try:
            msg = kernel.kc.get_iopub_msg(timeout=1)
        except Exception:  # noqa: BLE001 - queue drained
            break
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            text.append(msg["content"]["text"])
    return "".join(text)
