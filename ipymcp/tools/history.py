"""History tools: get_history, get_output; resources ipymcp://history, ipymcp://history/{execution_count}
and ipymcp://variables/{name}."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.types import CallToolResult, TextContent
from pydantic import Field

from .. import pages
from ..kernel.history import HistoryError, HistoryStore
from .base import Services, ToolSet
from .kernel import inspect_path
from .results import HistoryResult, OutputPage

tools = ToolSet()


def _store(services: Services) -> HistoryStore:
    if services.history is None:
        raise ToolError("the history is not being captured (ipymcp is not running); run %load_ext ipymcp")
    return services.history


@tools.tool(level="read", read_only=True, title="What the user ran and saw")
def get_history(
    services: Services,
    last: Annotated[int, Field(description="how many of the most recent entries", ge=1, le=500)] = 10,
    include_outputs: Annotated[bool, Field(description="include outputs (text and images)")] = True,
    source: Annotated[
        Literal["all", "user", "agent"],
        Field(description="user: the user's cells; agent: your execute calls"),
    ] = "all",
) -> Annotated[CallToolResult, HistoryResult]:
    """The most recent cells run in this kernel, newest last, with what they printed and displayed.

    Each entry: its id (the execution count [In N], or "a12" for your own execute calls), who
    ran it (user/agent), the code, status (ok / error / interrupted / running), duration, and
    outputs as the notebook showed them: text, errors with tracebacks, tables as text, plots as
    images (up to a few per call). Long outputs are cut in the middle and images over the cap
    are left out; each cut says how to get the rest: get_output(id). Use it first to see what
    the user just did or why a cell failed. Cells run before ipymcp loaded have their code
    only ("outputs not captured").
    """
    store = _store(services)
    entries = store.entries(last, source)
    facts: HistoryResult = {"ids": [e.id for e in entries], "store": store.stats()}
    if not entries:
        text = [TextContent(type="text", text="[no cells have run yet]")]
        return CallToolResult(content=text, structured_content=dict(facts))
    blocks = pages.history_blocks(store, entries, include_outputs, services.config)
    return CallToolResult(content=blocks, structured_content=dict(facts), meta=dict(facts))


@tools.tool(level="read", read_only=True, title="One cell's outputs in full")
def get_output(
    services: Services,
    execution_count: Annotated[
        int | str, Field(description='the cell: its execution count (12), or "a12" for an agent run')
    ],
    offset: Annotated[int, Field(description="first character of the text to return", ge=0)] = 0,
    limit: Annotated[
        int | None,
        Field(description="characters of text to return (default: the server's text budget)", ge=100),
    ] = None,
    image_offset: Annotated[int, Field(description="first image to return (0-based)", ge=0)] = 0,
) -> Annotated[CallToolResult, OutputPage]:
    """All the outputs of one cell: its text paginated by characters, and every image it displayed.

    The text is the cell's outputs joined in order (streams, results, tables as text, errors
    with tracebacks; each image is a one-line placeholder "[image N: image/png]"). It returns
    characters offset..offset+limit and says the offset of the next page. Images come with the
    first page (offset=0), up to a per-call count; image_offset pages through the rest.
    Fails with a clear message if the cell never ran or was evicted from the history (its
    byte budget keeps the most recent cells).
    """
    store = _store(services)
    try:
        entry = store.find(execution_count)
    except HistoryError as exc:
        raise ToolError(str(exc)) from None
    page = limit or services.config.max_output_chars
    return pages.output_page(store, entry, offset, page, image_offset, services.config)


def register_resources(mcp: MCPServer, services: Services) -> None:
    """The history and variable resources (resource reads pass the same request pipeline)."""

    @mcp.resource(
        "ipymcp://history/{execution_count}",
        name="history-cell",
        title="A cell of the notebook's history",
        description="One cell run in the kernel (execution count, or a12 for an agent run) as JSON: "
        "code, status, duration and its outputs as nbformat-like dicts (images base64).",
        mime_type="application/json",
    )
    def history_cell(execution_count: str) -> str:
        try:
            store = _store(services)
            entry = store.find(execution_count)
        except (HistoryError, ToolError) as exc:
            raise ResourceError(str(exc)) from None
        return json.dumps(pages.entry_json(store, entry, with_outputs=True), default=str)

    @mcp.resource(
        "ipymcp://history",
        name="history",
        title="The notebook's recent history",
        description="The last 50 cells run in the kernel (ids, source, status, code head) as JSON; "
        "read ipymcp://history/{execution_count} for one cell with its outputs.",
        mime_type="application/json",
    )
    def history_index() -> str:
        store = _store(services)
        return json.dumps([pages.entry_json(store, e, with_outputs=False) for e in store.entries(50)], default=str)

    @mcp.resource(
        "ipymcp://variables/{name}",
        name="variable",
        title="A variable of the notebook",
        description="A bounded, type-aware preview of one variable, as JSON: the same as inspect_variable, "
        "under the same rules (nothing of the notebook's code runs; a property is described, not read).",
        mime_type="application/json",
    )
    async def variable(name: str) -> str:
        try:
            info = await inspect_path(services, name)
        except ToolError as exc:
            raise ResourceError(str(exc)) from None
        return json.dumps(info, default=str)
