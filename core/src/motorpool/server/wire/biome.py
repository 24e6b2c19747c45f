"""Biome's WebSocket protocol (version 5): the subset motorpool's ``/ws`` route speaks.

Biome (Overworldai/Biome, GPL-3.0) is a desktop app for world models; this module lets
it use motorpool as its server. These types are written from the facts of Biome v1.1.1
(commit e3bc371, 2026-07-07), none of its code:

- ``server-components/server/protocol.py``: ``PROTOCOL_VERSION = 5``; the messages and
  their fields; the ``StageId`` and ``MessageId`` values; ``FrameHeader``; the batch
  layout, little-endian (unlike the native session protocol's big-endian one).
- ``server-components/engine/keymap.py``: ``control.buttons`` are keycap names (``W``,
  ``SPACE``, ``MOUSE_LEFT``), looked up upper-cased; unknown names are ignored.
- ``src/types/protocol.generated.ts``, ``src/hooks/engine/useWebSocket.ts`` and
  ``src/lib/wsRpc.ts``: the app checks every JSON message and frame header with Zod
  before using it. So optional fields are left out rather than sent as ``null``
  (:func:`dumps`), a ``stage`` or ``message_id`` must be one the app knows (these enums
  hold only such values), and keys it does not know are dropped: the ``code`` and
  ``hint`` motorpool adds to errors are ignored by Biome and kept for other clients.

Inbound messages ignore fields they do not know, as Biome's own ``init`` does, so a newer
Biome that adds an optional field is not refused.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from motorpool.types import ControlInput
from motorpool.types._base import Frozen

PROTOCOL_VERSION = 5
"""The version Biome sends as ``?protocol_version=``; any other is refused."""


class Stage(StrEnum):
    """``status`` stages (Biome's ``StageId`` values that motorpool reports)."""

    WAITING_FOR_SEED = "session.waiting_for_seed"
    LOADING_MODEL = "session.loading_model.load"
    LOADING_WEIGHTS = "session.loading_model.instantiate"
    WARMUP_RESET = "session.warmup.reset"
    WARMUP_SEED = "session.warmup.seed"
    WARMUP_COMPILE = "session.warmup.compile"
    READY = "session.ready"


class MessageId(StrEnum):
    """Translation keys of errors and warnings (Biome's ``MessageId`` values used here)."""

    PROTOCOL_VERSION_MISMATCH = "app.server.error.protocolVersionMismatch"
    SERVER_BUSY = "app.server.error.serverBusy"
    TIMEOUT_WAITING_FOR_SEED = "app.server.error.timeoutWaitingForSeed"
    INIT_FAILED = "app.server.error.initFailed"
    MISSING_SEED_DATA = "app.server.warning.missingSeedData"
    INVALID_SEED_DATA = "app.server.warning.invalidSeedData"


# -- client → server -----------------------------------------------------------------------


class _Inbound(BaseModel):
    """Frozen and finite like every wire type, but lenient about fields it does not know."""

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False, defer_build=True)


class Control(_Inbound):
    """Held keys and mouse motion since the last control (fire and forget)."""

    type: Literal["control"] = "control"
    buttons: tuple[Annotated[str, Field(max_length=32)], ...] = Field(default=(), max_length=64)
    """Keycap names held now."""
    mouse_dx: float = 0.0
    mouse_dy: float = 0.0
    ts: float | None = None
    """The client's clock when sent; echoed as the ``client_ts`` of the batch made under it."""


class Pause(_Inbound):
    """Stop generating until ``resume``."""

    type: Literal["pause"] = "pause"


class Resume(_Inbound):
    """Continue after ``pause``."""

    type: Literal["resume"] = "resume"


class Reset(_Inbound):
    """Back to the seed image."""

    type: Literal["reset"] = "reset"


class Prompt(_Inbound):
    """Change the text conditioning."""

    type: Literal["prompt"] = "prompt"
    prompt: str = ""


