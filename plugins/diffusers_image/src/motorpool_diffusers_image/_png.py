"""PNG bytes out, with the generation's parameters as text chunks."""

from __future__ import annotations

import io
from collections.abc import Mapping

from PIL import Image
from PIL.PngImagePlugin import PngInfo


def encode_png(image: Image.Image, metadata: Mapping[str, str], compress_level: int) -> bytes:
    """The image as PNG, each metadata entry a text chunk (iTXt when not Latin-1)."""
    info = PngInfo()
    for key, value in metadata.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=compress_level)
    return buffer.getvalue()
