"""Bad model folders and bad options: typed errors with a hint, and a host that carries on.

Each broken folder is a copy of the tiny model with one thing wrong, loaded through the
real host, so what is checked is what a user sees.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import mlx_lm
import pytest
from motorpool import Host
from motorpool.engine import ResolvedSource
from motorpool.errors import InvalidModel, InvalidOptions, MemoryBudgetExceeded
from motorpool.types import CompletionRequest, ModelOrigin, ModelSpec, ModelStatus, TextResult
from motorpool_mlx import plugin

Breaker = Callable[[Path], Path]


def edit_config(folder: Path, **changes: object) -> None:
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config.update(changes)
    config_file.write_text(json.dumps({k: v for k, v in config.items() if v is not None}))


def a_file(folder: Path) -> Path:
    return folder / "config.json"


def no_config(folder: Path) -> Path:
    (folder / "config.json").unlink()
    return folder


def config_not_json(folder: Path) -> Path:
    (folder / "config.json").write_text("{ not json", encoding="utf-8")
    return folder


def config_without_model_type(folder: Path) -> Path:
    edit_config(folder, model_type=None)
    return folder


def no_weights(folder: Path) -> Path:
    (folder / "model.safetensors").unlink()
    return folder


def weights_named_otherwise(folder: Path) -> Path:
    (folder / "model.safetensors").rename(folder / "weights.safetensors")
    return folder


def gguf_instead(folder: Path) -> Path:
    (folder / "model.safetensors").rename(folder / "model-q4_k_m.gguf")
    return folder


def truncated_weights(folder: Path) -> Path:
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    return folder


def not_safetensors(folder: Path) -> Path:
    (folder / "model.safetensors").write_bytes(b"PK\x03\x04 a zip file, not tensors")
    return folder


def no_tokenizer(folder: Path) -> Path:
    (folder / "tokenizer.json").unlink()
    return folder


def unknown_architecture(folder: Path) -> Path:
    edit_config(folder, model_type="lama")
    return folder


def mismatched_shapes(folder: Path) -> Path:
    edit_config(folder, hidden_size=128)
    return folder


def missing_config_field(folder: Path) -> Path:
    edit_config(folder, hidden_size=None)
    return folder


@pytest.mark.parametrize(
    ("breaker", "message", "hint"),
    [
        (a_file, "not a model folder", "config.json, model*.safetensors"),
        (no_config, "has no config.json", "config.json"),
        (config_not_json, "not valid JSON", None),
        (config_without_model_type, "names no model_type", "model_type"),
        (no_weights, r"has no weights \(model\*.safetensors\)", "model*.safetensors"),
        (weights_named_otherwise, "has no weights", "loads weights named model*.safetensors"),
        (gguf_instead, "has no weights", "llama-cpp plugin"),
        (truncated_weights, "cut short", "interrupted"),
        (not_safetensors, "not a safetensors file", None),
        (no_tokenizer, "has no tokenizer", "tokenizer files"),
        (unknown_architecture, "does not support the architecture 'lama'", "llama"),
        (mismatched_shapes, "Expected shape", "complete model"),
        (missing_config_field, "hidden_size", "complete model"),
    ],
    ids=lambda value: value.__name__ if callable(value) else None,
)
def test_bad_folder_is_invalid_model(
    mlx_host: Host,
    model_id: str,
    copy_of_tiny: Path,
    *,
    breaker: Breaker,
    message: str,
    hint: str | None,
) -> None:
    source = breaker(copy_of_tiny)
    with pytest.raises(InvalidModel, match=message) as raised:
        mlx_host.load(ModelSpec(name="broken", plugin="mlx", source=str(source)))
    assert raised.value.status == 422
    if hint is not None:
        assert raised.value.hint is not None
        assert hint in raised.value.hint
    assert "broken" not in {model.id for model in mlx_host.models()}  # a client error
    result = mlx_host.generate(model_id, CompletionRequest(prompt="Hello", max_tokens=2))
    assert isinstance(result, TextResult)


def test_unknown_architecture_names_the_nearest(mlx_host: Host, copy_of_tiny: Path) -> None:
    edit_config(copy_of_tiny, model_type="qwen7")
    with pytest.raises(InvalidModel) as raised:
        mlx_host.load(ModelSpec(plugin="mlx", source=str(copy_of_tiny)))
    assert raised.value.hint is not None
    assert "qwen2" in raised.value.hint
    assert mlx_lm.__version__ in raised.value.message


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"context_length": 512}, "context_length: Extra inputs are not permitted"),
        ({"quantize_bits": 7}, "quantize_bits"),
        ({"quantize_group_size": 48}, "quantize_group_size"),
        ({"max_kv_size": 4}, "max_kv_size"),
        ({"max_kv_size": 4096}, "over this model's context of 1024"),
        ({"seed": -1}, "seed"),
        ({"trust_remote_code": "maybe"}, "trust_remote_code"),
    ],
)
def test_bad_options_are_invalid_options(
    mlx_host: Host, tiny_folder: Path, options: dict[str, object], message: str
) -> None:
    spec = ModelSpec(name="bad-options", plugin="mlx", source=str(tiny_folder), options=options)
    with pytest.raises(InvalidOptions, match=message) as raised:
        mlx_host.load(spec)
    assert raised.value.status == 422
    assert "bad-options" not in {model.id for model in mlx_host.models()}


def test_unknown_option_lists_the_accepted_ones(mlx_host: Host, tiny_folder: Path) -> None:
    options = {"n_ctx": 512}
    spec = ModelSpec(name="n-ctx", plugin="mlx", source=str(tiny_folder), options=options)
    with pytest.raises(InvalidOptions) as raised:
        mlx_host.load(spec)
    assert raised.value.hint is not None
    for option in ("quantize_bits", "max_kv_size", "seed", "chat_template", "trust_remote_code"):
        assert option in raised.value.hint


@pytest.fixture(scope="module")
def converted(tiny_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model quantised to 4 bits by ``mlx_lm.convert``, as mlx-community ships them."""
    target = tmp_path_factory.mktemp("converted") / "tiny-4bit"
    mlx_lm.convert(str(tiny_folder), mlx_path=str(target), quantize=True, q_bits=4)
    return target