class SessionConfig(_Inbound):
    """Biome's session settings; it sends all of them with every ``init``.

    motorpool honours ``cap_inference_fps`` (pace to the model's own rate) and
    ``video_recording`` (record to the server's recordings folder) when a session opens.
    The rest belong to Biome's own engine: quantisation and backend are model options in
    motorpool's models file; scene authoring and action logging are not offered.
    """

    quant: str | None = None
    engine_backend: str | None = None
    scene_authoring: bool = False
    action_logging: bool = False
    video_recording: bool = False
    video_output_dir: str | None = None
    cap_inference_fps: bool = True


class Init(_Inbound):
    """RPC: open the session on a model and a seed image (again: re-apply the settings)."""

    type: Literal["init"] = "init"
    req_id: str
    model: str
    """A Hugging Face repo id in Biome (``Overworld/Waypoint-1.5-1B``); any motorpool model
    name here, unless the server's ``biome_model`` setting overrides it."""
    config: SessionConfig = SessionConfig()
    seed_image_data: str | None = None
    """The seed image, JPEG or PNG, base64."""
    seed_filename: str | None = None
    biome_version: str | None = None


class SceneEdit(_Inbound):
    """RPC, not supported: inpaint the current frame from a prompt."""

    type: Literal["scene_edit"] = "scene_edit"
    req_id: str
    prompt: str


class GenerateScene(_Inbound):
    """RPC, not supported: make a new seed image from a prompt."""

    type: Literal["generate_scene"] = "generate_scene"
    req_id: str
    prompt: str


class CheckSeedSafety(_Inbound):
    """RPC, not supported: classify a seed image as safe or not."""

    type: Literal["check_seed_safety"] = "check_seed_safety"
    req_id: str
    image_data: str


Unsupported = SceneEdit | GenerateScene | CheckSeedSafety
"""The RPCs answered with an ``unsupported_capability`` error."""

ClientMessage = Annotated[
    Control | Pause | Resume | Reset | Prompt | Init | SceneEdit | GenerateScene | CheckSeedSafety,
    Field(discriminator="type"),
]
CLIENT_MESSAGE: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)


class Envelope(_Inbound):
    """What is read of a message that fails to validate: its type and request id."""

    type: str | None = None
    req_id: str | None = None


def _keycaps() -> dict[str, int]:
    codes = {chr(code): code for code in range(ord("A"), ord("Z") + 1)}
    codes |= {str(digit): ord(str(digit)) for digit in range(10)}
    codes |= {"LEFT": 0x25, "UP": 0x26, "RIGHT": 0x27, "DOWN": 0x28}
    codes |= {"SHIFT": 0x10, "CTRL": 0x11, "SPACE": 0x20, "TAB": 0x09, "ENTER": 0x0D}
    codes |= {"MOUSE_LEFT": 0x01, "MOUSE_RIGHT": 0x02, "MOUSE_MIDDLE": 0x04}
    return codes


KEYCAPS: Mapping[str, int] = MappingProxyType(_keycaps())
"""Biome's keycap names and the Windows virtual-key codes motorpool's controls carry."""


def control_input(message: Control) -> ControlInput:
    """A Biome control as motorpool's input (keycaps it does not know are ignored)."""
    buttons = frozenset(KEYCAPS[name] for b in message.buttons if (name := b.upper()) in KEYCAPS)
    return ControlInput(
        buttons=buttons,
        mouse_dx=message.mouse_dx,
        mouse_dy=message.mouse_dy,
        client_ts=message.ts,
    )


# -- server → client -----------------------------------------------------------------------


class StatusMessage(Frozen):
    """A stage before the first frame."""

    type: Literal["status"] = "status"
    stage: Stage
    message: str | None = None


