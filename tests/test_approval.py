"""Approval mode: allow / allow for this session / deny / timeout, by elicitation in both protocol
eras, and through the pluggable in-notebook asker."""

from __future__ import annotations

import asyncio

import pytest
from conftest import text_of
from mcp import types

ERAS = ["legacy", "auto"]  # handshake era (2025-11-25, live elicitation/create) and 2026-07-28


def answering(decision: str | None, delay: float = 0.0, calls: list | None = None):
    """An SDK client elicitation callback: the user's answer (None = decline)."""

    async def callback(context, params):  # noqa: ANN001, ANN202
        if calls is not None:
            calls.append(params.message)
        if delay:
            await asyncio.sleep(delay)
        if decision is None:
            return types.ElicitResult(action="decline")
        return types.ElicitResult(action="accept", content={"decision": decision})

    return callback


def configure(kernel, on: bool, timeout: float = 30) -> None:
    kernel.run(f"%mcp approve {'on' if on else 'off'}")
    kernel.run(f"import ipymcp._state as _s; _s.runtime.policy.approval_timeout = {timeout}; del _s")


@pytest.fixture(autouse=True)
def approval_off_afterwards(kernel):
    yield
    kernel.run("%mcp approve off")


@pytest.mark.parametrize("mode", ERAS)
async def test_allowed_call_runs_after_the_user_says_allow(kernel, mode):
    configure(kernel, True)
    calls: list[str] = []
    async with kernel.client(mode=mode, elicitation_callback=answering("allow", calls=calls)) as c:
        result = await c.call_tool("execute", {"code": f"approved_{mode} = 1\nprint('ran')"})
    assert not result.is_error, text_of(result)
    assert "ran" in text_of(result)
    assert len(calls) == 1 and f"approved_{mode} = 1" in calls[0]  # the exact code is shown


@pytest.mark.parametrize("mode", ERAS)
async def test_denied_call_returns_a_clear_error_and_runs_nothing(kernel, mode):
    configure(kernel, True)
    kernel.run("denied_marker = 'untouched'")
    async with kernel.client(mode=mode, elicitation_callback=answering("deny")) as c:
        result = await c.call_tool("execute", {"code": "denied_marker = 'changed'"})
    assert result.is_error
    assert "Not approved" in text_of(result) and "denied by the user" in text_of(result)
    assert kernel.run("print(denied_marker)")["stdout"].strip() == "untouched"


@pytest.mark.parametrize("mode", ERAS)
async def test_declining_the_form_denies(kernel, mode):
    configure(kernel, True)
    async with kernel.client(mode=mode, elicitation_callback=answering(None)) as c:
        result = await c.call_tool("execute", {"code": "1"})
    assert result.is_error and "declined" in text_of(result)


@pytest.mark.parametrize("mode", ERAS)
async def test_no_answer_within_the_timeout_denies(kernel, mode):
    configure(kernel, True, timeout=1)
    kernel.run("late_marker = 'untouched'")
    async with kernel.client(mode=mode, elicitation_callback=answering("allow", delay=2.5)) as c:
        result = await c.call_tool("execute", {"code": "late_marker = 'changed'"})
    assert result.is_error, text_of(result)
    assert "Not approved" in text_of(result)
    assert kernel.run("print(late_marker)")["stdout"].strip() == "untouched"


@pytest.mark.parametrize("mode", ERAS)
async def test_allow_for_this_session_is_remembered_until_approval_is_switched_off(kernel, mode):
    configure(kernel, True)
    calls: list[str] = []
    async with kernel.client(mode=mode, elicitation_callback=answering("allow_session", calls=calls)) as c:
        for i in range(3):
            result = await c.call_tool("execute", {"code": f"{i}"})
            assert not result.is_error, text_of(result)
        assert len(calls) == 1
        configure(kernel, False)
        configure(kernel, True)  # switching approval off and on forgets the session allowance
        await c.call_tool("execute", {"code": "3"})
        assert len(calls) == 2


async def test_read_only_tools_never_ask(kernel):
    configure(kernel, True)
    calls: list[str] = []
    async with kernel.client(elicitation_callback=answering("deny", calls=calls)) as c:
        result = await c.call_tool("list_variables", {})
        status = await c.call_tool("kernel_status", {})
        stop_own = await c.call_tool("interrupt", {"target": "agent"})  # stopping your own call: no prompt
    assert not result.is_error and not status.is_error and not stop_own.is_error
    assert calls == []
    assert status.structured_content["approval"] == "on"


@pytest.mark.parametrize("mode", ERAS)
async def test_a_client_that_cannot_be_asked_is_denied_with_the_way_out(kernel, mode):
    configure(kernel, True)
    async with kernel.client(mode=mode) as c:  # no elicitation callback: no capability declared
        result = await c.call_tool("execute", {"code": "1"})
    assert result.is_error
    assert "cannot ask the user" in text_of(result) and "%mcp approve off" in text_of(result)


async def test_approval_off_runs_without_asking(kernel):
    configure(kernel, False)
    calls: list[str] = []
    async with kernel.client(elicitation_callback=answering("deny", calls=calls)) as c:
        result = await c.call_tool("execute", {"code": "print(2)"})
    assert not result.is_error and calls == []


NOTEBOOK_ASKER = """
import asyncio, ipymcp._state as _s
asked = []
async def _asker(request, timeout):
    asked.append((request.tool, request.detail))
    if 'slow' in request.detail:
        await asyncio.sleep(timeout + 5)
    return {answer!r}
_s.runtime.policy.set_notebook_asker(_asker)
"""


@pytest.mark.parametrize("answer", ["allow", "deny"])
async def test_the_notebook_asker_decides_when_a_frontend_registered_one(kernel, answer):
    """The in-notebook prompt is pluggable: a registered asker wins over elicitation."""
    configure(kernel, True)
    kernel.run(NOTEBOOK_ASKER.format(answer=answer))
    try:
        calls: list[str] = []
        async with kernel.client(elicitation_callback=answering("allow", calls=calls)) as c:
            result = await c.call_tool("execute", {"code": "print('from agent')"})
        assert calls == []  # the client was not asked
        assert result.is_error == (answer == "deny"), text_of(result)
        assert "print('from agent')" in kernel.run("print(asked[-1][1])")["stdout"]
    finally:
        kernel.run("_s.runtime.policy.set_notebook_asker(None)")


async def test_the_notebook_asker_times_out_to_deny(kernel):
    configure(kernel, True, timeout=1)
    kernel.run(NOTEBOOK_ASKER.format(answer="allow"))
    try:
        async with kernel.client() as c:
            result = await c.call_tool("execute", {"code": "'slow'"})
        assert result.is_error and "no answer in the notebook" in text_of(result)
    finally:
        kernel.run("_s.runtime.policy.set_notebook_asker(None)")


def test_approve_on_says_where_the_user_will_be_asked(kernel):
    out = kernel.run("%mcp approve on")["stdout"]
    assert "asked by the agent's MCP client" in out and "no notebook view with the ipymcp extension" in out
    kernel.run(NOTEBOOK_ASKER.format(answer="allow"))
    try:
        assert "asked in this notebook" in kernel.run("%mcp approve on")["stdout"]
    finally:
        kernel.run("_s.runtime.policy.set_notebook_asker(None)")
