"""The test engine plugin: every hook, every modality the core defines, in pure Python.

A model is a JSON file (``*.mptest.json``) holding a vocabulary and a chat template.
Text is sampled word by word from the vocabulary with a seeded RNG, images are seeded
gradients, videos are runs of such gradients (see :func:`video_events`), and a world
session shifts its frame with the mouse. Options make the engine slow, large, exclusive
or failing on purpose, which the host's tests rely on.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from motorpool import hookimpl
from motorpool.engine import Context, LoadedModel, ResolvedSource, TinyModel
from motorpool.errors import InvalidModel, InvalidRequest, UnsupportedCapability
from motorpool.types import (
    Accelerator,
    Capability,
    ChatRequest,
    CompletionRequest,
    ControlInput,
    Device,
    FinishReason,
    FrameBatch,
    GeneratedImage,
    GenerationRequest,
    ImageRequest,
    ImageResult,
    ModelSpec,
    ProbeReport,
    ProgressEvent,
    ResultEvent,
    SeedFrame,
    SessionConfig,
    SessionInfo,
    StreamEvent,
    TextResult,
    Timings,
    TokenEvent,
    Usage,
    VideoRequest,
    VideoResult,
)
from pydantic import BaseModel, ConfigDict, Field

from motorpool_testengine._png import encode_png

FORMAT = "motorpool-test"
SUFFIX = ".mptest.json"
EOS = "<eos>"
DEFAULT_IMAGE_SIDE = 32
DEFAULT_STEPS = 4
DEFAULT_VIDEO_FRAMES = 5
DEFAULT_VIDEO_FPS = 8
VIDEO_MEDIA_TYPE = "application/x-motorpool-frames"
"""The test engine's video container: the frames' PNG files back to back, nothing else."""
LOAD_TICK_S = 0.01
CAPABILITIES = frozenset(
    {
        Capability.COMPLETION,
        Capability.CHAT,
        Capability.IMAGE,
        Capability.IMAGE_TO_IMAGE,
        Capability.VIDEO,
        Capability.WORLD,
    }
)


class Options(BaseModel):
    """Load options of the test engine."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token_delay_s: float = Field(default=0.0, ge=0, le=10)
    step_delay_s: float = Field(default=0.0, ge=0, le=10)
    world_fps: float | None = Field(default=None, gt=0)
    """The world 'model''s own frame rate, for realtime pacing."""
    world_frames: int | None = Field(default=None, gt=0)
    """Frames its context holds (auto-reset after that)."""
    fail_after_tokens: int | None = Field(default=None, ge=0)
    memory_bytes: int | None = Field(default=None, ge=0)
    max_concurrency: int = Field(default=1, ge=1)
    exclusive: bool = False
    fail_load: bool = False
    load_delay_s: float = Field(default=0.0, ge=0, le=60)


@dataclass(frozen=True, slots=True)
class TestModel:
    """The loaded model: its vocabulary, template and options."""

    vocab: tuple[str, ...]
    chat_template: str
    options: Options


@hookimpl
def motorpool_probe(deep: bool) -> ProbeReport:
    del deep  # nothing heavier to import
    return ProbeReport(
        ready=True,
        capabilities=CAPABILITIES,
        formats=(FORMAT,),
        devices=(Device(accelerator=Accelerator.CPU, name="python"),),
        engine_version="0.1.0",
    )


@hookimpl
def motorpool_match(spec: ModelSpec, path: Path | None) -> int | None:
    del spec
    return 100 if path is not None and path.name.endswith(SUFFIX) else None


@hookimpl
def motorpool_tiny_model(directory: Path) -> TinyModel:
    path = write_model(directory / f"tiny{SUFFIX}")
    spec = ModelSpec(plugin="testengine", source=str(path))
    return TinyModel(
        spec=spec,
        request=ChatRequest.model_validate(
            {"messages": [{"role": "user", "content": "Say something."}], "max_tokens": 8}
        ),
    )


def write_model(path: Path, words: int = 64) -> Path:
    """Write a test model file with a vocabulary of ``words`` words."""
    vocab = [f"w{i}" for i in range(words)] + [EOS]
    template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}<|assistant|>"
    path.write_text(json.dumps({"format": FORMAT, "vocab": vocab, "chat_template": template}))
    return path


@hookimpl
def motorpool_estimate_memory(source: ResolvedSource) -> int | None:
    return source.options(Options).memory_bytes


