"""The interactive-session WebSocket protocol (``/v1/sessions/ws``).

Text frames carry JSON messages, each a pydantic model tagged by ``type``. Binary frames
carry frame batches: ``[u32 header_len][header JSON][u32 count]([u32 len][image])*``,
big-endian, the header being a :class:`FrameBatchHeader`.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from motorpool.types import ControlInput, FrameBatch, SessionConfig, SessionInfo
from motorpool.types._base import Frozen


class CloseCode(IntEnum):
    """WebSocket close codes the server uses; 4xxx mirror the HTTP status of the error."""

    NORMAL = 1000
    GOING_AWAY = 1001
    """The server is shutting down."""
    INTERNAL_ERROR = 1011
    BAD_REQUEST = 4400
    """A malformed message, or a missing or mismatched protocol version."""
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    NOT_FOUND = 4404
    """Unknown model."""
    BUSY = 4409
    """The model's one session is taken (or it cannot run sessions now)."""
    INVALID = 4422
    """A valid message the model cannot run (bad seed image, options)."""
    CANCELLED = 4499
    """Cancelled by its id (``POST /api/requests/{id}/cancel``)."""
    UNAVAILABLE = 4503


# -- client → server -----------------------------------------------------------------------


class OpenSession(Frozen):
    """First message: which model, the seed image and the session settings."""

    type: Literal["open"] = "open"
    model: str = Field(min_length=1)
    seed_image: bytes = Field(min_length=1)
    """Base64 in JSON."""
    seed_media_type: Literal["image/png", "image/jpeg"] = "image/png"
    config: SessionConfig = SessionConfig()


class Control(Frozen):
    """Controller state for the next batch (newest wins; mouse motion adds up)."""

    type: Literal["control"] = "control"
    input: ControlInput


class Pause(Frozen):
    """Stop generating until ``resume``."""

    type: Literal["pause"] = "pause"


class Resume(Frozen):
    """Continue after ``pause``."""

    type: Literal["resume"] = "resume"


class Reset(Frozen):
    """Return to the seed image."""

    type: Literal["reset"] = "reset"


class SetPrompt(Frozen):
    """Change the text conditioning."""

    type: Literal["prompt"] = "prompt"
    prompt: str


class Close(Frozen):
    """End the session; the server answers ``closed`` and closes with 1000."""

    type: Literal["close"] = "close"


ClientMessage = Annotated[
    OpenSession | Control | Pause | Resume | Reset | SetPrompt | Close,
    Field(discriminator="type"),
]
CLIENT_MESSAGE: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)

# -- server → client -----------------------------------------------------------------------


class SessionReady(Frozen):
    """The session is open; binary frame batches follow."""

    type: Literal["ready"] = "ready"
    session_id: str
    model: str
    protocol_version: int
    info: SessionInfo
    """Frame size, frames per batch, the model's own frame rate and context length."""
    fps: float | None = None
    """The pace batches are made at (``None``: as fast as the model goes)."""


class SessionState(Frozen):
    """Acknowledges pause / resume / reset / prompt with the state now in effect."""

    type: Literal["state"] = "state"
    paused: bool
    frames_sent: int
    frames_dropped: int
    """Batches dropped because the client read slower than the model generated."""


class SessionProgress(Frozen):
    """A stage before the first frame (loading the model, warming up)."""

    type: Literal["progress"] = "progress"
    stage: str
    step: int
    total: int | None = None


class SessionError(Frozen):
    """A typed error; fatal ones are followed by a close with the matching code."""

    type: Literal["error"] = "error"
    code: str
    message: str
    hint: str | None = None


class SessionClosed(Frozen):
    """The session ended; the socket closes next."""

    type: Literal["closed"] = "closed"
    reason: str


ServerMessage = Annotated[
    SessionReady | SessionState | SessionProgress | SessionError | SessionClosed,
    Field(discriminator="type"),
]


class FrameBatchHeader(Frozen):
    """The JSON header of a binary frame batch."""

    type: Literal["frames"] = "frames"
    frame_id: int
    count: int
    media_type: str
    width: int
    height: int
    generation_ms: float
    client_ts: float | None = None
    """The ``client_ts`` of the control this batch was generated under."""
    dropped: int = 0
    """Batches dropped so far in this session (slow client)."""
    reset: Literal["requested", "auto"] | None = None
    """Set on the first batch after a reset (``auto``: the model's context ran out)."""


_U32 = struct.Struct(">I")


def encode_batch(batch: FrameBatch, *, dropped: int) -> bytes:
    """A frame batch as one binary WebSocket message."""
    header = (
        FrameBatchHeader(
            frame_id=batch.frame_id,
            count=len(batch.frames),
            media_type=batch.media_type,
            width=batch.width,
            height=batch.height,
            generation_ms=batch.generation_ms,
            client_ts=batch.client_ts,
            dropped=dropped,
            reset=batch.reset,
        )
        .model_dump_json()
        .encode()
    )
    parts = [_U32.pack(len(header)), header, _U32.pack(len(batch.frames))]
    for frame in batch.frames:
        parts += (_U32.pack(len(frame)), frame)
    return b"".join(parts)


def decode_batch(data: bytes) -> tuple[FrameBatchHeader, list[bytes]]:
    """The inverse of :func:`encode_batch`, for clients written in Python."""
    (header_len,) = _U32.unpack_from(data, 0)
    offset = 4 + header_len
    header = FrameBatchHeader.model_validate_json(data[4:offset])
    (count,) = _U32.unpack_from(data, offset)
    offset += 4
    frames: list[bytes] = []
    for _ in range(count):
        (length,) = _U32.unpack_from(data, offset)
        frames.append(data[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return header, frames
