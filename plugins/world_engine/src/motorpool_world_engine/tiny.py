"""A small world model of the plugin's own, with world_engine's interface.

world_engine is not on PyPI, so tests and ``motorpool check`` cannot install it. This
module honours the part of its API the adapter calls — ``WorldEngine(model_uri, quant,
model_config_overrides, device, dtype, load_weights)``, ``append_frame``, ``gen_frame``,
``reset``, ``set_prompt``, ``model_cfg`` and ``CtrlInput`` — with a few convolutions
instead of a diffusion transformer:

- a seed frame is encoded to a latent the size of the frame;
- each generated frame moves that latent by the mouse delta (the view pans: content
  shifts by ``-mouse`` pixels), adds a learned bias per held button and per scroll
  direction, refines it with a residual convolution and decodes it to RGB;
- models with ``temporal_compression`` T > 1 make T sub-frames per pass, returned as
  ``[T, H, W, 3]`` (single-frame models return ``[H, W, 3]``), as Waypoint-1.5 does;
- the context holds ``n_frames`` frames (the seed counts) and overflows with an error,
  as world_engine's static KV cache does; ``reset`` empties it;
- ``set_prompt`` raises ``RuntimeError`` unless ``prompt_conditioning`` is set.

A folder holding :data:`CONFIG_FILE` and ``model.safetensors`` is such a model; the
plugin loads it without world_engine. Imports torch: import it inside load paths only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, cast

import safetensors.torch
import torch
from torch import Tensor, nn

CONFIG_FILE = "motorpool-tiny-world.json"
WEIGHTS_FILE = "model.safetensors"
N_BUTTONS = 256

# safetensors' and torch's annotations leave some parameters untyped: these are exact.
_load_file = cast("Callable[[Path], dict[str, Tensor]]", safetensors.torch.load_file)
_save_file = cast("Callable[[dict[str, Tensor], Path], None]", safetensors.torch.save_file)
_manual_seed = cast("Callable[[int], object]", torch.manual_seed)


@dataclass
class CtrlInput:
    """world_engine's controller input: held key codes, mouse delta, scroll direction."""

    button: set[int] = field(default_factory=set[int])
    mouse: tuple[float, float] = (0.0, 0.0)
    scroll_wheel: int = 0


@dataclass(frozen=True)
class TinyWorldConfig:
    """The model's shape and timing, named as world_engine's ``model_cfg`` names them."""

    model_type: str = "motorpool-tiny-world"
    height: int = 32
    width: int = 48
    channels: int = 8
    """Latent channels."""
    depth: int = 1
    """Residual convolutions per frame: more is slower (the benchmark's mid model)."""
    temporal_compression: int = 1
    """Sub-frames per pass."""
    n_frames: int = 64
    """Frames the context holds (passes, the seed included)."""
    inference_fps: float = 30.0
    prompt_conditioning: bool = False
    seed: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TinyWorldConfig:
        """A config from JSON, rejecting keys it does not have."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known: {sorted(known)}")
        return cls(**data)


class TinyWorldModel(nn.Module):
    """Encoder, action embedding, residual dynamics and decoder."""

    def __init__(self, config: TinyWorldConfig) -> None:
        super().__init__()
        c = config.channels
        self.encoder = nn.Conv2d(3, c, 3, padding=1)
        self.buttons = nn.Embedding(N_BUTTONS, c)
        self.scroll = nn.Embedding(3, c)
        self.prompt = nn.Linear(16, c)
        self.dynamics = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1) for _ in range(config.depth))
        self.decoder = nn.Conv2d(c, 3, 3, padding=1)

    def encode(self, frame: Tensor) -> Tensor:
        """``[H, W, 3]`` uint8 to a ``[C, H, W]`` latent."""
        pixels = frame.permute(2, 0, 1).to(self.encoder.weight.dtype) / 127.5 - 1
        return torch.tanh(self.encoder(pixels.unsqueeze(0))).squeeze(0)

    def step(self, latent: Tensor, action: Tensor, shift: tuple[int, int]) -> Tensor:
        """The next latent: panned by ``shift`` (rows, columns), pushed by ``action``."""
        moved = torch.roll(latent, shifts=shift, dims=(1, 2))
        x = moved + action[:, None, None]
        for conv in self.dynamics:
            x = x + 0.1 * torch.tanh(conv(x.unsqueeze(0)).squeeze(0))
        return torch.tanh(x)

    def decode(self, latent: Tensor) -> Tensor:
        """A ``[C, H, W]`` latent to a ``[H, W, 3]`` uint8 frame."""
        rgb = torch.sigmoid(self.decoder(latent.unsqueeze(0))).squeeze(0)
        return (rgb * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()


class _Config:
    """Attribute access to the config, as world_engine's OmegaConf ``model_cfg`` gives."""

    def __init__(self, config: TinyWorldConfig) -> None:
        for key, value in asdict(config).items():
            setattr(self, key, value)


