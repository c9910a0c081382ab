"""Limits: request body size, output budget, concurrent calls, queued executions, CPU pacing."""

from __future__ import annotations

import asyncio

import httpx2
import pytest
from conftest import KernelHarness, status_until, text_of

HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


@pytest.fixture(scope="module")
def limited():
    harness = KernelHarness()
    harness.load_ipymcp("c = get_ipython().config.IPyMCP\nc.max_request_body_bytes = 200_000\ndel c")
    yield harness
    harness.shutdown()


def set_limits(kernel, **values) -> None:
    assignments = "; ".join(f"_l.{k} = {v!r}" for k, v in values.items())
    kernel.run(f"import ipymcp._state as _s; _l = _s.runtime.policy.limits; {assignments}; del _s, _l")


async def test_request_body_over_the_limit_gets_413_and_the_server_stays_up(limited):
    body = (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"execute","arguments":{"code":"'
        + (b"#" * 300_000)
        + b'"}}}'
    )
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {limited.token}", **HEADERS}) as http:
        response = await http.post(limited.url, content=body)
    assert response.status_code == 413
    async with limited.client() as c:
        assert not (await c.call_tool("kernel_status", {})).is_error


async def test_output_budget_applies_per_call(limited):
    limited.run("import ipymcp._state as _s; _s.runtime.config.max_output_chars = 1000; del _s")
    try:
        async with limited.client() as c:
            result = await c.call_tool("execute", {"code": "print('x' * 50_000)"})
        assert not result.is_error
        assert len(text_of(result)) < 1500
    finally:
        limited.run("import ipymcp._state as _s; _s.runtime.config.max_output_chars = 20_000; del _s")


async def test_too_many_concurrent_calls_are_refused_with_a_clear_error(limited):
    set_limits(limited, max_concurrent=2, max_queued=10)
    try:
        async with limited.client() as c:
            calls = [c.call_tool("execute", {"code": "import time; time.sleep(1.5)"}) for _ in range(3)]
            results = await asyncio.gather(*calls)
        refused = [r for r in results if r.is_error]
        assert len(refused) == 1
        assert "Too many calls in progress (2, limit 2)" in text_of(refused[0])
    finally:
        set_limits(limited, max_concurrent=32, max_queued=8)


async def test_queued_executions_over_the_cap_are_refused_and_interrupt_still_works(limited):
    set_limits(limited, max_queued=1)
    try:
        async with limited.client() as c:
            first = asyncio.ensure_future(c.call_tool("execute", {"code": "import time; time.sleep(3)"}))
            await status_until(c, lambda s: "agent_job" in s, pause=0.05)  # running
            second = asyncio.ensure_future(c.call_tool("execute", {"code": "1"}))
            await status_until(c, lambda s: s.get("agent_jobs_queued") == 1, pause=0.05)  # queued behind it
            third = await c.call_tool("execute", {"code": "2"})
            assert third.is_error and "Too many queued executions" in text_of(third)
            stop = await c.call_tool("interrupt", {"target": "agent"})
            assert not stop.is_error, text_of(stop)
            await asyncio.gather(first, second)
    finally:
        set_limits(limited, max_queued=8)
    assert limited.run("print('kernel fine')")["stdout"].strip() == "kernel fine"


async def test_calls_are_paced_only_while_a_user_cell_runs(limited):
    def delayed() -> float:
        out = limited.run("import ipymcp._state as _s; print(_s.runtime.policy.pacer.delayed_s); del _s")[
            "stdout"
        ]
        return float(out)

    async with limited.client() as c:
        idle_before = delayed()
        for _ in range(60):
            await c.call_tool("list_variables", {})
        assert delayed() == idle_before  # an idle kernel is never paced
        msg = limited.send("import time\nt0 = time.time()\nwhile time.time() - t0 < 3: pass")
        for _ in range(100):  # wait until the user cell is really running
            status = await c.call_tool("kernel_status", {})
            if "user_cell" in status.structured_content:
                break
            await asyncio.sleep(0.05)
        done = asyncio.ensure_future(asyncio.to_thread(limited.wait_idle, msg))
        while not done.done():
            results = await asyncio.gather(*[c.call_tool("list_variables", {}) for _ in range(8)])
            assert not any(r.is_error for r in results)
        await done
    assert delayed() > idle_before
