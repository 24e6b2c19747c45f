"""Read a GGUF file's header in pure Python: metadata, tensor sizes, truncation.

The plugin reads the header before llama.cpp sees the file, so a file that is not a
GGUF, or was cut short by an interrupted download, gets a clear error instead of
llama.cpp's "failed to load model", and the memory estimate needs no native library.
Layout: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from motorpool.errors import InvalidModel

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
_MAX_STRING = 1 << 26  # no metadata string in a sane file is 64 MiB long

# Element type ids of metadata values and the struct format of each scalar.
_SCALARS: dict[int, str] = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
    11: "<q", 12: "<d",
}  # fmt: skip
_STRING, _ARRAY = 8, 9

# ggml tensor types: (elements per block, bytes per block).
GGML_BLOCKS: dict[int, tuple[int, int]] = {
    0: (1, 4),  # F32
    1: (1, 2),  # F16
    2: (32, 18),  # Q4_0
    3: (32, 20),  # Q4_1
    6: (32, 22),  # Q5_0
    7: (32, 24),  # Q5_1
    8: (32, 34),  # Q8_0
    9: (32, 40),  # Q8_1
    10: (256, 84),  # Q2_K
    11: (256, 110),  # Q3_K
    12: (256, 144),  # Q4_K
    13: (256, 176),  # Q5_K
    14: (256, 210),  # Q6_K
    15: (256, 292),  # Q8_K
    16: (256, 66),  # IQ2_XXS
    17: (256, 74),  # IQ2_XS
    18: (256, 98),  # IQ3_XXS
    19: (256, 50),  # IQ1_S
    20: (32, 18),  # IQ4_NL
    21: (256, 110),  # IQ3_S
    22: (256, 82),  # IQ2_S
    23: (256, 136),  # IQ4_XS
    24: (1, 1),  # I8
    25: (1, 2),  # I16
    26: (1, 4),  # I32
    27: (1, 8),  # I64
    28: (1, 8),  # F64
    29: (256, 56),  # IQ1_M
    30: (1, 2),  # BF16
    34: (256, 54),  # TQ1_0
    35: (256, 66),  # TQ2_0
    39: (32, 17),  # MXFP4
}

Scalar = int | float | bool | str


@dataclass(frozen=True, slots=True)
class GGUFInfo:
    """What the plugin needs from a GGUF header."""

    path: Path
    version: int
    metadata: dict[str, Scalar]
    """Scalar metadata; arrays are left out (their lengths are in ``array_lengths``)."""
    array_lengths: dict[str, int]
    tensor_count: int
    data_end: int | None
    """Where the last tensor's data ends; ``None`` when a tensor type is unknown here."""

    @property
    def architecture(self) -> str:
        """``general.architecture``, e.g. ``llama`` or ``qwen2``."""
        return str(self.metadata.get("general.architecture", "unknown"))

    def arch_int(self, key: str) -> int | None:
        """An integer hyper-parameter of the architecture, e.g. ``block_count``."""
        value = self.metadata.get(f"{self.architecture}.{key}")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def context_length(self) -> int | None:
        """The context length the model was trained with."""
        return self.arch_int("context_length")

    @property
    def chat_template(self) -> str | None:
        """The chat template from the tokenizer metadata, if the file has one."""
        template = self.metadata.get("tokenizer.chat_template")
        return template if isinstance(template, str) and template.strip() else None

    @property
    def head_sizes(self) -> tuple[int, int]:
        """Widths of one attention head's key and value."""
        heads = self.arch_int("attention.head_count") or 1
        embedding = self.arch_int("embedding_length") or 0
        key = self.arch_int("attention.key_length") or embedding // heads
        return key, self.arch_int("attention.value_length") or key

    def kv_bytes_per_token(self, bytes_per_element: float) -> int:
        """Bytes the KV cache needs per token of context, at the given element size."""
        layers = self.arch_int("block_count") or 0
        kv_heads = (
            self.arch_int("attention.head_count_kv") or self.arch_int("attention.head_count") or 1
        )
        key, value = self.head_sizes
        return math.ceil(layers * kv_heads * (key + value) * bytes_per_element)


