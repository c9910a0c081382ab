"""The audit log: a JSON line per tool call, private, rotated, token-free, readable with %mcp log."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from mcp import types


def audit_path(kernel) -> Path:
    out = kernel.run(
        "import ipymcp._state as _s; _s.runtime.policy.audit.flush(); print(_s.runtime.policy.audit.path); del _s"
    )["stdout"]
    return Path(out.strip())


def entries(kernel) -> list[dict]:
    path = audit_path(kernel)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def calls(kernel) -> list[dict]:
    return [e for e in entries(kernel) if "tool" in e]


@pytest.fixture(autouse=True)
def defaults(kernel):
    yield
    kernel.run("%mcp permissions execute")
    kernel.run("%mcp approve off")


async def test_every_tool_call_leaves_one_line_with_time_client_arguments_duration_and_outcome(kernel):
    specs = json.loads(
        kernel.run(
            "import json, ipymcp._state as _s; print(json.dumps(sorted(_s.runtime.toolbox.specs))); del _s"
        )["stdout"]
    )
    kernel.run("%mcp permissions full")
    before = len(calls(kernel))
    async with kernel.client(cache=None) as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
        for name in specs:
            # Tools with required arguments get {} and fail validation (nothing runs); the others
            # run with their defaults (status, listings, interrupt of no agent call, save): one line each.
            required = set(tools[name].input_schema.get("required", []))
            args = {} if required else {"__unknown__": 1}
            await c.call_tool(name, args)
    new = calls(kernel)[before:]
    assert [e["tool"] for e in new] == specs
    for entry in new:
        assert entry["time"] and entry["client"]["name"].startswith("mcp")
        assert isinstance(entry["duration_ms"], float)
        assert entry["outcome"] in ("ok", "error")
        if entry["outcome"] == "error":
            assert entry["message"]


async def test_code_is_kept_in_full_file_contents_as_size_and_hash(kernel, tmp_path):
    code = "x_audit = 1\n" + "y = 2  # padding\n" * 200
    async with kernel.client() as c:
        await c.call_tool("execute", {"code": code})
        tools = {t.name for t in (await c.list_tools()).tools}
        if "write_file" in tools:
            await c.call_tool("write_file", {"path": "audit-demo.txt", "content": "secret data " * 1000})
    log = calls(kernel)
    execute = [e for e in log if e["tool"] == "execute" and e["arguments"].get("code") == code]
    assert execute and execute[-1]["outcome"] == "ok"
    if "write_file" in tools:
        write = [e for e in log if e["tool"] == "write_file"][-1]
        assert write["arguments"]["content"]["size"] == 12_000
        assert len(write["arguments"]["content"]["sha256"]) == 16
        assert "secret data" not in json.dumps(write)


async def test_refusals_and_invalid_arguments_are_logged_too(kernel):
    kernel.run("%mcp permissions read")
    async with kernel.client(cache=None) as c:
        await c.call_tool("execute", {"code": "1"})
    kernel.run("%mcp permissions execute")
    async with kernel.client(cache=None) as c:
        await c.call_tool("list_variables", {"limit": "many"})
        await c.call_tool("no_such_tool", {})
    last = calls(kernel)[-3:]
    assert [e["tool"] for e in last] == ["execute", "list_variables", "no_such_tool"]
    assert all(e["outcome"] == "error" for e in last)
    assert "permission level" in last[0]["message"]


async def test_approval_decisions_are_recorded(kernel):
    async def deny(context, params):  # noqa: ANN001
        return types.ElicitResult(action="accept", content={"decision": "deny"})

    kernel.run("%mcp approve on")
    async with kernel.client(mode="legacy", elicitation_callback=deny) as c:
        await c.call_tool("execute", {"code": "print('nope')"})
    kernel.run("%mcp approve off")
    entry = [e for e in calls(kernel) if e["tool"] == "execute"][-1]
    assert entry["approval"] == "denied by the user (client)"
    assert entry["outcome"] == "error"


async def test_the_token_never_appears_in_the_log(kernel):
    token = kernel.token
    async with kernel.client() as c:
        await c.call_tool("execute", {"code": f"leak = {token!r}"})
    text = audit_path(kernel).read_text()
    assert token not in text
    assert "[token]" in text


def test_log_file_is_private(kernel):
    path = audit_path(kernel)
    assert path.exists()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.parent == Path(os.environ["JUPYTER_RUNTIME_DIR"]) / "ipymcp"


async def test_log_rotates_by_size(kernel):
    kernel.run("import ipymcp._state as _s; _s.runtime.policy.audit.max_bytes = 20_000; del _s")
    try:
        async with kernel.client() as c:
            for _ in range(40):
                await c.call_tool("execute", {"code": "pass  # " + "r" * 1000})
        path = audit_path(kernel)
        backup = path.with_name(path.name + ".1")
        assert backup.exists() and path.stat().st_size <= 20_000
        assert stat.S_IMODE(os.stat(backup).st_mode) == 0o600
    finally:
        kernel.run("import ipymcp._state as _s; _s.runtime.policy.audit.max_bytes = 5_000_000; del _s")


async def test_mcp_log_renders_recent_calls_as_a_table(kernel):
    async with kernel.client() as c:
        await c.call_tool("inspect_variable", {"name": "no_such_variable_here"})
        await c.call_tool("kernel_status", {})
    out = kernel.run("%mcp log 2")["outputs"]
    markdown = "".join(
        m["content"]["data"].get("text/markdown", "") for m in out if m["msg_type"] == "display_data"
    )
    assert "| time | client | tool |" in markdown
    assert "`inspect_variable`" in markdown and "`kernel_status`" in markdown
    assert markdown.count("\n| ") == 3  # header + 2 rows (the separator starts with |---)
    assert "error" in markdown and "ok" in markdown


def test_log_table_keeps_agent_chosen_text_inside_code_spans():
    import re

    from ipymcp.policy.audit import render_table

    hostile = "`<img src=x onerror=alert(1)>`"
    table = render_table(
        [
            {
                "time": "2026-11-25T12:00:00.000",
                "client": {"name": hostile},
                "tool": hostile * 50,
                "arguments": {"code": hostile},
                "duration_ms": 3,
                "outcome": "error",
                "message": hostile,
            }
        ]
    )
    outside_spans = re.sub(r"`[^`\n]*`", "", table)
    assert "<" not in outside_spans and ">" not in outside_spans, outside_spans
    assert max(len(line) for line in table.splitlines()) < 1000
