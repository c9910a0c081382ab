"""nbformat-like outputs as text: what each output reads as (HTML and markdown without a
plain-text twin reduced to readable text, errors as their traceback, SVG and other formats as a
one-line note), Output widgets in reading order, bytes in bundles encoded as the kernel's
session encodes them, image sizes from their headers, a notebook file as text.

Pure Python (no SDK): the kernel's capture and history use it on the kernel's threads.
``ipymcp.content`` turns outputs into MCP content within a budget.
"""

from __future__ import annotations

import base64
import html
import re
from html.parser import HTMLParser
from typing import Any

from .text import cut_middle, strip_ansi

# Images returned as MCP image content (other image types, SVG included, are described).
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")


def encode_binary(data: dict[str, Any]) -> dict[str, Any]:
    """A mimebundle with bytes values (PIL, sympy, some ``Image`` objects) as base64 text.

    The kernel's session does the same when it serialises a message (jupyter_client's
    ``json_default``), so this is what every frontend received. ``data`` itself is never changed.
    """
    for value in data.values():
        if isinstance(value, (bytes, bytearray)):
            break
    else:
        return data  # the usual case: nothing to copy
    return {
        mime: base64.b64encode(value).decode("ascii") if isinstance(value, (bytes, bytearray)) else value
        for mime, value in data.items()
    }


def as_text(value: Any) -> str:
    """nbformat allows a mimebundle value or stream text to be a list of lines."""
    if isinstance(value, list):
        return "".join(value)
    return value if isinstance(value, str) else str(value)


def note(text: str) -> dict[str, Any]:
    """A line ipymcp adds among outputs (a label, where output went); not an output itself."""
    return {"output_type": NOTE, "text": text if text.endswith("\n") else text + "\n"}


NOTE = "ipymcp_note"


def flat_outputs(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Outputs in reading order: after a widget display, each Output widget it shows, labelled.

    The history nests an Output widget's outputs under the display of the widget (the
    ``output_widgets`` key); text and image readers want them in line, where the user sees them.
    """
    flat: list[dict[str, Any]] = []
    for output in outputs:
        flat.append(output)
        for widget in output.get("output_widgets") or ():
            flat.extend(output_widget_block(widget["model_id"], widget["outputs"], widget.get("outputs_not_kept", 0)))
    return flat


def output_widget_block(model_id: str, outputs: list[dict[str, Any]], not_kept: int = 0) -> list[dict[str, Any]]:
    if not outputs:
        return [note(f"[Output widget {model_id}: empty]")]
    count = f"{len(outputs)} output" + ("s" if len(outputs) > 1 else "")
    if not_kept:
        count += f"; its {not_kept:,} earlier outputs were not kept by ipymcp's history (over its per-output cap)"
    return [
        note(f"[Output widget {model_id}: {count}]"),
        *flat_outputs(outputs),
        note(f"[end of Output widget {model_id}]"),
    ]


def output_text(output: dict[str, Any]) -> str:
    """The readable text of one output (no images)."""
    kind = output.get("output_type")
    if kind == NOTE:
        return output["text"]
    if kind == "stream":
        text = as_text(output.get("text", ""))
        return text if output.get("name") != "stderr" else _prefix_lines(text, "[stderr] ")
    if kind == "error":
        tb = output.get("traceback") or []
        body = "\n".join(strip_ansi(line) for line in tb) if tb else f"{output.get('ename')}: {output.get('evalue')}"
        return body + "\n"
    if kind in ("execute_result", "display_data"):
        if _not_displayed(output):
            return ""
        return bundle_text(output.get("data") or {})
    return ""


def _not_displayed(output: dict[str, Any]) -> bool:
    """Colab's output-tag markers: a display_data its frontend never shows (``outputarea.nodisplay``)."""
    area = (output.get("metadata") or {}).get("outputarea")
    return isinstance(area, dict) and bool(area.get("nodisplay"))


def _prefix_lines(text: str, prefix: str) -> str:
    return "".join(prefix + line for line in text.splitlines(keepends=True))


_DEFAULT_REPR = re.compile(r"^<[\w.]+ object( at 0x[0-9a-fA-F]+)?>$")


