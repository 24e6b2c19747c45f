"""A minimal RGB PNG encoder (zlib only), so the test engine needs no imaging library."""

from __future__ import annotations

import struct
import zlib


def encode_png(width: int, height: int, pixel: bytes | None = None, *, seed: int = 0) -> bytes:
    """An RGB image: a gradient shifted by ``seed`` (or one ``pixel`` colour everywhere)."""
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter type: none
        if pixel is not None:
            rows += pixel * width
            continue
        for x in range(width):
            rows += bytes(((x + seed) % 256, (y + seed * 7) % 256, (x * y + seed * 13) % 256))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(bytes(rows), 6)),
            _chunk(b"IEND", b""),
        ]
    )


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's header."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
