"""nbformat-like outputs -> MCP content, within a budget. Every tool that returns outputs uses this.

Text from all outputs shares one character budget (head and tail kept, a marker says what was
cut and how to get it: ``text.MiddleCut``); images become MCP image content up to a count and
byte cap, downscaled when Pillow is installed. Server thread only (imports the SDK).
"""

from __future__ import annotations

import base64
import dataclasses
import io
from dataclasses import dataclass, field
from typing import Any

from mcp.types import ImageContent, TextContent

from .config import IPyMCP
from .outputs import IMAGE_TYPES, as_text, image_size, output_text
from .text import MiddleCut

# The text budget is never planned below this many characters (a marker needs room around it).
MIN_TEXT_BUDGET = 200


@dataclass
class Budget:
    max_chars: int = 20_000
    max_images: int = 4
    max_image_bytes: int = 2_000_000
    max_image_pixels: int = 1_600_000
    # Said in the truncation marker: how the agent gets the rest.
    fetch_hint: str = ""
    # Said when an image is left out (over the count or byte cap): how the agent gets it.
    image_hint: str = ""

    @classmethod
    def from_config(cls, config: IPyMCP, **changes: Any) -> Budget:
        """The budget the user's settings give one tool call; ``changes`` for what this call does
        differently (its hints, a share of the text budget, a page's image count)."""
        budget = cls(
            max_chars=config.max_output_chars,
            max_images=config.max_images,
            max_image_bytes=config.max_image_bytes,
            max_image_pixels=config.max_image_pixels,
        )
        return dataclasses.replace(budget, **changes)


@dataclass
class ImageTally:
    """Images already returned in this tool call; share one across several ``shape_outputs``."""

    images_used: int = 0
    image_bytes_used: int = 0


@dataclass
class _Shaped:
    blocks: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tally: ImageTally = field(default_factory=ImageTally)


def shape_outputs(outputs: list[dict[str, Any]], budget: Budget, tally: ImageTally | None = None) -> list[Any]:
    """MCP content blocks for ``outputs``: texts merged in order, images where they occurred.

    Pass the same ``tally`` to several calls that answer one tool call, so the image caps hold
    for the whole answer.
    """
    shaped = _Shaped(tally=tally if tally is not None else ImageTally())
    pieces: list[Any] = []  # str or ImageContent, in output order
    for output in outputs:
        text = output_text(output)
        if text:
            pieces.append(text)
        data = output.get("data") or {}
        for mime in IMAGE_TYPES:
            if mime in data:
                image = image_content(data[mime], mime, budget, shaped.tally, shaped.notes)
                if image is not None:
                    pieces.append(image)
                break
    total = sum(len(p) for p in pieces if isinstance(p, str))
    # A stream cut while capturing (head and tail kept) says how long it was: count what it lost.
    cut_before = sum(o["length"] - len(as_text(o.get("text", ""))) for o in outputs if o.get("length"))
    cut = MiddleCut.plan(total, max(MIN_TEXT_BUDGET, budget.max_chars), cut_before) if total > budget.max_chars else None
    position, buffer = 0, []
    for piece in pieces + [None]:
        if isinstance(piece, str):
            buffer.append(piece)
            continue
        text = "".join(buffer)
        buffer.clear()
        if cut is not None:
            text, position = cut.apply(text, position), position + len(text)
        if text:
            shaped.blocks.append(TextContent(type="text", text=text))
        if piece is not None:
            shaped.blocks.append(piece)
    if cut is not None:
        hint = f"; {budget.fetch_hint}" if budget.fetch_hint else ""
        shaped.notes.append(
            f"[output truncated: {total + cut_before:,} characters, the middle {cut.removed:,} cut{hint}]"
        )
    if shaped.notes:
        shaped.blocks.append(TextContent(type="text", text="\n".join(shaped.notes)))
    return shaped.blocks


def image_content(value: Any, mime: str, budget: Budget, tally: ImageTally, notes: list[str]) -> ImageContent | None:
    """One image as MCP content within the call's caps (downscaled if needed), or None + a note."""
    b64 = as_text(value).replace("\n", "")
    raw_size = len(b64) * 3 // 4
    hint = f"; {budget.image_hint}" if budget.image_hint else ""
    if tally.images_used >= budget.max_images:
        notes.append(f"[{mime} image not returned: more than {budget.max_images} images in this call{hint}]")
        return None
    if mime in ("image/png", "image/jpeg"):
        b64, mime, note = _fit_image(b64, mime, budget)
        if note:
            notes.append(note)
        if b64 is None:
            return None
        raw_size = len(b64) * 3 // 4
    if tally.image_bytes_used + raw_size > budget.max_image_bytes:
        notes.append(
            f"[{mime} image of {raw_size:,} bytes not returned: over this call's image budget "
            f"of {budget.max_image_bytes:,} bytes{hint}]"
        )
        return None
    tally.images_used += 1
    tally.image_bytes_used += raw_size
    return ImageContent(type="image", data=b64, mime_type=mime)


def _fit_image(b64: str, mime: str, budget: Budget) -> tuple[str | None, str, str | None]:
    """Downscale an image over the pixel or byte budget; without Pillow, say what happened."""
    width, height = image_size(b64, mime)
    too_many_pixels = width * height > budget.max_image_pixels if width and height else False
    too_big = len(b64) * 3 // 4 > budget.max_image_bytes
    if not (too_many_pixels or too_big):
        return b64, mime, None
    try:
        from PIL import Image
    except ImportError:
        return None, mime, (
            f"[{mime} image {width}x{height} not returned: too large and Pillow is not installed "
            "to downscale it (pip install pillow), or save it to a file and read a smaller copy]"
        )
    try:
        image = Image.open(io.BytesIO(base64.b64decode(b64)))
        image.load()
    except Exception as exc:  # noqa: BLE001 - a corrupt image must not fail the whole call
        return None, mime, f"[{mime} image not returned: it could not be decoded ({type(exc).__name__})]"
    scale = min(1.0, (budget.max_image_pixels / max(1, image.width * image.height)) ** 0.5)
    for _ in range(6):
        size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
        resized = image.resize(size) if scale < 1.0 else image
        out = io.BytesIO()
        if mime == "image/jpeg" or resized.mode not in ("RGBA", "LA", "P"):
            resized.convert("RGB").save(out, format="JPEG", quality=85)
            new_mime = "image/jpeg"
        else:
            resized.save(out, format="PNG", optimize=True)
            new_mime = "image/png"
        if out.tell() <= budget.max_image_bytes:
            note = f"[image downscaled from {image.width}x{image.height} to {size[0]}x{size[1]}]"
            return base64.b64encode(out.getvalue()).decode(), new_mime, note
        scale *= 0.6
    return None, mime, f"[{mime} image {image.width}x{image.height} not returned: still too large after downscaling]"


