"""Attacks on the request pipeline: every request — tool, resource read, completion — passes the
same steps in the same order: level → limits → approval → run → audit.

One kernel for the module, loaded with room for a single call in progress
(``c.IPyMCP.max_concurrent_calls = 1``), so "the limit is full" is one held call away. A call
holds the slot by running agent code that waits for a file the test writes; the tests wait for
files the kernel writes, never for a guessed time.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import KernelHarness, text_of
from mcp import types
from mcp.shared.exceptions import MCPError
from mcp.types import ResourceTemplateReference

# Agent code that holds the only slot until the test writes the release file.
HOLD = """\
import pathlib as _p, time as _t
_p.Path({held!r}).touch()
_t0 = _t.time()
while not _p.Path({release!r}).exists() and _t.time() - _t0 < 60:
    _t.sleep(0.02)
"""

# The in-notebook approval prompt, as the labextension plugs it in (Policy.set_notebook_asker):
# records every question; answers at once, or, for code mentioning 'wait_for_grant', once the
# test writes the file 'grant'.
ASKER = """
import asyncio, pathlib, ipymcp._state as _s
asked = []
async def _asker(request, timeout):
    asked.append(request.detail)
    if 'wait_for_grant' in request.detail:
        pathlib.Path('asking').touch()
        while not pathlib.Path('grant').exists():
            await asyncio.sleep(0.02)
    return 'allow'
