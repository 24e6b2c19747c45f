"""Typed models for everything that crosses the contract: pydantic v2, frozen, strict."""

from motorpool.types._base import Capability, ErrorInfo, Frozen, Timings, Usage
from motorpool.types.events import (
    REQUEST_ADAPTER,
    STREAM_EVENT_ADAPTER,
    ErrorEvent,
    FrameEvent,
    GenerationRequest,
    GenerationResult,
    ProgressEvent,
    ResultEvent,
    StreamEvent,
    TerminalEvent,
    TokenEvent,
)
from motorpool.types.image import GeneratedImage, ImageRequest, ImageResult
from motorpool.types.models import (
    HostEvent,
    HostModelEvent,
    HostProgressEvent,
    ModelInfo,
    ModelOrigin,
    ModelSpec,
    ModelStatus,
)
from motorpool.types.plugins import PluginInfo, PluginProbe, PluginState
from motorpool.types.probe import (
    Accelerator,
    Device,
    HardwareReport,
    MissingDependency,
    ProbeReport,
)
from motorpool.types.text import (
    ChatMessage,
    ChatRequest,
    CompletionRequest,
    FinishReason,
    Sampling,
    TextResult,
)
from motorpool.types.video import VideoRequest, VideoResult
from motorpool.types.world import ControlInput, FrameBatch, SeedFrame, SessionConfig

__all__ = [
    "REQUEST_ADAPTER",
    "STREAM_EVENT_ADAPTER",
    "Accelerator",
    "Capability",
    "ChatMessage",
    "ChatRequest",
    "CompletionRequest",
    "ControlInput",
    "Device",
    "ErrorEvent",
    "ErrorInfo",
    "FinishReason",
    "FrameBatch",
    "FrameEvent",
    "Frozen",
    "GeneratedImage",
    "GenerationRequest",
    "GenerationResult",
    "HardwareReport",
    "HostEvent",
    "HostModelEvent",
    "HostProgressEvent",
    "ImageRequest",
    "ImageResult",
    "MissingDependency",
    "ModelInfo",
    "ModelOrigin",
    "ModelSpec",
    "ModelStatus",
    "PluginInfo",
    "PluginProbe",
    "PluginState",
    "ProbeReport",
    "ProgressEvent",
    "ResultEvent",
    "Sampling",
    "SeedFrame",
    "SessionConfig",
    "StreamEvent",
    "TerminalEvent",
    "TextResult",
    "Timings",
    "TokenEvent",
    "Usage",
    "VideoRequest",
    "VideoResult",
]
