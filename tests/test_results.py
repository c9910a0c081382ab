"""Every tool's result matches the output schema tools/list shows for it: over HTTP, and through
``ipymcp connect`` (which forwards the kernel's schemas and adds list_notebooks / select_notebook).

Each tool is called on paths that succeed (read_file on text, a notebook, an image, a binary and
an empty file; insert_cell plain, with execute and as a proposal once the view is gone…), and
each result's structuredContent is checked with jsonschema against the listed schema (the SDK
client checks it too, and would raise). A tool listed but never called here fails the test, so
a new tool comes with its call.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonschema
import pytest
from conftest import KernelHarness, status_until, text_of
from test_connect import connect
from test_notebook_protocol import ScriptedView

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


class FullView(ScriptedView):
    """A protocol 2 view that answers every op of the notebook protocol, as the labextension does."""

    def __init__(self, harness: KernelHarness, path: str):
        super().__init__(harness, path, ["x = 1", "print(x)"], protocol=2)

    def _cell(self, index: int) -> dict[str, Any]:
        cell = self.cells[index]
        return {
            **cell,
            "index": index,
            "revision": "r" + cell["id"],
            "execution_count": None,
            "outputs": [],
            "n_outputs": 0,
            "agent": None,
            "active": index == 0,
            "selected": index == 0,
        }

    def _reply(self, request: dict[str, Any]) -> dict[str, Any]:
        op, args = request["op"], request.get("args") or {}
        result: dict[str, Any]
        if op in ("hello", "read_notebook"):
            return super()._reply(request)
        if op == "insert_cell":
            self.cells.append({"id": f"c{len(self.cells)}", "cell_type": args.get("cell_type", "code"), "source": args["source"]})
            result = self._cell(len(self.cells) - 1)
        elif op in ("edit_cell", "delete_cell", "move_cell"):
            result = self._cell(next(i for i, c in enumerate(self.cells) if c["id"] == args["cell_id"]))
        elif op == "execute_cell":
            index = next(i for i, c in enumerate(self.cells) if c["id"] == args["cell_id"])
            output = {"output_type": "stream", "name": "stdout", "text": "1\n"}
            result = {**self._cell(index), "ok": True, "execution_count": 7, "outputs": [output]}
        elif op == "save":
            result = {"path": "work/analysis.ipynb", "dirty": False}
        elif op == "get_active":
            result = {"path": "work/analysis.ipynb", "index": 0, "cell": self._cell(0), "mode": "command", "focused": True}
        elif op == "restart":
            result = {"path": "work/analysis.ipynb", "restarting": True}  # a script: nothing restarts
        else:
            return {"id": request["id"], "ok": False, "error": f"unknown op {op}", "code": "unknown_op"}
        return {"id": request["id"], "ok": True, "result": result}

    def goodbye(self) -> None:
        self._send("comm_close", {"comm_id": self.comm_id, "data": {"reason": "view closed"}})


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Any:
    work = tmp_path_factory.mktemp("results")
    (work / "notes.txt").write_text("one\ntwo\nthree\n")
    (work / "empty.txt").write_text("")
    (work / "dot.png").write_bytes(PNG)
    (work / "blob.bin").write_bytes(b"\x7fELF" + bytes(64))
    notebook = {
        "cells": [{"cell_type": "code", "execution_count": 1, "id": "a", "metadata": {}, "outputs": [], "source": "1"}],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (work / "analysis.ipynb").write_text(json.dumps(notebook))
    harness = KernelHarness(cwd=work, env={"IPYMCP_PERMISSIONS": "full", "JPY_SESSION_NAME": str(work / "analysis.ipynb")})
    harness.load_ipymcp("data = [1, 2, 3]")
    yield harness
    harness.shutdown()


PROCESS = object()  # the id start_process returned


def calls_while_a_view_is_connected() -> list[tuple[str, dict[str, Any]]]:
    return [
        ("execute", {"code": "print('hi'); 6 * 7"}),
        ("execute", {"code": "y = 2", "mode": "cell"}),
        ("list_variables", {}),
        ("inspect_variable", {"name": "data"}),
        ("kernel_status", {}),
        ("interrupt", {"target": "agent"}),
        ("list_files", {}),
        ("read_file", {"path": "notes.txt", "limit": 2}),
        ("read_file", {"path": "empty.txt"}),
        ("read_file", {"path": "dot.png"}),
        ("read_file", {"path": "blob.bin"}),
        ("read_file", {"path": "analysis.ipynb"}),
        ("write_file", {"path": "new.txt", "content": "x"}),
        ("edit_file", {"path": "new.txt", "old": "x", "new": "y"}),
        ("move_path", {"src": "new.txt", "dst": "moved.txt"}),
        ("make_directory", {"path": "folder"}),
        ("delete_path", {"path": "moved.txt"}),
        ("run_command", {"command": "echo hi"}),
        ("start_process", {"command": "cat"}),
        ("write_process", {"id": PROCESS, "input": "echo\n"}),
        ("read_process", {"id": PROCESS, "wait": 0.5}),
        ("list_processes", {}),
        ("stop_process", {"id": PROCESS}),
        ("get_history", {"last": 3}),
        ("get_history", {"last": 3, "source": "agent", "include_outputs": False}),
        ("get_output", {"execution_count": "a1"}),
        ("read_notebook", {}),
        ("insert_cell", {"source": "1 + 1"}),
        ("insert_cell", {"source": "2 + 2", "execute": True}),
        ("edit_cell", {"cell_id": "c0", "source": "x = 2"}),
        ("move_cell", {"cell_id": "c0", "to_index": 1}),
        ("execute_cell", {"cell_id": "c1"}),
        ("get_active_cell", {}),
        ("delete_cell", {"cell_id": "c0"}),
        ("save_notebook", {}),
        ("reset_namespace", {"keep": ["data"]}),
    ]


# Once the view is gone: the saved file, and a proposal instead of an inserted cell.
CALLS_WITHOUT_A_VIEW = [("read_notebook", {}), ("insert_cell", {"source": "print('proposed')"})]


async def check_every_tool(client: Any, calls: list[tuple[str, dict[str, Any]]], view: FullView) -> dict[str, Any]:
    schemas = {tool.name: tool.output_schema for tool in (await client.list_tools()).tools}
    missing = sorted(name for name, schema in schemas.items() if schema is None)
    assert not missing, f"tools without an output schema: {missing}"
    checked: dict[str, Any] = {}

    async def check(name: str, arguments: dict[str, Any]) -> None:
        arguments = {k: checked["start_process"]["id"] if v is PROCESS else v for k, v in arguments.items()}
        result = await client.call_tool(name, arguments)  # the SDK client validates it too
        assert not result.is_error, (name, arguments, text_of(result))
        jsonschema.validate(result.structured_content, schemas[name])
        checked[name] = result.structured_content

    for name, arguments in calls:
        await check(name, arguments)
    view.goodbye()
    await status_until(client, lambda s: not s["frontend"]["views"])
    for name, arguments in CALLS_WITHOUT_A_VIEW:
        await check(name, arguments)
    return {"schemas": schemas, "checked": checked}


async def test_every_tool_result_matches_its_output_schema(kernel: KernelHarness) -> None:
    view = FullView(kernel, "work/analysis.ipynb")
    try:
        async with kernel.client() as client:
            seen = await check_every_tool(client, calls_while_a_view_is_connected(), view)
        restart_view = FullView(kernel, "work/analysis.ipynb")
        try:
            async with kernel.client() as client:
                await status_until(client, lambda s: len(s["frontend"]["views"]) == 1)
                result = await client.call_tool("restart_kernel", {})
                assert not result.is_error, text_of(result)
                jsonschema.validate(result.structured_content, seen["schemas"]["restart_kernel"])
                assert result.structured_content["state"] == "restarting"
                seen["checked"]["restart_kernel"] = result.structured_content
        finally:
            restart_view.close()
    finally:
        view.close()
    assert set(seen["checked"]) == set(seen["schemas"]), set(seen["schemas"]) - set(seen["checked"])
    assert not seen["checked"]["insert_cell"]["inserted"]  # the last one: a proposal
    assert seen["checked"]["read_notebook"]["live"] is False
    assert seen["checked"]["read_file"]["kind"] == "notebook"


async def test_every_tool_result_matches_its_output_schema_through_ipymcp_connect(kernel: KernelHarness) -> None:
    view = FullView(kernel, "work/analysis.ipynb")
    try:
        async with connect("--kernel-id", kernel.kernel_id) as bridge:
            calls = [
                ("list_notebooks", {}),
                ("select_notebook", {"kernel_id": kernel.kernel_id}),
                *calls_while_a_view_is_connected(),
            ]
            seen = await check_every_tool(bridge.client, calls, view)
    finally:
        view.close()
    # restart_kernel through connect (its "back" state) is checked in test_restart.py.
    assert set(seen["checked"]) == set(seen["schemas"]) - {"restart_kernel"}
    listed = seen["checked"]["list_notebooks"]["notebooks"]
    assert [row["kernel_id"] for row in listed if row["selected"]] == [kernel.kernel_id]


async def test_the_output_schemas_leave_tools_list_small(kernel: KernelHarness) -> None:
    """A schema is for programs, the text for the agent: tools/list at level full was 33,342 bytes
    before the schemas (main at 538540d) and may grow by at most a fifth."""
    async with kernel.client() as client:
        tools = (await client.list_tools()).tools
    listed = json.dumps(
        {"tools": [t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in tools]}, separators=(",", ":")
    )
    assert len(listed) <= 33_342 * 1.2, len(listed)