_s.runtime.policy.set_notebook_asker(_asker)
"""


@pytest.fixture(scope="module")
def narrow():
    harness = KernelHarness()
    harness.load_ipymcp("get_ipython().config.IPyMCP.max_concurrent_calls = 1")
    harness.run("precious = {'user': 'data'}")
    yield harness
    harness.shutdown()


@pytest.fixture(autouse=True)
def defaults(narrow):
    yield
    narrow.run("import ipymcp._state as _s; _s.runtime.policy.set_notebook_asker(None); del _s")
    narrow.run("%mcp approve off")
    narrow.run("%mcp permissions execute")
    for name in ("asking", "grant"):
        (narrow.cwd / name).unlink(missing_ok=True)


async def wait_for_file(path: Path, task: asyncio.Future | None = None, timeout: float = 30) -> None:
    async def appeared() -> None:
        while not path.exists():
            if task is not None and task.done():
                raise AssertionError(f"{path.name} never appeared; the call ended: {task.result()}")
            await asyncio.sleep(0.02)

    await asyncio.wait_for(appeared(), timeout)


@asynccontextmanager
async def slot_held(client: Any, kernel: KernelHarness, tag: str):
    """An agent call that holds the only slot while the block runs."""
    held, release = kernel.cwd / f"held-{tag}", kernel.cwd / f"release-{tag}"
    task = asyncio.ensure_future(
        client.call_tool("execute", {"code": HOLD.format(held=held.name, release=release.name)})
    )
    await wait_for_file(held, task)
    try:
        yield
    finally:
        release.touch()
        result = await task
        assert not result.is_error, text_of(result)


def audit_entries(kernel: KernelHarness) -> list[dict[str, Any]]:
    out = kernel.run(
        "import ipymcp._state as _s; _s.runtime.policy.audit.flush(); print(_s.runtime.policy.audit.path); del _s"
    )["stdout"]
    path = Path(out.strip())
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def asked(kernel: KernelHarness) -> list[str]:
    return json.loads(kernel.run("import json; print(json.dumps(asked))")["stdout"])


# -- order: refusals come before the user is asked --------------------------------------------------
async def test_a_call_over_the_concurrency_limit_is_refused_before_the_user_is_asked(narrow):
    narrow.run(ASKER)
    narrow.run("%mcp approve on")
    async with narrow.client() as c, slot_held(c, narrow, "limit"):
        refused = await c.call_tool("execute", {"code": "precious['user'] = 'overwritten'"})
    assert refused.is_error and "Too many calls in progress" in text_of(refused)
    questions = asked(narrow)
    assert len(questions) == 1 and "held-limit" in questions[0]  # only the call that ran was asked
    assert narrow.run("print(precious['user'])")["stdout"].strip() == "data"


async def test_a_call_above_the_level_is_refused_before_the_user_is_asked(narrow):
    narrow.run(ASKER)
    narrow.run("%mcp approve on")
    narrow.run("%mcp permissions edit")
    async with narrow.client(cache=None) as c:
        # Inserting is an edit; running the new cell needs 'execute': refused, and nobody asked.
        refused = await c.call_tool("insert_cell", {"source": "precious.clear()", "execute": True})
    assert refused.is_error
    assert "needs the 'execute' permission level" in text_of(refused) and "insert_cell" in text_of(refused)
    assert asked(narrow) == []


async def test_a_pending_approval_holds_no_slot_and_the_limit_is_checked_again_once_granted(narrow):
    narrow.run(ASKER)
    narrow.run("%mcp approve on")
    async with narrow.client() as c:
        pending = asyncio.ensure_future(c.call_tool("execute", {"code": "wait_for_grant = 'ran'"}))
        await wait_for_file(narrow.cwd / "asking", pending)
        # The only slot is free while the user thinks: other calls run.
        listing = await c.call_tool("list_variables", {})
        assert not listing.is_error, text_of(listing)
        async with slot_held(c, narrow, "granted"):
            (narrow.cwd / "grant").touch()  # the user allows while another call holds the slot
            result = await pending
        assert result.is_error and "Too many calls in progress" in text_of(result)
    assert "wait_for_grant" not in narrow.run("print(sorted(globals()))")["stdout"]


# -- resources and completions pass the same steps ------------------------------------------------
async def test_resource_reads_and_completions_are_refused_when_the_limit_is_full(narrow):
    async with narrow.client(cache=None) as c, slot_held(c, narrow, "resources"):
        with pytest.raises(MCPError, match="Too many calls in progress"):
            await c.read_resource("ipymcp://variables/precious", cache_mode="bypass")
        with pytest.raises(MCPError, match="Too many calls in progress"):
            await c.complete(
                ResourceTemplateReference(type="ref/resource", uri="ipymcp://variables/{name}"),
                {"name": "name", "value": "pre"},
            )


async def test_resource_reads_and_completions_are_paced_while_a_user_cell_runs(narrow):
    def delayed() -> float:
        return float(
            narrow.run("import ipymcp._state as _s; print(_s.runtime.policy.pacer.delayed_s); del _s")["stdout"]
        )

    busy = "import pathlib, time\npathlib.Path({name!r}).touch()\nt0 = time.time()\nwhile time.time() - t0 < 2: pass"
    reference = ResourceTemplateReference(type="ref/resource", uri="ipymcp://variables/{name}")
    requests = {
        "resources": lambda c: c.read_resource("ipymcp://variables/precious", cache_mode="bypass"),
        "completions": lambda c: c.complete(reference, {"name": "name", "value": "pre"}),
    }
    async with narrow.client(cache=None) as c:
        for kind, request in requests.items():
            before = delayed()
            msg = narrow.send(busy.format(name=f"busy-{kind}"))
            await wait_for_file(narrow.cwd / f"busy-{kind}")
            done = asyncio.ensure_future(asyncio.to_thread(narrow.wait_idle, msg))
            while not done.done():
                await request(c)
            await done
            assert delayed() > before, f"{kind} were not paced while the user's cell ran"


async def test_resource_reads_and_completions_are_audited_like_tools(narrow):
    reference = ResourceTemplateReference(type="ref/resource", uri="ipymcp://variables/{name}")
    before = len(audit_entries(narrow))
    async with narrow.client(cache=None) as c:
        await c.read_resource("ipymcp://variables/precious", cache_mode="bypass")
        with pytest.raises(MCPError):
            await c.read_resource("ipymcp://variables/no_such_variable", cache_mode="bypass")
        await c.complete(reference, {"name": "name", "value": "pre"})
    new = [e for e in audit_entries(narrow)[before:] if "tool" in e]
    assert [e["tool"] for e in new] == ["resources/read", "resources/read", "completion/complete"]
    assert new[0]["arguments"]["uri"] == "ipymcp://variables/precious" and new[0]["outcome"] == "ok"
    assert new[1]["outcome"] == "error" and "no_such_variable" in new[1]["message"]
    assert new[2]["outcome"] == "ok" and new[2]["arguments"]["argument"]["value"] == "pre"
    for entry in new:
        assert entry["client"]["name"].startswith("mcp") and isinstance(entry["duration_ms"], float)


async def test_an_input_required_round_trip_is_one_audited_call(narrow):
    """2026-07-28: the client asks the user between two requests; the log has one line for the call."""

    async def allow(context, params):  # noqa: ANN001, ANN202
        return types.ElicitResult(action="accept", content={"decision": "allow"})

    narrow.run("%mcp approve on")
    code = "round_trip_marker = 'ran'"
    async with narrow.client(mode="auto", elicitation_callback=allow) as c:
        result = await c.call_tool("execute", {"code": code})
    assert not result.is_error, text_of(result)
    lines = [e for e in audit_entries(narrow) if e.get("arguments", {}).get("code") == code]
    assert len(lines) == 1, lines
    assert lines[0]["outcome"] == "ok" and lines[0]["approval"] == "allowed by the user (client)"
    assert lines[0]["rounds"] == 2


async def test_a_round_trip_the_client_abandons_is_still_logged_when_the_server_stops(fresh_kernel):
    async def never_answers(context, params):  # noqa: ANN001, ANN202
        await asyncio.Event().wait()

    fresh_kernel.load_ipymcp("get_ipython().config.IPyMCP.approval = True")
    path = Path(
        fresh_kernel.run("import ipymcp._state as _s; print(_s.runtime.policy.audit.path); del _s")["stdout"].strip()
    )
    code = "abandoned_marker = 1"
    async with fresh_kernel.client(mode="auto", elicitation_callback=never_answers) as c:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(c.call_tool("execute", {"code": code}), 5)
    fresh_kernel.run("%mcp stop")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    mine = [e for e in lines if e.get("arguments", {}).get("code") == code]
    assert len(mine) == 1 and mine[0]["outcome"] == "error" and "never came back" in mine[0]["message"]