def bundle_text(data: dict[str, Any]) -> str:
    """Plain text when there is some; else markdown, else HTML reduced to text; else a note.

    A default ``<… object>`` repr (IPython's HTML, SVG, Markdown objects) does not count as text.
    """
    plain = data.get("text/plain")
    if plain is not None and _DEFAULT_REPR.match(as_text(plain).strip()):
        richer = ("text/markdown", "text/html", "text/latex", "image/svg+xml", *IMAGE_TYPES)
        if any(mime in data for mime in richer):
            data = {k: v for k, v in data.items() if k != "text/plain"}
    for mime, convert in (
        ("text/plain", as_text),
        ("text/markdown", as_text),
        ("text/html", _html),
        ("text/latex", as_text),
    ):
        if mime in data:
            return convert(data[mime]).rstrip("\n") + "\n"
    if "image/svg+xml" in data:
        return f"[SVG image, {len(as_text(data['image/svg+xml'])):,} characters of markup: not shown]\n"
    if "application/json" in data:
        return f"{data['application/json']}\n"
    if any(k in data for k in IMAGE_TYPES):
        return ""
    kinds = ", ".join(sorted(data)) or "nothing"
    return f"[output of type {kinds}: not shown as text]\n"


# One output's text inside a notebook read as a file (read_file of an .ipynb).
NOTEBOOK_FILE_OUTPUT_CHARS = 3_000


def notebook_text(notebook: dict[str, Any], shown: str) -> str:
    """A parsed notebook file as text: each cell's source, then its outputs as text (images as a
    line saying they are not shown)."""
    cells = notebook.get("cells", [])
    kernel = (notebook.get("metadata", {}).get("kernelspec") or {}).get("name", "unknown")
    parts = [f"# {shown}: notebook with {len(cells)} cells, kernel {kernel} (raw=True shows the JSON)\n"]
    for index, cell in enumerate(cells, 1):
        count = cell.get("execution_count")
        label = f"[cell {index}] {cell.get('cell_type', '?')}" + (f", execution_count {count}" if count is not None else "")
        cell_id = cell.get("id")
        parts.append(label + (f" (id {cell_id})" if cell_id else "") + "\n")
        parts.append(as_text(cell.get("source", "")).rstrip("\n") + "\n")
        outputs = cell.get("outputs") or []
        if outputs:
            parts.append("[outputs]\n")
            for output in outputs:
                parts.append(cut_middle(output_text(dict(output)), NOTEBOOK_FILE_OUTPUT_CHARS))
                parts.extend(f"[{mime} output not shown]\n" for mime in output.get("data") or {} if mime.startswith("image/"))
        parts.append("\n")
    return "".join(parts)


def _html(value: Any) -> str:
    return html_to_text(as_text(value))


def image_size(b64: str, mime: str) -> tuple[int, int]:
    """Width and height from the header bytes, without Pillow."""
    try:
        head = base64.b64decode(b64[:4000] + "=" * (-len(b64[:4000]) % 4))
    except ValueError:
        return 0, 0
    if mime == "image/png" and head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if mime == "image/jpeg":
        i = 2
        while i + 9 < len(head):
            if head[i] != 0xFF:
                break
            marker, length = head[i + 1], int.from_bytes(head[i + 2 : i + 4], "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                return int.from_bytes(head[i + 7 : i + 9], "big"), int.from_bytes(head[i + 5 : i + 7], "big")
            i += 2 + length
    return 0, 0


class _HTMLText(HTMLParser):
    """HTML -> text that keeps tables readable (cells joined with " | ", one row per line)."""

    _BLOCK = {"p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "table", "thead", "tbody"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.row: list[str] | None = None
        self.cell: list[str] | None = None
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style"):
            self.skip += 1
        elif tag == "tr":
            self.row = []
        elif tag in ("td", "th"):
            self.cell = []
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self.skip = max(0, self.skip - 1)
        elif tag in ("td", "th") and self.cell is not None and self.row is not None:
            self.row.append(" ".join("".join(self.cell).split()))
            self.cell = None
        elif tag == "tr" and self.row is not None:
            self.parts.append(" | ".join(self.row) + "\n")
            self.row = None
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if self.cell is not None:
            self.cell.append(data)
        elif self.row is None:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    parser = _HTMLText()
    try:
        parser.feed(markup)
        parser.close()
    except Exception:  # noqa: BLE001 - malformed HTML: fall back to stripping tags
        return html.unescape(re.sub(r"<[^>]+>", " ", markup))
    text = "".join(parser.parts)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
