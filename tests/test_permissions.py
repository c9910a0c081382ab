"""Permission levels: listing, refusal, live changes with tools/list_changed, and where the level shows."""

from __future__ import annotations

import asyncio
import json

import pytest
from conftest import KernelHarness, text_of
from mcp import types

LEVELS = ["read", "edit", "execute", "full"]


def tool_levels(kernel) -> dict[str, str]:
    out = kernel.run(
        "import json, ipymcp._state as _s\n"
        "print(json.dumps({n: s.level for n, s in _s.runtime.toolbox.specs.items()})); del _s"
    )["stdout"]
    return json.loads(out)


def set_level(kernel, level: str) -> None:
    kernel.run(f"%mcp permissions {level}")


@pytest.fixture(autouse=True)
def back_to_default(kernel):
    yield
    set_level(kernel, "execute")


def test_default_level_is_execute_and_every_tool_declares_a_known_level(kernel):
    levels = tool_levels(kernel)
    assert levels and set(levels.values()) <= set(LEVELS)
    assert levels["execute"] == "execute" and levels["list_variables"] == "read"
    status = kernel.run("import ipymcp._state as _s; print(_s.runtime.policy.level); del _s")[
        "stdout"
    ].strip()
    assert status == "execute"


@pytest.mark.parametrize("level", LEVELS)
async def test_tools_above_the_level_are_hidden_and_refused_with_the_level_that_allows_them(kernel, level):
    levels = tool_levels(kernel)
    set_level(kernel, level)
    rank = LEVELS.index(level)
    async with kernel.client(cache=None) as c:
        listed = {t.name for t in (await c.list_tools()).tools}
        allowed = {n for n, lv in levels.items() if LEVELS.index(lv) <= rank}
        assert listed == allowed
        for name, required in levels.items():
            if LEVELS.index(required) <= rank:
                continue
            result = await c.call_tool(name, {})
            assert result.is_error, name
            text = text_of(result)
            assert f"needs the '{required}' permission level" in text and f"at '{level}'" in text
            assert f"%mcp permissions {required}" in text


async def test_refused_call_runs_nothing(kernel):
    kernel.run("perm_marker = 'untouched'")
    set_level(kernel, "read")
    async with kernel.client(cache=None) as c:
        result = await c.call_tool("execute", {"code": "perm_marker = 'changed'"})
    assert result.is_error
    assert kernel.run("print(perm_marker)")["stdout"].strip() == "untouched"


async def test_inserting_a_cell_at_edit_level_may_not_run_it(kernel):
    set_level(kernel, "edit")
    async with kernel.client(cache=None) as c:
        refused = await c.call_tool("insert_cell", {"source": "perm_marker = 'ran'", "execute": True})
        markdown = await c.call_tool("insert_cell", {"source": "# title", "cell_type": "markdown", "execute": True})
    assert refused.is_error
    assert "this insert_cell call (with these arguments; insert_cell itself is 'edit') needs the 'execute'" in text_of(
        refused
    )
    assert "needs the 'execute'" not in text_of(markdown)  # rendering markdown runs nothing


async def test_level_change_notifies_handshake_era_clients(kernel):
    seen: list[str] = []

    async def on_message(message):  # noqa: ANN001
        if isinstance(message, types.ServerNotification) or hasattr(message, "method"):
            seen.append(getattr(message, "method", type(message).__name__))

    async with kernel.client(mode="legacy", message_handler=on_message, cache=None) as c:
        before = {t.name for t in (await c.list_tools()).tools}
        await asyncio.sleep(1.0)  # the GET stream is open (nothing tells the client when)
        await asyncio.to_thread(set_level, kernel, "read")
        for _ in range(50):
            if any("tools/list_changed" in m or "ToolListChanged" in m for m in seen):
                break
            await asyncio.sleep(0.1)
        after = {t.name for t in (await c.list_tools()).tools}
    assert any("tools/list_changed" in m or "ToolListChanged" in m for m in seen), seen
    assert "execute" in before and "execute" not in after


async def test_level_change_notifies_2026_clients_listening(kernel):
    async with kernel.client(cache=None) as c:
        async with c.listen(tools_list_changed=True) as subscription:
            await asyncio.to_thread(set_level, kernel, "edit")
            event = await asyncio.wait_for(subscription.__anext__(), 10)
        assert "ToolsListChanged" in type(event).__name__
        assert "execute" not in {t.name for t in (await c.list_tools()).tools}


async def test_kernel_status_and_mcp_status_show_the_level(kernel):
    set_level(kernel, "edit")
    status = kernel.run("%mcp")["outputs"]
    text = json.dumps([m["content"] for m in status])
    assert "permissions: `edit`" in text
    set_level(kernel, "read")
    async with kernel.client(cache=None) as c:
        result = await c.call_tool("kernel_status", {})
    assert result.structured_content["permissions"] == "read"


def test_unknown_level_is_refused_in_the_magic(kernel):
    out = kernel.run("%mcp permissions root")["stdout"]
    assert "unknown permission level 'root'" in out


async def test_level_from_config_applies_at_load():
    harness = KernelHarness()
    try:
        harness.load_ipymcp("get_ipython().config.IPyMCP.permissions = 'read'")
        async with harness.client(cache=None) as c:
            listed = {t.name for t in (await c.list_tools()).tools}
            result = await c.call_tool("execute", {"code": "1"})
        assert "execute" not in listed and "list_variables" in listed
        assert result.is_error and "%mcp permissions execute" in text_of(result)
    finally:
        harness.shutdown()


async def test_token_rotation_refuses_the_old_token_disconnects_its_sessions_and_updates_the_runtime_file():
    import httpx2
    from conftest import mcp_client, runtime_dir

    harness = KernelHarness()
    try:
        harness.load_ipymcp()
        old = harness.token
        async with mcp_client(harness.url, old, mode="legacy") as c:
            assert not (await c.call_tool("kernel_status", {})).is_error
            assert old not in harness.run("%mcp token --rotate")["stdout"]
            new = json.loads((runtime_dir() / f"kernel-{harness.kernel_id}.json").read_text())["token"]
            assert new and new != old
            with pytest.raises(Exception):  # noqa: B017 - the session is gone and the token is refused
                await c.call_tool("kernel_status", {})
        async with httpx2.AsyncClient() as http:
            response = await http.post(
                harness.url,
                headers={
                    "Authorization": f"Bearer {old}",
                    "Content-Type": "application/json",
                    "Accept": "application/json, text/event-stream",
                },
                content=b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}',
            )
        assert response.status_code == 401
        info = json.loads((runtime_dir() / f"kernel-{harness.kernel_id}.json").read_text())
        assert info["token"] == new
        async with mcp_client(harness.url, new) as c:
            assert not (await c.call_tool("kernel_status", {})).is_error
    finally:
        harness.shutdown()


async def test_handshake_clients_are_told_the_tool_list_can_change(kernel):
    async with kernel.client(mode="legacy") as c:
        assert c.server_capabilities.tools.list_changed is True


async def test_the_guard_adds_nothing_to_the_schemas_a_model_reads(kernel):
    async with kernel.client(cache=None) as c:
        tools = (await c.list_tools()).tools
    assert tools
    for tool in tools:
        assert "ipymcp_" not in json.dumps(tool.input_schema), tool.name
        assert tool.description
    execute = next(t for t in tools if t.name == "execute")
    assert sorted(execute.input_schema["properties"]) == ["code", "mode", "timeout"]
