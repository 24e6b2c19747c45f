"""A minimal RGB PNG encoder (zlib only), so the test engine needs no imaging library."""

from __future__ import annotations

import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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
            PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(bytes(rows), 6)),
            _chunk(b"IEND", b""),
        ]
    )


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's header."""
    if data[:8] != PNG_SIGNATURE:
        raise ValueError("not a PNG")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def split_pngs(data: bytes) -> list[bytes]:
    """Split PNG files stored back to back (the test engine's video container) into PNGs.

    Each file is walked chunk by chunk up to its ``IEND`` chunk; anything malformed
    (a missing signature, a chunk running past the end, no ``IEND``) raises ``ValueError``.
    """
    pngs: list[bytes] = []
    start = 0
    while start < len(data):
        if data[start : start + 8] != PNG_SIGNATURE:
            raise ValueError(f"no PNG signature at byte {start}")
        position = start + 8
        while True:
            if position + 12 > len(data):
                raise ValueError(f"the PNG at byte {start} ends before its IEND chunk")
            (length,) = struct.unpack(">I", data[position : position + 4])
            kind = data[position + 4 : position + 8]
            position += 12 + int(length)  # length, type, body, CRC
            if position > len(data):
                raise ValueError(f"a {kind!r} chunk of the PNG at byte {start} is cut short")
            if kind == b"IEND":
                break
        pngs.append(data[start:position])
        start = position
    return pngs


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