class WorldEngine:
    """world_engine's ``WorldEngine`` interface over :class:`TinyWorldModel`."""

    def __init__(  # noqa: PLR0917 - world_engine's signature, positional as there
        self,
        model_uri: str,
        quant: str | None = None,
        model_config_overrides: dict[str, Any] | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        load_weights: bool = True,  # noqa: FBT002 - world_engine's signature
    ) -> None:
        if quant is not None:
            raise ValueError(f"the tiny world model has no {quant} quantisation")
        folder = Path(model_uri)
        config = TinyWorldConfig.from_dict(
            json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        )
        if model_config_overrides:
            config = replace(config, **model_config_overrides)
        self.config = config
        self.model_cfg = _Config(config)
        self.device = torch.device(device or "cpu")
        self.dtype = dtype
        self.model = TinyWorldModel(config)
        if load_weights:
            self.model.load_state_dict(_load_file(folder / WEIGHTS_FILE))
        self.model.to(device=self.device, dtype=dtype).eval()
        self.frm_shape = (1, 1, config.channels, config.height, config.width)
        self._latent: Tensor | None = None
        self._prompt = torch.zeros(16, device=self.device, dtype=dtype)
        self.frame_ts = 0

    def reset(self) -> None:
        """Empty the context: the next frame starts from nothing (or a new seed)."""
        self._latent = None
        self.frame_ts = 0

    def set_prompt(self, prompt: str) -> None:
        """Text conditioning (a hash of the text stands in for a text encoder)."""
        if not self.config.prompt_conditioning:
            raise RuntimeError("prompt_conditioning enabled but prompt_encoder is not initialized")
        digest = hashlib.sha256(prompt.encode()).digest()[:16]
        values = torch.tensor(list(digest), dtype=self.dtype, device=self.device)
        self._prompt = values / 255

    @torch.inference_mode()
    def append_frame(self, img: Tensor, ctrl: CtrlInput | None = None) -> Tensor:
        """Put a frame (``[H, W, 3]``, or ``[T, H, W, 3]``: the last counts) in the context."""
        del ctrl
        if img.dtype != torch.uint8:
            raise TypeError(f"frames are uint8, not {img.dtype}")
        last = img[-1] if img.dim() == 4 else img  # noqa: PLR2004 - [T, H, W, 3]
        expected = (self.config.height, self.config.width, 3)
        if tuple(last.shape) != expected:
            raise ValueError(f"a frame is {expected}, not {tuple(last.shape)}")
        self._advance()
        self._latent = self.model.encode(last.to(self.device))
        return img

    @torch.inference_mode()
    def gen_frame(self, ctrl: CtrlInput | None = None, return_img: bool = True) -> Tensor:  # noqa: FBT002 - world_engine's signature
        """The next frame under ``ctrl``: ``[H, W, 3]`` or ``[T, H, W, 3]`` uint8."""
        ctrl = ctrl if ctrl is not None else CtrlInput()
        self._advance()
        if self._latent is None:  # no seed: start from a plain latent
            shape = (self.config.channels, self.config.height, self.config.width)
            self._latent = torch.zeros(shape, device=self.device, dtype=self.dtype)
        action = self._action(ctrl)
        passes = self.config.temporal_compression
        dx, dy = ctrl.mouse
        frames: list[Tensor] = []
        for index in range(passes):  # the mouse delta spread over the sub-frames
            shift = (
                -_share(dy, index, passes),
                -_share(dx, index, passes),
            )
            self._latent = self.model.step(self._latent, action, shift)
            frames.append(self.model.decode(self._latent) if return_img else self._latent)
        return frames[0] if passes == 1 else torch.stack(frames)

    def _advance(self) -> None:
        if self.frame_ts >= self.config.n_frames:
            raise RuntimeError(
                f"the KV cache holds {self.config.n_frames} frames; reset() before more"
            )
        self.frame_ts += 1

    def _action(self, ctrl: CtrlInput) -> Tensor:
        action = self._prompt @ self.model.prompt.weight.T + self.model.prompt.bias
        if ctrl.button:
            ids = torch.tensor(sorted(ctrl.button), device=self.device)
            action = action + self.model.buttons(ids).sum(0)
        scroll = torch.tensor(int(ctrl.scroll_wheel > 0) - int(ctrl.scroll_wheel < 0) + 1)
        return action + self.model.scroll(scroll.to(self.device))


def _share(delta: float, index: int, passes: int) -> int:
    """Whole pixels of ``delta`` that sub-frame ``index`` of ``passes`` moves by."""
    return round(delta * (index + 1) / passes) - round(delta * index / passes)


def build(folder: Path, config: TinyWorldConfig | None = None) -> Path:
    """Write a random-weight tiny world model (config + safetensors) into ``folder``."""
    config = config or TinyWorldConfig()
    folder.mkdir(parents=True, exist_ok=True)
    _manual_seed(config.seed)
    model = TinyWorldModel(config)
    _save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / WEIGHTS_FILE)
    (folder / CONFIG_FILE).write_text(json.dumps(asdict(config), indent=2), encoding="utf-8")
    return folder


MID = TinyWorldConfig(height=256, width=448, channels=16, depth=2)
"""A slower model for the benchmark: 448x256, tens of milliseconds a frame on a CPU core."""
