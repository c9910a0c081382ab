"""History tools: get_history, get_output; resources ipymcp://history/{execution_count} and
ipymcp://variables/{name}."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any, Literal

from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.types import CallToolResult, TextContent
from pydantic import Field

from ..kernel.history import CellRecord, EarlierInput, HistoryError, HistoryStore
from ..outputs import (
    IMAGE_TYPES,
    NOTE,
    Budget,
    ImageTally,
    flat_outputs,
    image_content,
    note,
    output_text,
    output_widget_block,
    shape_outputs,
)
from .kernel import inspect_path

if TYPE_CHECKING:
    from .._runtime import Runtime
    from ..server.app import Toolbox

_CODE_CHARS = 4_000
_MIN_SHARE = 1_000

Entry = CellRecord | EarlierInput


def register(toolbox: Toolbox, runtime: Runtime) -> None:
    config = runtime.config

    def store() -> HistoryStore:
        if runtime.history is None:
            raise ToolError("the history is not being captured (ipymcp is not running); run %load_ext ipymcp")
        return runtime.history

    @toolbox.tool(level="read", read_only=True, title="What the user ran and saw")
    def get_history(
        last: Annotated[int, Field(description="how many of the most recent entries", ge=1, le=500)] = 10,
        include_outputs: Annotated[bool, Field(description="include outputs (text and images)")] = True,
        source: Annotated[
            Literal["all", "user", "agent"],
            Field(description="user: the user's cells; agent: your execute calls"),
        ] = "all",
    ) -> CallToolResult:
        """The most recent cells run in this kernel, newest last, with what they printed and displayed.

        Each entry: its id (the execution count [In N], or "a12" for your own execute calls), who
        ran it (user/agent), the code, status (ok / error / interrupted / running), duration, and
        outputs as the notebook showed them: text, errors with tracebacks, tables as text, plots as
        images (up to a few per call). Long outputs are cut in the middle and images over the cap
        are left out; each cut says how to get the rest: get_output(id). Use it first to see what
        the user just did or why a cell failed. Cells run before ipymcp loaded have their code
        only ("outputs not captured").
        """
        entries = store().entries(last, source)
        if not entries:
            return CallToolResult(content=[TextContent(type="text", text="[no cells have run yet]")])
        blocks = _history_blocks(store(), entries, include_outputs, config)
        return CallToolResult(content=blocks, meta={"ids": [e.id for e in entries], "store": store().stats()})

    @toolbox.tool(level="read", read_only=True, title="One cell's outputs in full")
    def get_output(
        execution_count: Annotated[
            int | str, Field(description='the cell: its execution count (12), or "a12" for an agent run')
        ],
        offset: Annotated[int, Field(description="first character of the text to return", ge=0)] = 0,
        limit: Annotated[
            int | None,
            Field(description="characters of text to return (default: the server's text budget)", ge=100),
        ] = None,
        image_offset: Annotated[int, Field(description="first image to return (0-based)", ge=0)] = 0,
    ) -> CallToolResult:
        """All the outputs of one cell: its text paginated by characters, and every image it displayed.

        The text is the cell's outputs joined in order (streams, results, tables as text, errors
        with tracebacks; each image is a one-line placeholder "[image N: image/png]"). It returns
        characters offset..offset+limit and says the offset of the next page. Images come with the
        first page (offset=0), up to a per-call count; image_offset pages through the rest.
        Fails with a clear message if the cell never ran or was evicted from the history (its
        byte budget keeps the most recent cells).
        """
        try:
            entry = store().find(execution_count)
        except HistoryError as exc:
            raise ToolError(str(exc)) from None
        page = limit or config.max_output_chars
        return _output_page(store(), entry, offset, page, image_offset, config)

    mcp = toolbox.mcp

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
            entry = store().find(execution_count)
        except (HistoryError, ToolError) as exc:
            raise ResourceError(str(exc)) from None
        return json.dumps(_entry_json(store(), entry, with_outputs=True), default=str)

    @mcp.resource(
        "ipymcp://history",
        name="history",
        title="The notebook's recent history",
        description="The last 50 cells run in the kernel (ids, source, status, code head) as JSON; "
        "read ipymcp://history/{execution_count} for one cell with its outputs.",
        mime_type="application/json",
    )
    def history_index() -> str:
        entries = store().entries(50)
        return json.dumps([_entry_json(store(), e, with_outputs=False) for e in entries], default=str)

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
            info = await inspect_path(runtime, name)
        except ToolError as exc:
            raise ResourceError(str(exc)) from None
        return json.dumps(info, default=str)


# -- get_history ---------------------------------------------------------------------------------


def _history_blocks(
    store: HistoryStore, entries: list[Entry], include_outputs: bool, config: Any
) -> list[Any]:
    outputs = {id(e): _cell_outputs(store, e) if isinstance(e, CellRecord) else [] for e in entries}
    shares = _fair_shares(
        [sum(len(output_text(o)) for o in outputs[id(e)]) for e in entries], config.max_output_chars
    )
    tally = ImageTally()
    shaped: dict[int, list[Any]] = {}
    # Newest first, so the most recent cells get the images when the cap is reached.
    for entry, share in reversed(list(zip(entries, shares, strict=True))):
        if not include_outputs or not isinstance(entry, CellRecord):
            continue
        ref = _call_ref(entry.id)
        budget = Budget(
            max_chars=max(_MIN_SHARE, share),
            max_images=config.max_images,
            max_image_bytes=config.max_image_bytes,
            max_image_pixels=config.max_image_pixels,
            fetch_hint=f"get_output({ref}) returns all of it in pages",
            image_hint=f"get_output({ref}) returns every image of the cell",
        )
        shaped[id(entry)] = shape_outputs(outputs[id(entry)], budget, tally)
    blocks: list[Any] = []
    for entry in entries:
        text = _entry_header(entry) + "\n" + _code_text(entry.code)
        if isinstance(entry, EarlierInput):
            text += "\n[outputs not captured: this cell ran before ipymcp was loaded]"
            if entry.result_text:
                text += f"\n[its result, as text]\n{_cut(entry.result_text, 2_000)}"
        elif not include_outputs:
            text += "\n" + _outputs_summary(outputs[id(entry)], entry.id)
        blocks.append(TextContent(type="text", text=text))
        if include_outputs and isinstance(entry, CellRecord):
            if shaped[id(entry)]:
                blocks.extend(shaped[id(entry)])
            elif entry.status != "running":
                blocks.append(TextContent(type="text", text="[no output]"))
    return blocks


def _cell_outputs(store: HistoryStore, cell: CellRecord) -> list[dict[str, Any]]:
    """A cell's outputs in reading order, after a note for each Output widget its output went to."""
    return _widget_write_notes(store, cell) + flat_outputs(store.outputs_of(cell))