@hookimpl
def motorpool_load(source: ResolvedSource, context: Context) -> LoadedModel[TestModel]:
    options = source.options(Options)
    ticks = round(options.load_delay_s / LOAD_TICK_S)
    for tick in range(ticks):  # a slow load, cancellable between ticks
        context.raise_if_cancelled()
        context.progress("load", tick, ticks + 1)
        time.sleep(LOAD_TICK_S)
    if options.fail_load:
        raise RuntimeError("failing on purpose (fail_load=true)")
    path = source.path
    if path.is_dir():  # a hub snapshot or a folder: take the model file inside
        path = next(iter(sorted(path.glob(f"*{SUFFIX}"))), path / f"missing{SUFFIX}")
    try:
        document: object = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidModel(f"{path} is not a test-engine model: {exc}") from exc
    fields = cast(dict[str, object], document) if isinstance(document, dict) else {}
    vocab = fields.get("vocab")
    if fields.get("format") != FORMAT or not isinstance(vocab, list) or not vocab:
        raise InvalidModel(f"{path} is not a test-engine model (format != {FORMAT!r})")
    words = tuple(str(word) for word in cast(list[object], vocab))
    model = TestModel(words, str(fields.get("chat_template", "")), options)
    context.progress("load", ticks + 1, ticks + 1)
    return LoadedModel(
        handle=model,
        capabilities=CAPABILITIES,
        memory_bytes=options.memory_bytes or source.size_bytes(),
        max_concurrency=options.max_concurrency,
        exclusive=options.exclusive,
        details={"vocab_size": len(model.vocab)},
    )


@hookimpl
def motorpool_unload(model: LoadedModel[TestModel]) -> None:
    del model  # nothing held beyond the Python object


@hookimpl
def motorpool_stream(
    model: LoadedModel[TestModel], request: GenerationRequest, context: Context
) -> Iterator[StreamEvent]:
    """The only run hook here: the host derives ``generate`` by draining the stream."""
    match request:
        case CompletionRequest() | ChatRequest():
            return _stream_text(model.handle, request, context)
        case ImageRequest():
            return image_events(model.handle, request, context)
        case VideoRequest():
            return video_events(model.handle, request, context)
    # Every kind the core defines is matched above; a kind added later lands here.
    raise UnsupportedCapability(f"the test engine does not do {request.kind}")


def _prompt_of(model: TestModel, request: CompletionRequest | ChatRequest) -> str:
    if isinstance(request, CompletionRequest):
        return request.prompt
    if request.chat_template is not None and "{%" not in request.chat_template:
        raise InvalidRequest("chat_template must be a Jinja template")
    return "".join(f"<|{m.role}|>{m.content}\n" for m in request.messages) + "<|assistant|>"


def _stream_text(
    model: TestModel, request: CompletionRequest | ChatRequest, context: Context
) -> Iterator[StreamEvent]:
    started = time.perf_counter()
    prompt = _prompt_of(model, request)
    sampling = request.sampling
    seed = sampling.seed if sampling.seed is not None else sum(prompt.encode())
    rng = random.Random(seed)
    temperature = 1.0 if sampling.temperature is None else sampling.temperature
    text, produced, first = "", 0, None
    finish = FinishReason.LENGTH
    while produced < request.max_tokens:
        if context.cancelled:
            finish = FinishReason.CANCELLED
            break
        if (
            model.options.fail_after_tokens is not None
            and produced >= model.options.fail_after_tokens
        ):
            raise RuntimeError(f"failing on purpose after {produced} tokens")
        if model.options.token_delay_s:
            time.sleep(model.options.token_delay_s)
        index = produced % len(model.vocab) if temperature == 0 else rng.randrange(len(model.vocab))
        word = model.vocab[index]
        produced += 1
        if word == EOS:
            finish = FinishReason.STOP
            break
        piece = word if not text else f" {word}"
        stop_at = _first_stop(text + piece, request.stop)
        if stop_at is not None:
            tail = (text + piece)[:stop_at][len(text) :]
            if tail:
                yield TokenEvent(text=tail)
            text += tail
            finish = FinishReason.STOP
            break
        first = first if first is not None else time.perf_counter() - started
        text += piece
        yield TokenEvent(text=piece)
    total = time.perf_counter() - started
    yield ResultEvent(
        result=TextResult(
            text=text,
            finish_reason=finish,
            usage=Usage(prompt_tokens=len(prompt.split()), completion_tokens=produced),
            timings=Timings(
                total_s=total,
                first_output_s=first,
                output_tokens_per_s=produced / total if total > 0 else None,
            ),
        )
    )


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def _canvas(request: ImageRequest | VideoRequest) -> tuple[int, int]:
    """Width and height of the output: the request's, or the default; multiples of 8."""
    width = request.width or DEFAULT_IMAGE_SIDE
    height = request.height or DEFAULT_IMAGE_SIDE
    if width % 8 or height % 8:
        raise InvalidRequest(f"width and height must be multiples of 8, got {width}x{height}")
    return width, height


