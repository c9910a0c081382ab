"""Whole answers made of outputs: the history's entries (get_history), one cell's outputs in
pages (get_output), the history resource's JSON, and a notebook read (read_notebook).

Each text shares the call's budget (``content.Budget``); what is cut says how to get the rest.
Server thread only (imports the SDK).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from mcp.types import CallToolResult, TextContent

from .content import Budget, ImageTally, image_content, shape_outputs
from .kernel.history import CellRecord, EarlierInput, HistoryStore
from .outputs import IMAGE_TYPES, NOTE, flat_outputs, note, output_text, output_widget_block
from .text import cut_middle

# Code shown per history entry (get_output shows it whole).
HISTORY_CODE_CHARS = 4_000
# get_history never gives an entry's outputs less text than this.
MIN_SHARE = 1_000
# Text budget for one cell's outputs inside read_notebook (the whole answer has max_output_chars).
CELL_OUTPUT_CHARS = 3_000

Entry = CellRecord | EarlierInput


class PageError(Exception):
    """A page that does not exist; the message is written for the agent."""


# -- get_history ---------------------------------------------------------------------------------


def history_blocks(
    store: HistoryStore, entries: list[Entry], include_outputs: bool, config: Any
) -> list[Any]:
    outputs = {id(e): cell_outputs(store, e) if isinstance(e, CellRecord) else [] for e in entries}
    shares = _fair_shares(
        [sum(len(output_text(o)) for o in outputs[id(e)]) for e in entries], config.max_output_chars
    )
    tally = ImageTally()
    shaped: dict[int, list[Any]] = {}
    # Newest first, so the most recent cells get the images when the cap is reached.
    for entry, share in reversed(list(zip(entries, shares, strict=True))):
        if not include_outputs or not isinstance(entry, CellRecord):
            continue
        ref = call_ref(entry.id)
        budget = Budget.from_config(
            config,
            max_chars=max(MIN_SHARE, share),
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
                text += f"\n[its result, as text]\n{cut_middle(entry.result_text, 2_000)}"
        elif not include_outputs:
            text += "\n" + _outputs_summary(outputs[id(entry)], entry.id)
        blocks.append(TextContent(type="text", text=text))
        if include_outputs and isinstance(entry, CellRecord):
            if shaped[id(entry)]:
                blocks.extend(shaped[id(entry)])
            elif entry.status != "running":
                blocks.append(TextContent(type="text", text="[no output]"))
    return blocks


def cell_outputs(store: HistoryStore, cell: CellRecord) -> list[dict[str, Any]]:
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
    return cut_middle(code.rstrip("\n"), HISTORY_CODE_CHARS)


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
        f"[outputs: {listed}; {chars:,} characters of text; get_output({call_ref(ident)}) shows them]"
        if kinds
        else "[no output]"
    )
    return "\n".join([summary, *went_elsewhere])


def call_ref(ident: Any) -> str:
    return json.dumps(ident)


# -- get_output ----------------------------------------------------------------------------------


def cell_text_and_images(outputs: list[dict[str, Any]]) -> tuple[str, list[tuple[str, Any]]]:
    pieces, images = [], []
    for out in outputs:
        pieces.append(output_text(out))
        data = out.get("data") or {}
        mime = next((m for m in IMAGE_TYPES if m in data), None)
        if mime is not None:
            images.append((mime, data[mime]))
            pieces.append(f"[image {len(images)}: {mime}]\n")
    return "".join(pieces), images


def output_page(
    store: HistoryStore, entry: Entry, offset: int, limit: int, image_offset: int, config: Any
) -> CallToolResult:
    header = _entry_header(entry)
    if isinstance(entry, EarlierInput):
        text = header + "\n" + entry.code + "\n[outputs not captured: this cell ran before ipymcp was loaded]"
        if entry.result_text:
            text += f"\n[its result, as text]\n{entry.result_text}"
        facts = {"id": entry.id, "total_chars": 0, "offset": 0, "end": 0, "images": 0, "images_returned": 0}
        return CallToolResult(
            content=[TextContent(type="text", text=text)],
            structured_content=facts,
            meta={"total_chars": 0, "images": 0},
        )
    text, images = cell_text_and_images(cell_outputs(store, entry))
    total = len(text)
    end = min(total, offset + limit)
    blocks: list[Any] = []
    page = text[offset:end]
    if offset >= total and total:
        raise PageError(f"offset {offset:,} is past the end of cell {entry.id}'s text ({total:,} characters)")
    intro = header + "\n" + _code_text(entry.code) + "\n"
    if total:
        intro += f"── text: characters {offset:,}–{end:,} of {total:,} ──"
    else:
        intro += "[no text output]"
    blocks.append(TextContent(type="text", text=intro))
    if page:
        blocks.append(TextContent(type="text", text=page))
    ref = call_ref(entry.id)
    notes: list[str] = []
    if end < total:
        notes.append(f"[more text: get_output({ref}, offset={end})]")
    returned = 0
    if images and (offset == 0 or image_offset > 0):
        budget = Budget.from_config(
            config,
            max_chars=limit,
            max_images=config.history_page_images,
            max_image_bytes=config.max_image_bytes * 4,
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
    return CallToolResult(content=blocks, structured_content={"id": entry.id, **meta}, meta=meta)


# -- resources -----------------------------------------------------------------------------------


def entry_json(store: HistoryStore, entry: Entry, with_outputs: bool) -> dict[str, Any]:
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
        "code": entry.code if with_outputs else cut_middle(entry.code, 300),
    }
    if entry.mode:
        result["mode"] = entry.mode
    if with_outputs:
        result["outputs"] = store.outputs_of(entry)
        writes = store.widget_writes_of(entry)
        if writes:
            result["output_widget_writes"] = writes
    return result


# -- read_notebook ---------------------------------------------------------------------------------


def render_notebook(
    notebook: dict[str, Any], live: bool, include_outputs: bool, budget: Budget, view: str, kernel_sentence: str
) -> CallToolResult:
    """read_notebook's answer: a header (where it was read from, unsaved changes, the active cell,
    the kernel), then each cell with its outputs until the budget is spent."""
    cells = notebook["cells"]
    n = notebook.get("n_cells", len(cells))
    if live:
        active = notebook.get("active_cell_index")
        header = (
            f"{notebook['path']}, live from the open notebook view ({view}). {n} cells, "
            f"{'with unsaved changes' if notebook.get('dirty') else 'no unsaved changes'}. "
            + (
                f"The user's active cell is index {active} (id {notebook.get('active_cell_id')}). "
                if active is not None and active >= 0
                else ""
            )
            + kernel_sentence
        )
    else:
        header = (
            f"{notebook['path']}: read from the SAVED FILE on disk (saved {notebook.get('saved_at')}); it may be "
            f"stale: unsaved edits in the open notebook are not included, and ids/revisions cannot be used for "
            f"writes. Why no live view: {notebook.get('why')}. {n} cells."
        )
    if cells:
        header += f" Showing cells {cells[0]['index']}–{cells[-1]['index']}."
    content: list[Any] = [TextContent(type="text", text=header)]
    tally, used = ImageTally(), 0
    for position, cell in enumerate(cells):
        tags = [f"cell {cell['index']}", f"id {cell['id']}", cell["cell_type"]]
        if cell["cell_type"] == "code":
            count = cell.get("execution_count")
            tags.append(f"In [{count if count is not None else ' '}]")
        if cell.get("revision"):
            tags.append(f"rev {cell['revision']}")
        if cell.get("agent"):
            tags.append("written by the agent")
        if cell.get("active"):
            tags.append("ACTIVE")
        text = "── " + " · ".join(tags) + "\n" + cell["source"].rstrip("\n") + "\n"
        blocks: list[Any] = []
        if include_outputs and cell.get("outputs"):
            cell_budget = dataclasses.replace(budget, max_chars=min(CELL_OUTPUT_CHARS, budget.max_chars))
            blocks = shape_outputs(cell["outputs"], cell_budget, tally)
            text += "── outputs:"
        elif cell.get("n_outputs") and not include_outputs:
            text += f"── {cell['n_outputs']} output(s) not included"
        used += len(text) + sum(len(getattr(b, "text", "")) for b in blocks)
        if used > budget.max_chars and position > 0:
            content.append(
                TextContent(
                    type="text",
                    text=f"[stopped at cell {cell['index']} to stay within the output budget: call read_notebook("
                    f"start={cell['index']}) for the rest, or include_outputs=False]",
                )
            )
            break
        content.append(TextContent(type="text", text=text))
        content.extend(blocks)
    facts = {"live": live, "n_cells": n, "path": notebook["path"]}
    return CallToolResult(content=content, structured_content=facts, meta=facts)
