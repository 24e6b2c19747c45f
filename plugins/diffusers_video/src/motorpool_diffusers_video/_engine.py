"""The loaded pipeline: a folder loaded with diffusers, and one clip made on it.

Imported only inside ``motorpool_load`` and the tiny model builder: importing it imports
torch, diffusers and transformers. The pipeline is the class ``model_index.json`` names
(``WanPipeline``, ``LTXPipeline``, ``CogVideoXPipeline``, ...); an LTX text-to-video
pipeline also drives LTX's image-to-video pipeline over the same components
(``from_pipe``: no second copy of the weights).
"""

from __future__ import annotations

import io
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import diffusers
import numpy as np
import torch
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.utils import logging as diffusers_logging
from motorpool import torchtools
from motorpool.diffusers_folder import PipelineFolder
from motorpool.engine import Context
from motorpool.errors import Cancelled, InvalidModel, InvalidRequest, UnsupportedCapability
from motorpool.types import Timings, VideoRequest, VideoResult
from numpy.typing import NDArray
from PIL import Image
from pydantic import JsonValue
from transformers.utils import logging as transformers_logging

from motorpool_diffusers_video import _pipelines
from motorpool_diffusers_video._folder import IMAGE_PLUGIN_HINT, family_of
from motorpool_diffusers_video._mp4 import MEDIA_TYPE, Encoding, encode_mp4
from motorpool_diffusers_video._options import DiffusersVideoOptions

SEED_LIMIT = 2**63
FAMILY_FPS = {"wan": 16, "ltx": 25, "cogvideox": 8}
"""The frame rate each family was trained at (clips play at it unless asked otherwise)."""
DEFAULT_FPS = 16
"""Larger first frames are refused before they are decoded (decompression bombs)."""
_LOAD_ERRORS = (OSError, ValueError, KeyError, TypeError, AttributeError, ImportError)
"""What diffusers and transformers raise for a folder they cannot use."""


def load(folder: PipelineFolder, options: DiffusersVideoOptions, label: str) -> VideoModel:
    """Load a checked pipeline folder onto the device the options pick."""
    cls = _pipelines.pipeline_class(folder.class_name)
    if cls is None:
        raise InvalidModel(
            f"diffusers {diffusers.__version__} has no pipeline {folder.class_name!r} "
            f"({folder.path.name})",
            hint="upgrade diffusers if a newer release has it: pip install -U diffusers",
        )
    parameters = _pipelines.call_parameters(cls)
    if "num_frames" not in parameters or "prompt" not in parameters:
        raise InvalidModel(
            f"{folder.path.name} ({cls.__name__}) is not a text-to-video pipeline",
            hint=IMAGE_PLUGIN_HINT if "num_frames" not in parameters else None,
        )
    device = torchtools.resolve_device(options.device)
    dtype = torchtools.resolve_dtype(options.dtype, device)
    diffusers_logging.disable_progress_bar()  # the host reports load progress itself
    transformers_logging.disable_progress_bar()
    try:
        pipeline = _pipelines.load_as(
            cls, str(folder.path), dtype=dtype, local_files_only=options.local_files_only
        )
    except _LOAD_ERRORS as exc:
        raise InvalidModel(
            f"diffusers could not load {folder.path.name} ({folder.class_name}): "
            f"{type(exc).__name__}: {exc}",
            hint="check that the folder is a complete pipeline (model_index.json, each "
            "component's config and weights, the tokenizer)",
        ) from exc
    offload = torchtools.place(pipeline, pipeline.components.get("vae"), options, device)
    image_only = "image" in parameters
    twin = None if image_only else _pipelines.image_to_video_of(pipeline)
    for each in (pipeline, twin):
        if each is not None:
            _pipelines.view(each).set_progress_bar_config(disable=True)
    return VideoModel(
        text_to_video=None if image_only else pipeline,
        image_to_video=pipeline if image_only else twin,
        options=options,
        label=label,
        family=family_of(folder),
        device=device,
        dtype=str(dtype).removeprefix("torch."),
        offload=offload,
    )


@dataclass(frozen=True, slots=True)
class Defaults:
    """A pipeline's own defaults, read from its ``__call__`` signature."""

    steps: int
    frames: int | None
    guidance: float | None


def _defaults(cls: type[DiffusionPipeline]) -> Defaults:
    def number(name: str) -> float | None:
        value = _pipelines.call_default(cls, name)
        return float(value) if isinstance(value, int | float) else None

    steps, frames = number("num_inference_steps"), number("num_frames")
    return Defaults(
        steps=int(steps) if steps else 50,
        frames=int(frames) if frames else None,
        guidance=number("guidance_scale"),
    )


