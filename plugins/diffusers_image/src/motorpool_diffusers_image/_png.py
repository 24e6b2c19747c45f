"""PNG bytes out (with the generation's parameters as text chunks), input images in."""

from __future__ import annotations

import io
from collections.abc import Mapping

from motorpool.errors import InvalidRequest
from PIL import Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

MAX_INPUT_PIXELS = 8192 * 8192
"""Larger input images are refused before they are decoded (decompression bombs)."""


def encode_png(image: Image.Image, metadata: Mapping[str, str], compress_level: int) -> bytes:
    """The image as PNG, each metadata entry a text chunk (iTXt when not Latin-1)."""
    info = PngInfo()
    for key, value in metadata.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=compress_level)
    return buffer.getvalue()


def decode_image(data: bytes) -> Image.Image:
    """An input image (PNG, JPEG, WebP...) as RGB; raise ``InvalidRequest`` if unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            width, height = opened.size
            if width * height > MAX_INPUT_PIXELS:
                raise InvalidRequest(
                    f"the input image is {width}x{height}, over the limit of "
                    f"{MAX_INPUT_PIXELS} pixels"
                )
            return opened.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise InvalidRequest(
            f"init_image is not an image this plugin can read: {exc}",
            hint="send PNG or JPEG bytes",
        ) from exc