def _widget_write_notes(store: HistoryStore, cell: CellRecord) -> list[dict[str, Any]]:
    notes: list[dict[str, Any]] = []
    for write in store.widget_writes_of(cell):
        went = f"[output of this cell went to Output widget {write['model_id']}"
        if write.get("closed"):
            notes.append(note(went + ", since closed]"))
        elif write["shown_under"]:
            where = ", ".join(f"[{_cell_name(ident)}]" for ident in write["shown_under"])
            notes.append(note(f"{went}, shown under {where}]"))
        elif "outputs" in write:
            notes.append(note(went + ", which no cell in the history displays; it shows:]"))
            notes.extend(output_widget_block(write["model_id"], write["outputs"], write.get("outputs_not_kept", 0)))
        else:
            notes.append(note(went + ", which no cell in the history displays; a later cell lists what it shows]"))
    return notes


def _cell_name(ident: Any) -> str:
    return f"In {ident}" if isinstance(ident, int) else str(ident)


def _fair_shares(lengths: list[int], total: int) -> list[int]:
    """Split ``total`` characters: short outputs get what they need, long ones share the rest."""
    shares = [0] * len(lengths)
    remaining, order = total, sorted(range(len(lengths)), key=lambda i: lengths[i])
    for position, i in enumerate(order):
        fair = remaining // max(1, len(order) - position)
        shares[i] = min(lengths[i], fair)
        remaining -= shares[i]
    return shares


def _entry_header(entry: Entry) -> str:
    if isinstance(entry, EarlierInput):
        return f"── [In {entry.execution_count}] user · outputs not captured ──"
    if entry.source == "agent":
        name = f"{entry.agent_id}" + (
            f" = In {entry.execution_count}" if entry.execution_count is not None else ""
        )
        who = f"agent ({entry.mode})"
    else:
        name, who = f"In {entry.execution_count}", "user"
    parts = [who, entry.status]
    if entry.duration is not None:
        parts.append(f"{entry.duration:.3g} s")
    parts.append(f"started {entry.started}")
    return f"── [{name}] " + " · ".join(parts) + " ──"


def _code_text(code: str) -> str:
    return _cut(code.rstrip("\n"), _CODE_CHARS)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    return text[:head] + f"\n[... {len(text) - limit:,} characters cut ...]\n" + text[-(limit - head) :]


