"""The loaded pipeline: a folder loaded with diffusers, and one generation on it.

Imported only inside ``motorpool_load`` and the tiny model builder: importing it imports
torch, diffusers and transformers. A text-to-image pipeline is loaded through
``AutoPipelineForText2Image`` when diffusers knows its family (an inpainting folder then
gives its text-to-image twin), else as the class ``model_index.json`` names; the
image-to-image pipeline of the same family shares its components
(``AutoPipelineForImage2Image.from_pipe``: no second copy of the weights).
"""

from __future__ import annotations

import inspect
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

import diffusers
import torch
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import logging as diffusers_logging
from motorpool import torchtools
from motorpool.diffusers_folder import PipelineFolder
from motorpool.engine import Context
from motorpool.errors import (
    Cancelled,
    InvalidModel,
    InvalidOptions,
    InvalidRequest,
    UnsupportedCapability,
)
from motorpool.types import GeneratedImage, ImageRequest, ImageResult, Timings
from PIL import Image
from pydantic import JsonValue
from transformers.utils import logging as transformers_logging

from motorpool_diffusers_image import _pipelines
from motorpool_diffusers_image._folder import VIDEO_PLUGIN_HINT
from motorpool_diffusers_image._options import DiffusersImageOptions
from motorpool_diffusers_image._png import encode_png
from motorpool_diffusers_image._prompts import TextLimit, text_limits, truncation

SEED_LIMIT = 2**63
UNET_MULTIPLE = 8
"""The UNet pipelines (Stable Diffusion 1.x/2.x, SDXL) check for multiples of 8 themselves."""
_LOAD_ERRORS = (OSError, ValueError, KeyError, TypeError, AttributeError, ImportError)
"""What diffusers and transformers raise for a folder they cannot use: missing or
mismatched weights, configs of another version, a tokenizer they cannot read."""
_SCHEDULER_EXAMPLES = "DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler"


def load(folder: PipelineFolder, options: DiffusersImageOptions, label: str) -> DiffusersModel:
    """Load a checked pipeline folder onto the device the options pick."""
    cls = _pipelines.pipeline_class(folder.class_name)
    if cls is None:
        raise InvalidModel(
            f"diffusers {diffusers.__version__} has no pipeline {folder.class_name!r} "
            f"({folder.path.name})",
            hint="upgrade diffusers if a newer release has it: pip install -U diffusers",
        )
    if _pipelines.makes_video(cls):
        raise InvalidModel(
            f"{folder.path.name} is a video pipeline ({cls.__name__}), not a text-to-image one",
            hint=VIDEO_PLUGIN_HINT,
        )
    mapped = _pipelines.text_to_image_class(cls)
    _check_text_to_image(mapped or cls, folder)
    scheduler = _scheduler_class(options.scheduler) if options.scheduler else None
    device = torchtools.resolve_device(options.device)
    dtype = torchtools.resolve_dtype(options.dtype, device)
    diffusers_logging.disable_progress_bar()  # the host reports load progress itself
    transformers_logging.disable_progress_bar()
    arguments: dict[str, object] = {
        "dtype": dtype,
        "local_files_only": options.local_files_only,
        "variant": options.variant,
    }
    try:
        if mapped is not None:
            pipeline = _pipelines.load_text_to_image(str(folder.path), **arguments)
        else:
            pipeline = _pipelines.load_as(cls, str(folder.path), **arguments)
    except _LOAD_ERRORS as exc:
        raise InvalidModel(
            f"diffusers could not load {folder.path.name} ({folder.class_name}): "
            f"{type(exc).__name__}: {exc}",
            hint="check that the folder is a complete pipeline (model_index.json, each "
            "component's config and weights, the tokenizers)",
        ) from exc
    if scheduler is not None:
        _swap_scheduler(pipeline, scheduler)
    if options.attention_slicing:
        pipeline.enable_attention_slicing()
    offload = torchtools.place(pipeline, pipeline.components.get("vae"), options, device)
    image_to_image = _pipelines.image_to_image_of(pipeline)
    for each in (pipeline, image_to_image):
        if each is not None:
            _pipelines.view(each).set_progress_bar_config(disable=True)
    return DiffusersModel(
        text_to_image=pipeline,
        image_to_image=image_to_image,
        options=options,
        label=label,
        device=device,
        dtype=str(dtype).removeprefix("torch."),
        offload=offload,
        multiple=_size_multiple(pipeline),
        limits=text_limits(pipeline),
    )