def test_converted_model_loads_and_refuses_quantizing_again(
    mlx_host: Host, converted: Path
) -> None:
    info = mlx_host.load(ModelSpec(name="q", plugin="mlx", source=str(converted)))
    assert info.status is ModelStatus.READY
    assert info.details["quantization_bits"] == 4
    result = mlx_host.generate("q", CompletionRequest(prompt="Hello", max_tokens=3))
    assert isinstance(result, TextResult)
    mlx_host.unload("q")
    again = ModelSpec(name="q8", plugin="mlx", source=str(converted), options={"quantize_bits": 8})
    with pytest.raises(InvalidOptions, match="already quantised"):
        mlx_host.load(again)


def test_match_finds_mlx_models(tiny_folder: Path, converted: Path) -> None:
    def score(source: str, path: Path | None) -> int | None:
        return plugin.motorpool_match(ModelSpec(source=source), path)

    assert score(str(converted), converted) == 85  # saved by mlx_lm.convert
    assert score(str(tiny_folder), tiny_folder) == 60  # a transformers Llama
    assert score("mlx-community/Qwen2.5-0.5B-Instruct-4bit", None) == 70
    assert score("Qwen/Qwen2.5-0.5B-Instruct-GGUF", None) is None
    assert score(str(tiny_folder / "config.json"), tiny_folder / "config.json") is None


def test_host_picks_the_plugin_by_itself(mlx_host: Host, converted: Path) -> None:
    info = mlx_host.load(ModelSpec(name="auto", source=str(converted)))
    assert info.plugin == "mlx"
    mlx_host.unload("auto")


def source_of(folder: Path, **options: object) -> ResolvedSource:
    spec = ModelSpec(plugin="mlx", source=str(folder), options=options)
    return ResolvedSource(spec=spec, path=folder, origin=ModelOrigin.LOCAL)


def test_memory_estimate_is_weights_plus_kv_cache(tiny_folder: Path) -> None:
    weights = (tiny_folder / "model.safetensors").stat().st_size
    # 2 (keys, values) x 2 layers x 2 KV heads x 16 dims x 4 bytes (float32) per token
    per_token = 2 * 2 * 2 * 16 * 4
    estimate = plugin.motorpool_estimate_memory(source_of(tiny_folder))
    assert estimate == weights + per_token * 1024  # the tiny context is under 4096
    bounded = plugin.motorpool_estimate_memory(source_of(tiny_folder, max_kv_size=64))
    assert bounded == weights + per_token * 64
    quantized = plugin.motorpool_estimate_memory(source_of(tiny_folder, quantize_bits=4))
    assert quantized is not None
    assert quantized < weights / 5 + per_token * 1024


def test_memory_budget_uses_the_estimate(tmp_path: Path, tiny_folder: Path) -> None:
    from motorpool import Settings  # noqa: PLC0415

    settings = Settings(plugins="mlx", home=tmp_path, keep_alive_s=-1, memory_budget=200_000)
    with Host(settings) as host, pytest.raises(MemoryBudgetExceeded):
        host.load(ModelSpec(plugin="mlx", source=str(tiny_folder)))