def _outputs_summary(outputs: list[dict[str, Any]], ident: Any) -> str:
    kinds: dict[str, int] = {}
    chars = 0
    went_elsewhere = []
    for out in outputs:
        chars += len(output_text(out))
        kind = out["output_type"]
        if kind == NOTE:
            if out["text"].startswith("[output of this cell went to"):
                went_elsewhere.append(out["text"].rstrip("\n"))
            continue
        data = out.get("data") or {}
        image = next((m for m in IMAGE_TYPES if m in data), None)
        label = image or ("error " + str(out.get("ename")) if kind == "error" else kind)
        kinds[label] = kinds.get(label, 0) + 1
    listed = ", ".join(f"{n}× {k}" if n > 1 else k for k, n in kinds.items())
    summary = (
        f"[outputs: {listed}; {chars:,} characters of text; get_output({_call_ref(ident)}) shows them]"
        if kinds
        else "[no output]"
    )
    return "\n".join([summary, *went_elsewhere])


def _call_ref(ident: Any) -> str:
    return json.dumps(ident)


# -- get_output ----------------------------------------------------------------------------------


def _cell_text_and_images(outputs: list[dict[str, Any]]) -> tuple[str, list[tuple[str, Any]]]:
    pieces, images = [], []
    for out in outputs:
        pieces.append(output_text(out))
        data = out.get("data") or {}
        mime = next((m for m in IMAGE_TYPES if m in data), None)
        if mime is not None:
            images.append((mime, data[mime]))
            pieces.append(f"[image {len(images)}: {mime}]\n")
    return "".join(pieces), images


def _output_page(
    store: HistoryStore, entry: Entry, offset: int, limit: int, image_offset: int, config: Any
) -> CallToolResult:
    header = _entry_header(entry)
    if isinstance(entry, EarlierInput):
        text = header + "\n" + entry.code + "\n[outputs not captured: this cell ran before ipymcp was loaded]"
        if entry.result_text:
            text += f"\n[its result, as text]\n{entry.result_text}"
        return CallToolResult(
            content=[TextContent(type="text", text=text)], meta={"total_chars": 0, "images": 0}
        )
    text, images = _cell_text_and_images(_cell_outputs(store, entry))
    total = len(text)
    end = min(total, offset + limit)
    blocks: list[Any] = []
    page = text[offset:end]
    if offset >= total and total:
        raise ToolError(f"offset {offset:,} is past the end of cell {entry.id}'s text ({total:,} characters)")
    intro = header + "\n" + _code_text(entry.code) + "\n"
    if total:
        intro += f"── text: characters {offset:,}–{end:,} of {total:,} ──"
    else:
        intro += "[no text output]"
    blocks.append(TextContent(type="text", text=intro))
    if page:
        blocks.append(TextContent(type="text", text=page))
    ref = _call_ref(entry.id)
    notes: list[str] = []
    if end < total:
        notes.append(f"[more text: get_output({ref}, offset={end})]")
    returned = 0
    if images and (offset == 0 or image_offset > 0):
        budget = Budget(
            max_chars=limit,
            max_images=config.history_page_images,
            max_image_bytes=config.max_image_bytes * 4,
            max_image_pixels=config.max_image_pixels,
        )
        tally = ImageTally()
        for index, (mime, value) in enumerate(images[image_offset:], start=image_offset):
            if tally.images_used >= budget.max_images:
                notes.append(
                    f"[images {index + 1}–{len(images)} of {len(images)} not returned: "
                    f"get_output({ref}, image_offset={index})]"
                )
                break
            block = image_content(value, mime, budget, tally, notes)
            if block is not None:
                blocks.append(TextContent(type="text", text=f"[image {index + 1} of {len(images)}]"))
                blocks.append(block)
                returned += 1
    elif images:
        notes.append(f"[{len(images)} images: they come with the first page, get_output({ref})]")
    if notes:
        blocks.append(TextContent(type="text", text="\n".join(notes)))
    meta = {
        "total_chars": total,
        "offset": offset,
        "end": end,
        "images": len(images),
        "images_returned": returned,
    }
    return CallToolResult(content=blocks, meta=meta)


# -- resources -----------------------------------------------------------------------------------


def _entry_json(store: HistoryStore, entry: Entry, with_outputs: bool) -> dict[str, Any]:
    if isinstance(entry, EarlierInput):
        result: dict[str, Any] = {
            "id": entry.id,
            "execution_count": entry.execution_count,
            "source": "user",
            "status": entry.status,
            "code": entry.code,
        }
        if entry.result_text:
            result["result_text"] = entry.result_text
        return result
    result = {
        "id": entry.id,
        "execution_count": entry.execution_count,
        "source": entry.source,
        "status": entry.status,
        "started": entry.started,
        "duration_s": None if entry.duration is None else round(entry.duration, 4),
        "code": entry.code if with_outputs else _cut(entry.code, 300),
    }
    if entry.mode:
        result["mode"] = entry.mode
    if with_outputs:
        result["outputs"] = store.outputs_of(entry)
        writes = store.widget_writes_of(entry)
        if writes:
            result["output_widget_writes"] = writes
    return result
