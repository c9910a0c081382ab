"""Image sizing: dimensions read from the header bytes (no Pillow), and images fitted into a
call's pixel, byte and count budget (ipymcp/outputs.py image_size, ipymcp/content.py)."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from ipymcp.content import Budget, ImageTally, image_content, shape_outputs
from ipymcp.outputs import image_size


def encoded(width: int, height: int, kind: str = "PNG", mode: str = "RGB") -> str:
    out = io.BytesIO()
    Image.new(mode, (width, height), "red" if mode == "RGB" else None).save(out, format=kind)
    return base64.b64encode(out.getvalue()).decode()


@pytest.mark.parametrize(("kind", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg")])
@pytest.mark.parametrize(("width", "height"), [(1, 1), (640, 480), (3000, 17)])
def test_the_size_is_read_from_the_header(kind: str, mime: str, width: int, height: int) -> None:
    assert image_size(encoded(width, height, kind), mime) == (width, height)


def test_a_jpeg_with_a_large_exif_block_before_its_frame_still_has_a_size() -> None:
    out = io.BytesIO()
    image = Image.new("RGB", (123, 45))
    exif = Image.Exif()
    exif[0x010E] = "x" * 2_000  # ImageDescription: pushes the frame header past the first kilobytes
    image.save(out, format="JPEG", exif=exif)
    assert image_size(base64.b64encode(out.getvalue()).decode(), "image/jpeg") == (123, 45)


@pytest.mark.parametrize("data", ["", "not base64 at all!", base64.b64encode(b"GIF89a....").decode()])
def test_what_is_not_a_png_or_jpeg_header_has_no_size(data: str) -> None:
    assert image_size(data, "image/png") == (0, 0)


def test_an_image_within_the_budget_is_returned_as_it_is() -> None:
    data = encoded(100, 50)
    notes: list[str] = []
    block = image_content(data, "image/png", Budget(), ImageTally(), notes)
    assert block is not None and block.data == data and notes == []


def test_an_image_over_the_pixel_budget_is_downscaled_and_says_so() -> None:
    notes: list[str] = []
    block = image_content(encoded(3000, 2000), "image/png", Budget(max_image_pixels=600_000), ImageTally(), notes)
    assert block is not None
    width, height = image_size(block.data, block.mime_type)
    assert width * height <= 600_000 and abs(width / height - 1.5) < 0.01
    assert notes == [f"[image downscaled from 3000x2000 to {width}x{height}]"]


def test_the_count_and_byte_caps_hold_for_the_whole_call() -> None:
    outputs = [{"output_type": "display_data", "data": {"image/png": encoded(10, 10)}} for _ in range(3)]
    blocks = shape_outputs(outputs, Budget(max_images=2, image_hint="get_output(3) returns them"))
    images = [b for b in blocks if b.type == "image"]
    notes = [b.text for b in blocks if b.type == "text"]
    assert len(images) == 2
    assert "more than 2 images in this call; get_output(3) returns them" in notes[-1]


def test_a_corrupt_image_over_budget_is_left_out_with_a_reason() -> None:
    corrupt = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(8) + (5000).to_bytes(4, "big") * 2 + bytes(100)).decode()
    notes: list[str] = []
    assert image_content(corrupt, "image/png", Budget(max_image_pixels=100), ImageTally(), notes) is None
    assert "could not be decoded" in notes[0]