class SystemInfo(Frozen):
    """The server's hardware, as Biome shows it (``torch_version`` is required there)."""

    cpu_name: str | None = None
    gpu_name: str | None = None
    vram_total_bytes: int | None = None
    torch_version: str
    gpu_count: int = 0


class SystemInfoMessage(SystemInfo):
    """The hardware, pushed once after the handshake."""

    type: Literal["system_info"] = "system_info"


class ErrorMessage(Frozen):
    """An error: fatal ones are followed by a close; the others leave the session as it was.

    Biome shows it and marks the connection failed.
    """

    type: Literal["error"] = "error"
    message_id: MessageId | None = None
    message: str | None = None
    params: dict[str, str] | None = None
    code: str | None = None
    """motorpool's error code (``invalid_request``, ``model_busy``, …)."""
    hint: str | None = None


class WarningMessage(Frozen):
    """A problem that is not fatal (a seed image that cannot be used)."""

    type: Literal["warning"] = "warning"
    message_id: MessageId
    message: str | None = None
    params: dict[str, str] | None = None


class LogMessage(Frozen):
    """A line of the server's log about this session (Biome shows them in its log view)."""

    type: Literal["log"] = "log"
    event: str
    level: str = "info"
    logger: str | None = None
    timestamp: str | None = None
    fields: dict[str, str | int | float | bool] | None = None


class InitData(Frozen):
    """What a successful ``init`` answers."""

    model: str
    """The motorpool model the session runs on."""
    inference_fps: int
    """The model's own frame rate (0: unknown)."""
    system_info: SystemInfo


class Success(Frozen):
    """A successful RPC reply."""

    type: Literal["response"] = "response"
    req_id: str
    success: Literal[True] = True
    data: InitData


class Failure(Frozen):
    """A failed RPC reply: ``error_id`` when Biome has a translation for it, ``error`` text."""

    type: Literal["response"] = "response"
    req_id: str
    success: Literal[False] = False
    error_id: MessageId | None = None
    error: str | None = None
    code: str | None = None
    """motorpool's error code."""


ServerMessage = Annotated[
    StatusMessage
    | SystemInfoMessage
    | ErrorMessage
    | WarningMessage
    | LogMessage
    | Success
    | Failure,
    Field(discriminator="type"),
]


def dumps(message: ServerMessage) -> str:
    """A message as JSON, without ``null`` fields (Biome's validation refuses them)."""
    return message.model_dump_json(exclude_none=True)


# -- frame batches -------------------------------------------------------------------------


class FrameHeader(Frozen):
    """The JSON header of a binary frame batch."""

    frame_id: int
    """The number of the batch's first frame since the session (re)started at 1."""
    client_ts: float
    """The ``ts`` of the control the batch was made under; 0 when none was new."""
    gen_ms: float
    temporal_compression: int = 1
    """Frames in the batch, which the client spreads over the time the batch covers."""
    vram_used_bytes: int | None = None
    gpu_util_percent: int | None = None


_U32 = struct.Struct("<I")


def encode_batch(header: FrameHeader, frames: Sequence[bytes]) -> bytes:
    """``[u32 header_len][header JSON][u32 count]([u32 len][image])*``, little-endian."""
    encoded = header.model_dump_json(exclude_none=True).encode()
    parts = [_U32.pack(len(encoded)), encoded, _U32.pack(len(frames))]
    for frame in frames:
        parts += (_U32.pack(len(frame)), frame)
    return b"".join(parts)


def decode_batch(data: bytes) -> tuple[FrameHeader, list[bytes]]:
    """The inverse of :func:`encode_batch`, for clients written in Python."""
    (header_len,) = _U32.unpack_from(data, 0)
    offset = 4 + header_len
    header = FrameHeader.model_validate_json(data[4:offset])
    (count,) = _U32.unpack_from(data, offset)
    offset += 4
    frames: list[bytes] = []
    for _ in range(count):
        (length,) = _U32.unpack_from(data, offset)
        frames.append(data[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return header, frames