def _check_text_to_image(cls: type[DiffusionPipeline], folder: PipelineFolder) -> None:
    """Refuse a pipeline class that needs more than a prompt (an upscaler, an inpainter)."""
    parameters = _pipelines.call_parameters(cls)
    needs_image = {"image", "mask_image"} & set(parameters)
    if "prompt" not in parameters or needs_image:
        what = f"it needs {', '.join(sorted(needs_image))}" if needs_image else "it takes no prompt"
        raise InvalidModel(
            f"{folder.path.name} ({cls.__name__}) is not a text-to-image pipeline: {what}",
            hint="give a text-to-image pipeline (Stable Diffusion, SDXL, SD3, FLUX, ...)",
        )


def _scheduler_class(name: str) -> type[SchedulerMixin]:
    found: object = getattr(diffusers, name, None)
    if isinstance(found, type) and issubclass(found, SchedulerMixin):
        return found
    raise InvalidOptions(
        f"scheduler {name!r}: diffusers {diffusers.__version__} has no such scheduler",
        hint=f"name a diffusers scheduler class, for example {_SCHEDULER_EXAMPLES}",
    )


def _swap_scheduler(pipeline: DiffusionPipeline, cls: type[SchedulerMixin]) -> None:
    accepted = _pipelines.scheduler_names(pipeline)
    if cls.__name__ not in accepted:
        raise InvalidOptions(
            f"scheduler {cls.__name__} does not fit this pipeline ({type(pipeline).__name__})",
            hint=f"this pipeline accepts: {', '.join(accepted)}",
        )
    _pipelines.swap_scheduler(pipeline, cls)


def _size_multiple(pipeline: DiffusionPipeline) -> int:
    """What width and height must be multiples of, for this pipeline.

    The image processor's factor (FLUX doubles the VAE's for its 2x2 latent patches), the
    transformer's patches (SD3) and the UNet pipelines' own check of multiples of 8.
    """
    vae_factor = int(getattr(pipeline, "vae_scale_factor", UNET_MULTIPLE))
    processor = getattr(pipeline, "image_processor", None)
    config = getattr(processor, "config", None)
    multiple = int(getattr(config, "vae_scale_factor", vae_factor))
    patch = getattr(pipeline, "patch_size", None)
    if isinstance(patch, int):
        multiple = math.lcm(multiple, vae_factor * patch)
    if "unet" in pipeline.components:
        multiple = math.lcm(multiple, UNET_MULTIPLE)
    return multiple


def _native_size(pipeline: DiffusionPipeline) -> int | None:
    """The side of the images a pipeline makes when given no size, if it tells."""
    sample: object = getattr(pipeline, "default_sample_size", None)
    unet: object = pipeline.components.get("unet")
    if sample is None and unet is not None:
        sample = getattr(getattr(unet, "config", None), "sample_size", None)
    factor: object = getattr(pipeline, "vae_scale_factor", None)
    if isinstance(sample, int) and isinstance(factor, int):
        return sample * factor
    return None


@dataclass(frozen=True, slots=True)
class Defaults:
    """A pipeline's own defaults, read from its ``__call__`` signature."""

    steps: int
    guidance: float | None
    strength: float | None