def _denoise(model: TestModel, steps: int, context: Context) -> Iterator[ProgressEvent]:
    """One progress event per step, paced by ``step_delay_s``, cancellable between steps."""
    for step in range(steps):
        context.raise_if_cancelled()
        if model.options.step_delay_s:
            time.sleep(model.options.step_delay_s)
        yield ProgressEvent(stage="denoise", step=step + 1, total=steps)


def image_events(
    model: TestModel, request: ImageRequest, context: Context
) -> Iterator[StreamEvent]:
    """One progress event per step, then the images."""
    started = time.perf_counter()
    width, height = _canvas(request)
    steps = request.steps or DEFAULT_STEPS
    base_seed = request.seed if request.seed is not None else 0
    yield from _denoise(model, steps, context)
    images = tuple(
        GeneratedImage(
            png=encode_png(width, height, seed=base_seed + i),
            width=width,
            height=height,
            seed=base_seed + i,
        )
        for i in range(request.count)
    )
    yield ResultEvent(
        result=ImageResult(
            images=images, steps=steps, timings=Timings(total_s=time.perf_counter() - started)
        )
    )


def video_events(
    model: TestModel, request: VideoRequest, context: Context
) -> Iterator[StreamEvent]:
    """One progress event per denoising step, one for encoding, then the clip.

    The clip is not a real video: its bytes are a test container (media type
    ``application/x-motorpool-frames``) holding the frames' PNG files back to back, so a
    test can count the frames by PNG signature or split them with
    :func:`motorpool_testengine._png.split_pngs`. Frame ``i`` is the gradient of seed
    ``seed + i``, so the same seed gives the same bytes.
    """
    started = time.perf_counter()
    frames = request.frames or DEFAULT_VIDEO_FRAMES
    if (frames - 1) % 4:
        raise InvalidRequest(
            f"frames must be one more than a multiple of 4 (1, 5, 9, 13, ...), got {frames}"
        )
    width, height = _canvas(request)
    fps = request.fps or DEFAULT_VIDEO_FPS
    steps = request.steps or DEFAULT_STEPS
    base_seed = request.seed if request.seed is not None else 0
    yield from _denoise(model, steps, context)
    context.raise_if_cancelled()
    pngs = tuple(encode_png(width, height, seed=base_seed + i) for i in range(frames))
    yield ProgressEvent(stage="encoding", step=1, total=1)
    yield ResultEvent(
        result=VideoResult(
            video=b"".join(pngs),
            media_type=VIDEO_MEDIA_TYPE,
            frames=frames,
            width=width,
            height=height,
            fps=fps,
            seed=base_seed,
            frame_images=pngs if request.return_frames else (),
            timings=Timings(total_s=time.perf_counter() - started),
        )
    )


class TestSession:
    """A world 'model': the frame is a colour that the mouse moves through."""

    def __init__(self, model: TestModel, config: SessionConfig, seed: SeedFrame) -> None:
        self._model = model
        self._config = config
        self._seed = seed
        self._frame_id = 0
        self._colour = [seed.image[-1] % 256, 128, 64]
        self.prompt = config.prompt
        self.closed = False
        self.info = SessionInfo(
            width=16,
            height=16,
            fps=model.options.world_fps,
            max_frames=model.options.world_frames,
            prompt_conditioning=True,
        )

    def step(self, control: ControlInput) -> FrameBatch:
        started = time.perf_counter()
        if self._model.options.step_delay_s:
            time.sleep(self._model.options.step_delay_s)
        self._colour[0] = int(self._colour[0] + control.mouse_dx) % 256
        self._colour[1] = int(self._colour[1] + control.mouse_dy) % 256
        self._colour[2] = (self._colour[2] + len(control.buttons)) % 256
        frame = encode_png(16, 16, bytes(self._colour))
        batch = FrameBatch(
            frame_id=self._frame_id,
            frames=(frame,),
            media_type="image/png",
            width=16,
            height=16,
            generation_ms=(time.perf_counter() - started) * 1000,
            client_ts=control.client_ts,
        )
        self._frame_id += 1
        return batch

    def reset(self) -> None:
        self._frame_id = 0
        self._colour = [self._seed.image[-1] % 256, 128, 64]

    def set_prompt(self, prompt: str) -> None:
        self.prompt = prompt

    def close(self) -> None:
        self.closed = True


@hookimpl
def motorpool_open_session(
    model: LoadedModel[TestModel], config: SessionConfig, seed: SeedFrame, context: Context
) -> TestSession:
    context.progress("warmup", 1, 1)
    return TestSession(model.handle, config, seed)