class VideoModel:
    """One loaded video pipeline (and its image-to-video twin). One request at a time."""

    def __init__(
        self,
        *,
        text_to_video: DiffusionPipeline | None,
        image_to_video: DiffusionPipeline | None,
        options: DiffusersVideoOptions,
        label: str,
        family: str | None,
        device: str,
        dtype: str,
        offload: bool,
    ) -> None:
        main = text_to_video or image_to_video
        if main is None:
            raise ValueError("a video model needs a pipeline")
        self._main: DiffusionPipeline | None = main
        self._text_to_video, self._image_to_video = text_to_video, image_to_video
        self.options, self.label, self.family = options, label, family
        self.device, self.dtype, self.offload = device, dtype, offload
        self.pipeline_class = type(main).__name__
        self.factors = _pipelines.factors(main)
        self.defaults = _defaults(type(main))
        self.fps = options.default_fps or FAMILY_FPS.get(family or "", DEFAULT_FPS)
        self.memory_bytes = torchtools.module_bytes(main.components.values())
        # Every call runs on this one thread: on CUDA a thread's first pipeline call is far
        # slower than the next (an H200 took 0.54-0.85 s instead of 0.46 s for a Wan 1.3B
        # clip), and the host starts a new thread per streamed request.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diffusers-video")

    @property
    def text_to_video(self) -> bool:
        """Whether the model makes clips from a prompt alone."""
        return self._text_to_video is not None

    @property
    def image_to_video(self) -> bool:
        """Whether the model can start a clip from a given first frame."""
        return self._image_to_video is not None

    def details(self) -> dict[str, JsonValue]:
        """Facts shown to users."""
        scheduler = self._pipeline().components.get("scheduler")
        return {
            "pipeline": self.pipeline_class,
            "family": self.family,
            "device": self.device,
            "dtype": self.dtype,
            "cpu_offload": self.offload,
            "scheduler": type(scheduler).__name__,
            "size_multiple": self.factors.spatial,
            "frames_step": self.factors.temporal,
            "default_frames": self.defaults.frames,
            "default_steps": self.defaults.steps,
            "default_fps": self.fps,
            "text_to_video": self.text_to_video,
            "image_to_video": self.image_to_video,
        }

    def close(self) -> None:
        """Drop the pipelines and give cached accelerator memory back."""
        pipeline, self._main = self._main, None
        self._text_to_video = self._image_to_video = None
        self._worker.shutdown(wait=True)
        if pipeline is not None and self.offload:
            pipeline.remove_all_hooks()
        del pipeline
        torchtools.release_memory(self.device)

    def _pipeline(self) -> DiffusionPipeline:
        if self._main is None:
            raise InvalidRequest("this model was unloaded")
        return self._main

    # ------------------------------------------------------------------ generation

    def generate(self, request: VideoRequest, context: Context) -> VideoResult:
        """Make one clip: progress per denoising step, cancellable between steps."""
        self._pipeline()
        return self._worker.submit(self._generate, request, context).result()

    def _generate(self, request: VideoRequest, context: Context) -> VideoResult:
        if request.init_image is not None:
            if self._image_to_video is None:
                raise UnsupportedCapability(
                    f"{self.pipeline_class} has no image-to-video pipeline",
                    hint="use an image-to-video checkpoint (LTX-Video, Wan2.1-I2V, ...)",
                )
            pipeline = self._image_to_video
        elif self._text_to_video is None:
            raise InvalidRequest(
                f"{self.pipeline_class} makes clips from a first frame: send init_image"
            )
        else:
            pipeline = self._text_to_video
        arguments = self._arguments(request, type(pipeline))
        seed = request.seed if request.seed is not None else random.getrandbits(63)
        arguments["generator"] = torch.Generator("cpu").manual_seed(seed % SEED_LIMIT)
        fps = request.fps or self.fps
        parameters = _pipelines.call_parameters(type(pipeline))
        if "frame_rate" in parameters:
            arguments["frame_rate"] = fps  # LTX conditions its motion on the frame rate
        length = _pipelines.text_length(pipeline)
        if length is not None and "max_sequence_length" in parameters:
            arguments["max_sequence_length"] = length
        context.raise_if_cancelled()
        started = time.perf_counter()
        steps = torchtools.DenoiseSteps(context, started, interruptible=True)
        arguments["callback_on_step_end"] = steps
        torchtools.reset_peak_memory(self.device)
        try:
            output = _pipelines.view(pipeline)(**arguments)
        except ValueError as exc:  # diffusers' own checks of the arguments
            raise InvalidRequest(f"{self.pipeline_class} refused the request: {exc}") from exc
        if context.cancelled:
            raise Cancelled(f"request {context.id} was cancelled")
        frames = _uint8_frames(output.frames)
        count, height, width = frames.shape[0], frames.shape[1], frames.shape[2]
        context.progress("encoding", 0, 1)
        metadata = self._metadata(request, arguments, seed, fps)
        video = encode_mp4(
            [frame.tobytes() for frame in frames],
            (width, height),
            fps,
            Encoding(
                crf=self.options.crf,
                preset=self.options.preset,
                scratch_dir=Path(self.options.scratch_dir) if self.options.scratch_dir else None,
            ),
            {"comment": json.dumps(metadata, ensure_ascii=False)},
        )
        images = tuple(_png(frame) for frame in frames) if request.return_frames else ()
        context.progress("encoding", 1, 1)
        return VideoResult(
            video=video,
            media_type=MEDIA_TYPE,
            frames=count,
            width=width,
            height=height,
            fps=fps,
            seed=seed,
            frame_images=images,
            timings=Timings(
                total_s=time.perf_counter() - started,
                first_output_s=steps.first,
                peak_memory_bytes=torchtools.peak_memory(self.device),
            ),
        )

    def _arguments(self, request: VideoRequest, cls: type[object]) -> dict[str, object]:
        """The pipeline call's keyword arguments for a request, checked against the model."""
        parameters = _pipelines.call_parameters(cls)
        frames = request.frames or self.defaults.frames
        if frames is not None:
            self._check_frames(frames)
        arguments: dict[str, object] = {
            "prompt": request.prompt,
            "num_inference_steps": request.steps or self.defaults.steps,
            "output_type": "np",
        }
        if frames is not None:
            arguments["num_frames"] = frames
        if request.negative_prompt is not None:
            if "negative_prompt" not in parameters:
                raise InvalidRequest(f"{self.pipeline_class} takes no negative prompt")
            arguments["negative_prompt"] = request.negative_prompt
        guidance = request.guidance if request.guidance is not None else self.defaults.guidance
        if guidance is not None and "guidance_scale" in parameters:
            arguments["guidance_scale"] = guidance
        width, height = request.width, request.height
        if request.init_image is not None:
            image = torchtools.decode_image(request.init_image, "the first frame")
            width = width or self._fit(image.width)
            height = height or self._fit(image.height)
            arguments["image"] = image.resize((width, height), Image.Resampling.LANCZOS)
        for name, value in (("width", width), ("height", height)):
            if value is not None:
                arguments[name] = self._side(value, name)
        return arguments

    def _check_frames(self, frames: int) -> None:
        step = self.factors.temporal
        if (frames - 1) % step:
            lower = frames - (frames - 1) % step
            raise InvalidRequest(
                f"frames {frames}: this model ({self.pipeline_class}) makes clips of "
                f"{step}k+1 frames (1, {step + 1}, {2 * step + 1}, ...)",
                hint=f"use {max(1, lower)} or {lower + step}",
            )

    def _side(self, value: int, name: str) -> int:
        multiple = self.factors.spatial
        if value % multiple:
            lower = max(multiple, value - value % multiple)
            raise InvalidRequest(
                f"{name} {value} is not a multiple of {multiple}, as this model "
                f"({self.pipeline_class}) needs",
                hint=f"use {lower} or {lower + multiple}",
            )
        return value

    def _fit(self, side: int) -> int:
        """The largest multiple of the model's factor not above ``side`` (at least one)."""
        multiple = self.factors.spatial
        return max(multiple, side - side % multiple)

    def _metadata(
        self, request: VideoRequest, arguments: dict[str, object], seed: int, fps: int
    ) -> dict[str, JsonValue]:
        fields: dict[str, JsonValue] = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "seed": seed,
            "steps": _json(arguments["num_inference_steps"]),
            "guidance": _json(arguments.get("guidance_scale")),
            "fps": fps,
            "model": self.label,
            "pipeline": self.pipeline_class,
        }
        return {key: value for key, value in fields.items() if value is not None}


def _json(value: object) -> JsonValue:
    return value if isinstance(value, int | float | str) else None


def _uint8_frames(frames: object) -> NDArray[np.uint8]:
    """The first clip of a pipeline's output as ``(frames, height, width, 3)`` bytes."""
    clip = np.asarray(frames, dtype=np.float32)
    if clip.ndim == 5:  # noqa: PLR2004 - (batch, frames, height, width, channels)
        clip = clip[0]
    return (np.clip(clip, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def _png(frame: NDArray[np.uint8]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
