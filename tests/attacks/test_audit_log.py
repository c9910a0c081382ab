"""The audit log cannot be flushed away, and it names the peer the socket saw.

The log is what the user reads after the fact; an agent that can push earlier lines out of it
(with three 3.9 MB argument names, at the `read` level) or choose the address it is logged under
(`X-Forwarded-For`) can hide what it did. Every field is bounded per line (LINE_MAX_BYTES), the
log rotates through FILES files within `audit_max_bytes`, and the retention that follows is
stated in the README and checked here.
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from pathlib import Path

import httpx2
import pytest
from conftest import mcp_client
from mcp.types import Implementation

from ipymcp.policy.audit import FILES, LINE_MAX_BYTES, AuditLog, guaranteed_calls

HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def audit_files(kernel) -> list[Path]:
    out = kernel.run(
        "import ipymcp._state as _s; _s.runtime.policy.audit.flush(); print(_s.runtime.policy.audit.path); del _s"
    )["stdout"]
    path = Path(out.strip())
    return [p for p in [path, *(path.with_name(f"{path.name}.{i}") for i in range(1, 50))] if p.exists()]


def all_lines(kernel) -> list[str]:
    lines: list[str] = []
    for path in reversed(audit_files(kernel)):  # oldest file first
        lines += path.read_text(encoding="utf-8").splitlines()
    return lines


@pytest.fixture(autouse=True)
def back_to_execute(kernel):
    yield
    kernel.run("%mcp permissions execute")


async def test_huge_argument_names_cannot_push_earlier_calls_out_of_the_log(kernel):
    marker = f"marker_{uuid.uuid4().hex}"
    kernel.run("%mcp permissions read")
    async with kernel.client() as agent:
        await agent.call_tool("inspect_variable", {"name": marker})
        for i in range(3):
            await agent.call_tool("kernel_status", {str(i) + "k" * 3_900_000: 1})
    lines = all_lines(kernel)
    assert any(marker in line for line in lines), "the call before the flood was rotated out"
    assert max(len(line.encode()) + 1 for line in lines) <= LINE_MAX_BYTES
    flood = [json.loads(line) for line in lines[-3:]]
    for i, entry in enumerate(flood):
        (name,) = entry["arguments"]
        assert name.startswith(f"{i}kkkk") and "sha256" in name and len(name) < 400


async def test_every_field_is_bounded_and_keeps_a_head_and_a_hash(kernel):
    huge = "é\u202e" * 200_000  # multi-byte and a bidi control: bytes, not characters, are what count
    info = Implementation(name="client-" + huge, version="v-" + huge)
    async with mcp_client(kernel.url, kernel.token, client_info=info) as agent:
        await agent.call_tool("no_such_tool_" + "t" * 100_000, {})
        await agent.call_tool("execute", {"code": "# " + huge + "\nx_field_bound = 1"})
        await agent.call_tool("inspect_variable", {"name": "n" * 100_000})
        await agent.call_tool("list_variables", {f"key{i}": "v" * 10_000 for i in range(200)})
    lines = all_lines(kernel)[-4:]
    for line in lines:
        assert len(line.encode()) + 1 <= LINE_MAX_BYTES, len(line.encode())
    tool, execute, inspect, listing = (json.loads(line) for line in lines)
    assert tool["tool"]["head"].startswith("no_such_tool_ttt") and tool["tool"]["size"] > 100_000
    assert len(tool["tool"]["sha256"]) == 16
    assert execute["tool"] == "execute" and execute["client"]["name"]["head"].startswith("client-é")
    code = execute["arguments"]["code"]
    assert code["head"].startswith("# é") and code["size"] > 600_000 and code["sha256"]
    assert len(inspect["arguments"]["name"]["head"]) < 10_000
    assert len(listing["arguments"]) <= 51


async def test_the_peer_is_the_socket_never_x_forwarded_for(kernel):
    marker = f"xff_{uuid.uuid4().hex}"
    async with httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {kernel.token}", "X-Forwarded-For": "6.6.6.6", **HEADERS}
    ) as http:
        init = await http.post(
            kernel.url,
            content=json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "initialize",
                    "params": {
                        "protocolVersion": "2025-11-25",
                        "capabilities": {},
                        "clientInfo": {"name": "forger", "version": "0"},
                    },
                }
            ),
        )
        session = {"Mcp-Session-Id": init.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
        await http.post(kernel.url, headers=session, content=b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call"}
        call["params"] = {"name": "inspect_variable", "arguments": {"name": marker}}
        response = await http.post(kernel.url, headers=session, content=json.dumps(call))
        assert response.status_code == 200
    entry = next(json.loads(line) for line in reversed(all_lines(kernel)) if marker in line)
    assert entry["client"]["peer"].startswith("127.0.0.1:"), entry["client"]
    assert "6.6.6.6" not in json.dumps(entry)


def test_retention_keeps_the_last_calls_within_the_byte_budget(tmp_path):
    budget = 1_000_000
    log = AuditLog(tmp_path / "audit.jsonl", budget)
    keep = guaranteed_calls(budget)
    assert keep >= 100  # the README's statement, at this budget: (FILES - 1) × files' worth of full lines
    # Maximal lines (the attacker's best), then ordinary ones, interleaved with numbered markers.
    big, small = {"code": "x" * 100_000}, {"name": "x" * 500}
    for i in range(3_000):
        log.record({"tool": "execute", "arguments": big if i % 2 else small, "n": i})
    log.close()
    files = sorted(tmp_path.iterdir())
    assert len(files) <= FILES
    assert sum(f.stat().st_size for f in files) <= budget
    assert all(stat.S_IMODE(os.stat(f).st_mode) == 0o600 for f in files)
    reader = AuditLog(tmp_path / "audit.jsonl", budget)
    recent = reader.recent(keep)
    assert [e["n"] for e in recent] == list(range(3_000 - keep, 3_000))


def test_default_retention_is_what_the_readme_states():
    from ipymcp.config import IPyMCP

    budget = IPyMCP().audit_max_bytes
    assert guaranteed_calls(budget) >= 5_000
    assert budget <= 50_000_000