def _defaults(
    text_to_image: DiffusionPipeline, image_to_image: DiffusionPipeline | None
) -> Defaults:
    def default(cls: type[object] | None, name: str) -> float | None:
        parameter = _pipelines.call_parameters(cls).get(name) if cls is not None else None
        value: object = parameter.default if parameter is not None else None
        return float(value) if isinstance(value, int | float) else None

    steps = default(type(text_to_image), "num_inference_steps")
    return Defaults(
        steps=int(steps) if steps else 50,
        guidance=default(type(text_to_image), "guidance_scale"),
        strength=default(type(image_to_image) if image_to_image is not None else None, "strength"),
    )


class DiffusersModel:
    """One loaded pipeline (and its image-to-image twin). The host runs one request at a time."""

    def __init__(
        self,
        *,
        text_to_image: DiffusionPipeline,
        image_to_image: DiffusionPipeline | None,
        options: DiffusersImageOptions,
        label: str,
        device: str,
        dtype: str,
        offload: bool,
        multiple: int,
        limits: list[TextLimit],
    ) -> None:
        self._text_to_image: DiffusionPipeline | None = text_to_image
        self._image_to_image = image_to_image
        self.options, self.label, self.device, self.dtype = options, label, device, dtype
        self.offload, self.multiple, self.limits = offload, multiple, limits
        self.pipeline_class = type(text_to_image).__name__
        self.defaults = _defaults(text_to_image, image_to_image)
        self.native_size = _native_size(text_to_image)
        self.memory_bytes = torchtools.module_bytes(text_to_image.components.values())

    @property
    def pipeline(self) -> DiffusionPipeline:
        """The text-to-image pipeline; gone once the model is closed."""
        if self._text_to_image is None:
            raise InvalidRequest("this model was unloaded")
        return self._text_to_image

    @property
    def image_to_image(self) -> bool:
        """Whether the pipeline's family has an image-to-image pipeline."""
        return self._image_to_image is not None

    def details(self) -> dict[str, JsonValue]:
        """Facts shown to users."""
        scheduler = self.pipeline.components.get("scheduler")
        return {
            "pipeline": self.pipeline_class,
            "device": self.device,
            "dtype": self.dtype,
            "cpu_offload": self.offload,
            "scheduler": type(scheduler).__name__,
            "size_multiple": self.multiple,
            "native_size": self.native_size,
            "default_steps": self.defaults.steps,
            "image_to_image": self.image_to_image,
            "variant": self.options.variant,
        }

    def close(self) -> None:
        """Drop the pipelines and give cached accelerator memory back."""
        pipeline, self._text_to_image, self._image_to_image = self._text_to_image, None, None
        if pipeline is not None and self.offload:
            pipeline.remove_all_hooks()
        del pipeline
        torchtools.release_memory(self.device)

    # ------------------------------------------------------------------ generation

    def generate(self, request: ImageRequest, context: Context) -> ImageResult:
        """Run one request: progress per denoising step, cancellable between steps."""
        pipeline = self.pipeline
        if request.init_image is not None:
            if self._image_to_image is None:
                raise UnsupportedCapability(f"{self.pipeline_class} has no image-to-image pipeline")
            pipeline = self._image_to_image
        parameters = _pipelines.call_parameters(type(pipeline))
        steps = request.steps or self.defaults.steps
        arguments = self._arguments(request, parameters, steps)
        seed = request.seed if request.seed is not None else random.getrandbits(63)
        seeds = [(seed + index) % SEED_LIMIT for index in range(request.count)]
        arguments["generator"] = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        self._warn_if_truncated(request, context)
        context.raise_if_cancelled()
        started = time.perf_counter()
        callback = torchtools.DenoiseSteps(
            context, started, interruptible=hasattr(type(pipeline), "interrupt")
        )
        arguments["callback_on_step_end"] = callback
        torchtools.reset_peak_memory(self.device)
        try:
            output = _pipelines.view(pipeline)(**arguments)
        except torchtools.StopDenoising as exc:
            raise Cancelled(f"request {context.id} was cancelled") from exc
        except ValueError as exc:  # diffusers' own checks of the arguments
            raise InvalidRequest(f"{self.pipeline_class} refused the request: {exc}") from exc
        if context.cancelled:
            raise Cancelled(f"request {context.id} was cancelled")
        level = self.options.png_compress_level
        images = tuple(
            GeneratedImage(
                png=encode_png(image, self._metadata(request, arguments, s), level),
                width=image.width,
                height=image.height,
                seed=s,
            )
            for image, s in zip(output.images, seeds, strict=True)
        )
        return ImageResult(
            images=images,
            steps=steps,
            timings=Timings(
                total_s=time.perf_counter() - started,
                first_output_s=callback.first,
                peak_memory_bytes=torchtools.peak_memory(self.device),
            ),
        )

    def _arguments(
        self, request: ImageRequest, parameters: Mapping[str, inspect.Parameter], steps: int
    ) -> dict[str, object]:
        """The pipeline call's keyword arguments for a request, checked against the model."""
        width, height = self._side(request.width, "width"), self._side(request.height, "height")
        arguments: dict[str, object] = {
            "prompt": request.prompt,
            "num_inference_steps": steps,
            "num_images_per_prompt": request.count,
            "output_type": "pil",
        }
        if request.negative_prompt is not None:
            if "negative_prompt" not in parameters:
                raise InvalidRequest(f"{self.pipeline_class} takes no negative prompt")
            arguments["negative_prompt"] = request.negative_prompt
        guidance = request.guidance if request.guidance is not None else self.defaults.guidance
        if guidance is not None and "guidance_scale" in parameters:
            arguments["guidance_scale"] = guidance
        if request.init_image is not None:
            image = torchtools.decode_image(request.init_image, "the input image")
            width = width or self._fit(image.width)
            height = height or self._fit(image.height)
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.LANCZOS)
            strength = request.strength or self.defaults.strength or 0.8
            if int(steps * strength) < 1:
                raise InvalidRequest(
                    f"{steps} steps at strength {strength} leave no denoising step",
                    hint=f"use at least {math.ceil(1 / strength)} steps, or a higher strength",
                )
            arguments |= {"image": image, "strength": strength}
        if "width" in parameters and (width is not None or height is not None):
            # Some pipelines (Stable Diffusion) drop a side given alone: give both.
            arguments["width"] = width or self.native_size
            arguments["height"] = height or self.native_size
        return arguments

    def _side(self, value: int | None, name: str) -> int | None:
        if value is not None and value % self.multiple:
            lower = max(self.multiple, value - value % self.multiple)
            raise InvalidRequest(
                f"{name} {value} is not a multiple of {self.multiple}, as this model "
                f"({self.pipeline_class}) needs",
                hint=f"use {lower} or {lower + self.multiple}",
            )
        return value

    def _fit(self, side: int) -> int:
        """The largest multiple of the model's factor not above ``side`` (at least one)."""
        return max(self.multiple, side - side % self.multiple)

    def _warn_if_truncated(self, request: ImageRequest, context: Context) -> None:
        for text in (request.prompt, request.negative_prompt):
            if text is None:
                continue
            cut = truncation(self.limits, text)
            if cut is None:
                continue
            context.log.warning(
                "prompt truncated",
                encoder=cut.encoder,
                tokens=cut.tokens,
                kept=cut.kept,
                negative=text is request.negative_prompt,
            )
            context.progress("prompt_truncated", cut.kept, cut.tokens)
            return

    def _metadata(
        self, request: ImageRequest, arguments: Mapping[str, object], seed: int
    ) -> dict[str, str]:
        fields: dict[str, object] = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "seed": seed,
            "steps": arguments["num_inference_steps"],
            "guidance": arguments.get("guidance_scale"),
            "strength": arguments.get("strength"),
            "model": self.label,
            "pipeline": self.pipeline_class,
            "scheduler": type(self.pipeline.components.get("scheduler")).__name__,
        }
        return {key: str(value) for key, value in fields.items() if value is not None}
