"""The one class that calls world_engine.

:class:`WorldAdapter` is the whole surface the plugin uses: ``WorldEngine(model_uri,
quant, model_config_overrides, device, dtype)``, ``append_frame``, ``gen_frame``,
``reset``, ``set_prompt`` and ``model_cfg``. Every engine call runs on one thread of
its own (world_engine compiles its passes with CUDA graphs, which belong to the thread
that captured them), and frames come back as ``[T, H, W, 3]`` uint8 NumPy arrays on the
CPU whether the model makes one frame per pass or four sub-frames.

The engine behind it is world_engine's, or :mod:`motorpool_world_engine.tiny`'s model
with the same interface (tests, ``motorpool check``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np
from motorpool import torchtools
from motorpool.errors import InvalidOptions
from motorpool.types import ControlInput

if TYPE_CHECKING:
    import torch
    from numpy.typing import NDArray

T = TypeVar("T")


class Engine(Protocol):
    """world_engine's ``WorldEngine`` as the adapter calls it."""

    model_cfg: Any  # OmegaConf DictConfig in world_engine: read by attribute

    def reset(self) -> None:
        """Empty the KV cache and the frame counter."""
        ...

    def set_prompt(self, prompt: str) -> None:
        """Text conditioning; ``RuntimeError`` without a prompt encoder."""
        ...

    def append_frame(self, img: torch.Tensor, ctrl: Any = None) -> object:  # noqa: ANN401 - CtrlInput
        """Put a frame in the context without denoising."""
        ...

    def gen_frame(self, ctrl: Any = None, return_img: bool = True) -> torch.Tensor:  # noqa: ANN401, FBT002 - world_engine's signature
        """Generate the next frame."""
        ...


class WorldAdapter:
    """A world model behind one device thread; frames in and out as NumPy arrays."""

    def __init__(
        self,
        build: Callable[[], Engine],
        make_control: Callable[..., object],
        device: str,
    ) -> None:
        """Build the engine (``build``) on the device thread; ``make_control`` is ``CtrlInput``."""
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="world-engine")
        self._make_control = make_control
        self.device = device
        try:
            self.engine: Engine = self.call(build)
        except BaseException:  # nothing to run: no device thread or half-built engine left
            self._thread.shutdown(wait=True)
            torchtools.release_memory(device)
            raise
        cfg = self.engine.model_cfg
        n_frames: object = getattr(cfg, "n_frames", None)
        if isinstance(n_frames, int) and n_frames < 2:  # noqa: PLR2004 - the seed and one more
            self.close()
            raise InvalidOptions(
                f"n_frames is {n_frames}: the model's context must hold the seed frame and "
                "at least one more",
                hint="n_frames must be at least 2",
            )
        self.n_frames: int | None = _positive_int(n_frames)
        self.temporal_compression = _positive_int(getattr(cfg, "temporal_compression", 1)) or 1
        fps: object = getattr(cfg, "inference_fps", None)
        self.inference_fps = float(fps) if isinstance(fps, int | float) and fps > 0 else None
        self.prompt_conditioning = bool(getattr(cfg, "prompt_conditioning", None))
        self.model_type = str(getattr(cfg, "model_type", "world_engine"))
        self.frame_shape: tuple[int, int, int] | None = None
        """``(frames per pass, height, width)``, known after :meth:`warm_up`."""

    def call(self, function: Callable[[], T]) -> T:
        """Run ``function`` on the device thread and wait for it."""
        return self._thread.submit(function).result()

    def warm_up(self) -> float:
        """One throwaway frame from an empty context; its seconds. Sets ``frame_shape``."""

        def run() -> float:
            started = time.perf_counter()
            self.engine.reset()
            frames = self._frames(self.engine.gen_frame(self._make_control()))
            self.engine.reset()
            self.frame_shape = (frames.shape[0], frames.shape[1], frames.shape[2])
            return time.perf_counter() - started

        return self.call(run)

    def start(self, seed: NDArray[np.uint8]) -> None:
        """Empty the context and put the seed frame (``[H, W, 3]``) in it."""

        def run() -> None:
            import torch  # noqa: PLC0415 - loaded already: the engine is a torch model

            self.engine.reset()
            image = torch.as_tensor(np.ascontiguousarray(seed), device=self.device)
            passes = self.frame_shape[0] if self.frame_shape else 1
            if passes > 1:  # a model of sub-frames takes its seed as a whole pass
                image = image.unsqueeze(0).expand(passes, *image.shape).contiguous()
            self.engine.append_frame(image)

        self.call(run)

    def generate(self, control: ControlInput) -> NDArray[np.uint8]:
        """The next pass under ``control``: ``[T, H, W, 3]`` uint8 on the CPU."""
        ctrl = self._make_control(
            button=set(control.buttons),
            mouse=(control.mouse_dx, control.mouse_dy),
            scroll_wheel=control.scroll,
        )  # a new one each time: world_engine turns its fields into tensors in place
        return self.call(lambda: self._frames(self.engine.gen_frame(ctrl)))

    def set_prompt(self, prompt: str) -> None:
        """Text conditioning for the next frames."""
        self.call(lambda: self.engine.set_prompt(prompt))

    def close(self) -> None:
        """Stop the device thread (after what it runs) and drop the engine."""
        self._thread.shutdown(wait=True)
        del self.engine

    @staticmethod
    def _frames(frame: torch.Tensor) -> NDArray[np.uint8]:
        # A copy, also on the CPU: the frames are encoded on another thread while the engine
        # makes the next ones, and an engine may reuse its output buffer.
        array: NDArray[np.uint8] = frame.detach().to("cpu", copy=True).numpy()
        return array[None] if array.ndim == 3 else array  # noqa: PLR2004 - [H, W, 3]


def _positive_int(value: object) -> int | None:
    return value if isinstance(value, int) and value > 0 else None
