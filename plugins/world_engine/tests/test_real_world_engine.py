"""The plugin over the real world_engine, where it is installed (CI cannot: not on PyPI).

A random-weight world model of world_engine's own classes, built small enough for a CPU
(2 layers, d_model 64, a 512² autoencoder of 6 tiny stages): loaded through the host,
warmed up, stepped past its context (auto-reset), recorded. Run it where world_engine is
installed (``pip install "world_engine @ git+https://github.com/Overworldai/world_engine.git"``);
on a CPU set ``TORCHDYNAMO_DISABLE=1`` to skip torch.compile's minutes-long first call.
"""

from __future__ import annotations

import importlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from motorpool import Host
from motorpool.types import ControlInput, FrameBatch, SeedFrame, SessionConfig
from PIL import Image

from .conftest import spec

world_engine: Any = pytest.importorskip("world_engine", reason="world_engine is not installed")
omegaconf: Any = pytest.importorskip("omegaconf")
safetensors_torch: Any = pytest.importorskip("safetensors.torch")

N_FRAMES = 8


def build_real_tiny(folder: Path) -> Path:
    """A random world_engine model (config.yaml + model.safetensors) and its autoencoder."""
    # world_engine is untyped and absent from the type checker's environment: Any.
    autoencoder_class: Any = importlib.import_module("world_engine.ae_nn").AutoEncoder
    world_model_class: Any = importlib.import_module("world_engine.model.world_model").WorldModel
    torch: Any = importlib.import_module("torch")
    torch.manual_seed(0)
    conf = omegaconf.OmegaConf
    ae = folder / "ae"
    ae.mkdir(parents=True)
    ae_config = conf.create({
        "model": {
            "channels": 3, "ch_0": 8, "ch_max": 16, "latent_channels": 4,
            "encoder_blocks_per_stage": [1] * 6, "decoder_blocks_per_stage": [1] * 6,
            "skip_logvar": True,
        }
    })  # fmt: skip
    for name in ("encoder_conf.yml", "decoder_conf.yml"):
        conf.save(ae_config, ae / name)
    autoencoder = autoencoder_class(ae_config.model, ae_config.model)
    for part in ("encoder", "decoder"):
        weights = getattr(autoencoder, part).state_dict()
        safetensors_torch.save_file(
            {k: v.contiguous() for k, v in weights.items()}, ae / f"{part}.safetensors"
        )
    model_dir = folder / "world"
    model_dir.mkdir()
    config = conf.create({
        "model_type": "waypoint-1", "ae_uri": str(ae),
        "channels": 4, "height": 4, "width": 4, "patch": [2, 2], "tokens_per_frame": 16,
        "d_model": 64, "n_heads": 2, "n_kv_heads": 1, "n_layers": 2, "mlp_ratio": 2,
        "n_buttons": 256, "noise_conditioning": "wan",
        "ctrl_conditioning": "mlp_fusion", "ctrl_cond_dropout": 0.0,
        "ctrl_conditioning_period": 1, "prompt_conditioning": None,
        "prompt_conditioning_period": 1, "prompt_embedding_dim": 64, "prompt_cond_dropout": 0.0,
        "value_residual": True, "gated_attn": True,
        "local_window": 4, "global_window": 8, "global_attn_period": 2,
        "global_attn_offset": 0, "global_pinned_dilation": 2,
        "n_frames": N_FRAMES, "base_fps": 60, "inference_fps": 60, "temporal_compression": 1,
        "scheduler_sigmas": [1.0, 0.9, 0.75, 0.3, 0.0],
    })  # fmt: skip
    conf.save(config, model_dir / "config.yaml")
    model = world_model_class(config)
    safetensors_torch.save_file(  # tied weights: each tensor its own copy
        {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()},
        model_dir / "model.safetensors",
    )
    return model_dir


def test_a_session_on_the_real_world_engine(
    host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Load, warm up, step past the context (auto-reset), record: real frames, typed info."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a local model: nothing may be fetched
    folder = build_real_tiny(tmp_path / "model")
    pixels = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, "PNG")
    progress: list[str] = []
    recording = tmp_path / "session.mp4"
    config = SessionConfig(record_path=str(recording))
    info = host.load(spec(folder))
    assert info.details["backend"] == "world_engine"
    assert info.details["n_frames"] == N_FRAMES
    with host.session(
        info.id,
        seed=SeedFrame(image=png.getvalue()),
        config=config,
        on_progress=lambda e: progress.append(e.stage),
    ) as session:
        assert progress == ["warmup", "warmup"]
        assert session.info.frames_per_step == 1
        assert session.info.max_frames == N_FRAMES - 1  # the seed takes one
        batches: list[FrameBatch] = []
        for step in range(N_FRAMES + 2):
            session.control(ControlInput(buttons=frozenset({65}), mouse_dx=1.0, client_ts=step))
            batches.append(session.step())
    width, height = session.info.width, session.info.height
    assert all((b.width, b.height) == (width, height) for b in batches)
    assert all(Image.open(io.BytesIO(b.frames[0])).size == (width, height) for b in batches)
    assert [b.reset for b in batches].count("auto") == 1
    assert batches[N_FRAMES - 1].reset == "auto"
    assert [b.client_ts for b in batches] == list(range(N_FRAMES + 2))
    assert recording.is_file()
    assert not list(tmp_path.glob("*.partial.mp4"))
