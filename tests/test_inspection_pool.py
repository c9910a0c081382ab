"""The inspection pool: a time budget per call, and a call over budget keeps its thread until it returns."""

from __future__ import annotations

import asyncio
import threading

import pytest

from ipymcp.kernel.inspection import InspectionPool, InspectionTimeout


async def test_a_call_over_budget_says_so_and_keeps_its_thread_until_it_returns():
    pool = InspectionPool(threads=1)
    release = threading.Event()
    try:
        with pytest.raises(InspectionTimeout, match=r"the preview took longer than 0.2 s.*holds one of the 1"):
            await pool.run(release.wait, "inspect_variable('stuck')", timeout=0.2)
        with pytest.raises(InspectionTimeout, match=r"held by earlier calls.*inspect_variable\('stuck'\) running for"):
            await pool.run(lambda: "never run", "inspect_variable('next')", timeout=5)
        release.set()
        await until_idle(pool)
        assert await pool.run(lambda: "answered", "inspect_variable('after')", timeout=5) == "answered"
    finally:
        release.set()
        pool.close()


async def until_idle(pool: InspectionPool) -> None:
    """The released call returns on its thread; wait for the pool to see it, not a guessed time."""
    for _ in range(500):
        if not pool.running():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the released call never returned")


async def test_a_call_that_never_got_a_thread_is_not_run_later():
    pool = InspectionPool(threads=1)
    release, ran = threading.Event(), []
    try:
        slow = asyncio.ensure_future(pool.run(release.wait, "slow", timeout=10))
        await asyncio.sleep(0.05)
        with pytest.raises(InspectionTimeout, match="stayed busy"):
            await pool.run(lambda: ran.append(1), "queued", timeout=0.2)
        release.set()
        assert await slow is True
        assert await pool.run(lambda: "free again", "third", timeout=5) == "free again"
        assert ran == []
    finally:
        release.set()
        pool.close()


async def test_errors_reach_the_caller():
    pool = InspectionPool(threads=2)
    try:
        with pytest.raises(ZeroDivisionError):
            await pool.run(lambda: 1 / 0, "boom", timeout=5)
    finally:
        pool.close()