def read_gguf(path: Path) -> GGUFInfo:
    """Read and check a GGUF header; :class:`InvalidModel` says what is wrong."""
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            return _read(file, path, size)
    except (struct.error, EOFError) as exc:
        raise InvalidModel(
            f"{path} is truncated: its GGUF header ends early",
            hint="download the file again; an interrupted download leaves a partial file",
        ) from exc
    except UnicodeDecodeError as exc:
        raise InvalidModel(f"{path} is not a valid GGUF file: {exc}") from exc
    except OSError as exc:
        raise InvalidModel(f"cannot read {path}: {exc.strerror or exc}") from exc


def _read(file: BinaryIO, path: Path, size: int) -> GGUFInfo:
    read = _reader(file)
    if read(4) != MAGIC:
        raise InvalidModel(
            f"{path} is not a GGUF file (no GGUF magic at its start)",
            hint="llama.cpp loads .gguf files; convert other formats with llama.cpp's "
            "convert_hf_to_gguf.py",
        )
    (version,) = struct.unpack("<I", read(4))
    if version not in (2, 3):
        raise InvalidModel(f"{path} is GGUF version {version}; llama.cpp reads versions 2 and 3")
    tensor_count, kv_count = struct.unpack("<QQ", read(16))
    metadata: dict[str, Scalar] = {}
    arrays: dict[str, int] = {}
    for _ in range(kv_count):
        key = _string(read)
        (kind,) = struct.unpack("<I", read(4))
        if kind == _ARRAY:
            (item_kind,) = struct.unpack("<I", read(4))
            (count,) = struct.unpack("<Q", read(8))
            arrays[key] = count
            _skip_array(file, read, item_kind, count)
        else:
            metadata[key] = _value(read, kind)
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    alignment = alignment if isinstance(alignment, int) and alignment > 0 else DEFAULT_ALIGNMENT
    data_end: int | None = 0
    for _ in range(tensor_count):
        _string(read)  # name
        (dims,) = struct.unpack("<I", read(4))
        shape = struct.unpack(f"<{dims}Q", read(8 * dims))
        ggml_type, offset = struct.unpack("<IQ", read(12))
        block = GGML_BLOCKS.get(ggml_type)
        if block is None or data_end is None:
            data_end = None
            continue
        elements, block_bytes = block
        data_end = max(data_end, offset + math.prod(shape) // elements * block_bytes)
    data_start = -(-file.tell() // alignment) * alignment
    end = None if data_end is None else data_start + data_end
    if end is not None and end > size:
        raise InvalidModel(
            f"{path} is truncated: its tensors need {end} bytes but the file has {size}",
            hint="download the file again; an interrupted download leaves a partial file",
        )
    return GGUFInfo(path, version, metadata, arrays, tensor_count, end)


def _reader(file: BinaryIO) -> Callable[[int], bytes]:
    def read(count: int) -> bytes:
        data = file.read(count)
        if len(data) != count:
            raise EOFError
        return data

    return read


def _string(read: Callable[[int], bytes]) -> str:
    (length,) = struct.unpack("<Q", read(8))
    if length > _MAX_STRING:
        raise EOFError  # a garbage length: the header is corrupt or cut short
    return read(length).decode("utf-8")


def _value(read: Callable[[int], bytes], kind: int) -> Scalar:
    if kind == _STRING:
        return _string(read)
    fmt = _SCALARS.get(kind)
    if fmt is None:
        raise InvalidModel(f"unknown GGUF metadata type {kind}: the file is corrupt")
    value: Scalar = struct.unpack(fmt, read(struct.calcsize(fmt)))[0]
    return value


def _skip_array(file: BinaryIO, read: Callable[[int], bytes], item_kind: int, count: int) -> None:
    if item_kind == _STRING:  # each string carries its own length
        for _ in range(count):
            (length,) = struct.unpack("<Q", read(8))
            file.seek(length, 1)
        return
    if item_kind == _ARRAY:  # arrays of arrays: each carries its type and length
        for _ in range(count):
            inner_kind, inner_count = struct.unpack("<IQ", read(12))
            _skip_array(file, read, inner_kind, inner_count)
        return
    fmt = _SCALARS.get(item_kind)
    if fmt is None:
        raise InvalidModel(f"unknown GGUF array type {item_kind}: the file is corrupt")
    file.seek(struct.calcsize(fmt) * count, 1)
