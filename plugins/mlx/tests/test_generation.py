"""Text generation through a real host and the real mlx-lm, on the tiny random Llama.

Random weights write gibberish, so where a test needs known text it forces a token with
``logit_bias`` (+100 wins every step). Greedy decoding (mlx-lm's default) is
deterministic, which the sampling tests lean on: ``top_k=1`` at any temperature must give
the greedy text, and so must ``min_p=1``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mlx_lm import load, stream_generate
from motorpool import Host
from motorpool.errors import ContextLengthExceeded, InvalidModel, InvalidRequest
from motorpool.tiny import CHATML_TEMPLATE
from motorpool.types import (
    ChatRequest,
    CompletionRequest,
    ErrorEvent,
    FinishReason,
    ModelSpec,
    ModelStatus,
    ResultEvent,
    TextResult,
    TokenEvent,
)
from tokenizers import Tokenizer

FORCE = 100.0
NO_LOOP_GUARD = {"max_repeats": None}
CHATML_HELLO = "<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n"
Token = Callable[[str], int]


def chat(content: str = "Hello there", **fields: Any) -> ChatRequest:
    return ChatRequest.model_validate(
        {"messages": [{"role": "user", "content": content}], **fields}
    )


def completion(prompt: str = "The weather is", **fields: Any) -> CompletionRequest:
    return CompletionRequest.model_validate({"prompt": prompt, **fields})


def text_of(host: Host, model: str, request: ChatRequest | CompletionRequest) -> TextResult:
    result = host.generate(model, request)
    assert isinstance(result, TextResult)
    return result


@pytest.fixture(scope="module")
def eos(tokenizer: Tokenizer) -> int:
    eos_id = tokenizer.token_to_id("<|im_end|>")
    assert isinstance(eos_id, int)
    return eos_id


# -- completion and chat ---------------------------------------------------------------------


def test_chat_goes_through_the_chat_template(
    mlx_host: Host, model_id: str, tokenizer: Tokenizer, eos: int
) -> None:
    result = text_of(mlx_host, model_id, chat(max_tokens=6, sampling={"logit_bias": {eos: -FORCE}}))
    assert result.finish_reason is FinishReason.LENGTH
    assert result.usage.completion_tokens == 6
    assert result.usage.prompt_tokens == len(tokenizer.encode(CHATML_HELLO).ids)


def test_completion_continues_the_raw_prompt(
    mlx_host: Host, model_id: str, tokenizer: Tokenizer, eos: int
) -> None:
    request = completion(max_tokens=5, sampling={"logit_bias": {eos: -FORCE}})
    result = text_of(mlx_host, model_id, request)
    assert result.finish_reason is FinishReason.LENGTH
    assert result.usage.completion_tokens == 5
    assert result.usage.prompt_tokens == len(tokenizer.encode("The weather is").ids)


def test_greedy_text_is_what_mlx_lm_writes(
    mlx_host: Host, model_id: str, tiny_folder: Path
) -> None:
    """The plugin adds nothing to, and loses nothing of, mlx-lm's own output."""
    model, tokenizer = load(str(tiny_folder))[:2]
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello there"}], add_generation_prompt=True
    )
    direct = "".join(r.text for r in stream_generate(model, tokenizer, prompt, max_tokens=24))
    result = text_of(mlx_host, model_id, chat(max_tokens=24, guards=NO_LOOP_GUARD))
    assert result.text == direct


# -- sampling ----------------------------------------------------------------------------------


def test_seed_makes_sampling_reproducible(mlx_host: Host, model_id: str) -> None:
    def sampled(seed: int) -> str:
        request = completion(
            max_tokens=24, guards=NO_LOOP_GUARD, sampling={"temperature": 1.5, "seed": seed}
        )
        return text_of(mlx_host, model_id, request).text

    assert sampled(1) == sampled(1)
    assert sampled(1) != sampled(2)


def test_seed_option_seeds_requests_without_one(mlx_host: Host, tiny_folder: Path) -> None:
    spec = ModelSpec(name="seeded", plugin="mlx", source=str(tiny_folder), options={"seed": 7})
    request = completion(max_tokens=24, guards=NO_LOOP_GUARD, sampling={"temperature": 1.5})
    first = text_of(mlx_host, mlx_host.load(spec).id, request)
    assert text_of(mlx_host, "seeded", request).text == first.text
    mlx_host.unload("seeded")


@pytest.mark.parametrize(
    "sampling",
    [
        {"temperature": 1.5, "top_k": 1},
        {"temperature": 1.5, "min_p": 1.0},
        {"temperature": 1.5, "top_p": 0.000001},
    ],
    ids=["top_k=1", "min_p=1", "top_p~0"],
)
def test_truncation_to_the_top_token_is_greedy(
    mlx_host: Host, model_id: str, sampling: dict[str, float]
) -> None:
    greedy = text_of(mlx_host, model_id, completion(max_tokens=16, guards=NO_LOOP_GUARD))
    request = completion(max_tokens=16, guards=NO_LOOP_GUARD, sampling={**sampling, "seed": 3})
    assert text_of(mlx_host, model_id, request).text == greedy.text


def test_repetition_penalty_changes_greedy_output(mlx_host: Host, model_id: str) -> None:
    plain = completion(max_tokens=40, guards=NO_LOOP_GUARD)
    penalised = completion(max_tokens=40, guards=NO_LOOP_GUARD, sampling={"repeat_penalty": 5})
    assert text_of(mlx_host, model_id, plain).text != text_of(mlx_host, model_id, penalised).text


def test_logit_bias_forces_and_bans_tokens(mlx_host: Host, model_id: str, token: Token) -> None:
    sea = token(" sea")
    forced = completion(max_tokens=4, sampling={"logit_bias": {sea: FORCE}})
    assert text_of(mlx_host, model_id, forced).text == "sea sea sea sea"
    banned = completion(max_tokens=4, sampling={"logit_bias": {sea: -FORCE, token(" city"): FORCE}})
    assert text_of(mlx_host, model_id, banned).text == "city city city city"


def test_logit_bias_outside_the_vocabulary_is_refused(mlx_host: Host, model_id: str) -> None:
    request = completion(max_tokens=4, sampling={"logit_bias": {100_000: 1.0}})
    with pytest.raises(InvalidRequest, match="outside the vocabulary"):
        mlx_host.generate(model_id, request)
    assert mlx_host.model(model_id).active_requests == 0


# -- stops, limits, guards -------------------------------------------------------------------


def test_stop_sequence_split_across_tokens(mlx_host: Host, model_id: str, token: Token) -> None:
    request = completion(
        max_tokens=20, stop=["el mo"], sampling={"logit_bias": {token(" model"): FORCE}}
    )
    with mlx_host.stream(model_id, request) as generation:
        events = list(generation)
    result = events[-1]
    assert isinstance(result, ResultEvent)
    assert isinstance(result.result, TextResult)
    assert result.result.text == "mod"  # "model model" stops before "el mo"
    assert result.result.finish_reason is FinishReason.STOP
    assert "".join(e.text for e in events if isinstance(e, TokenEvent)) == "mod"


def test_end_token_finishes_with_stop(mlx_host: Host, model_id: str, eos: int) -> None:
    result = text_of(mlx_host, model_id, chat(sampling={"logit_bias": {eos: FORCE}}))
    assert result.finish_reason is FinishReason.STOP
    assert result.usage.completion_tokens == 0
    assert result.text == ""


def test_context_room_limits_the_answer(
    mlx_host: Host, model_id: str, token: Token, tokenizer: Tokenizer
) -> None:
    context = 1024  # the tiny model's max_position_embeddings
    prompt = " model" * (context - 3)
    assert len(tokenizer.encode(prompt).ids) == context - 3
    request = completion(
        prompt, max_tokens=50, guards=NO_LOOP_GUARD, sampling={"logit_bias": {token(" sea"): FORCE}}
    )
    result = text_of(mlx_host, model_id, request)
    assert result.finish_reason is FinishReason.LENGTH
    assert result.usage.completion_tokens == 3
    with pytest.raises(ContextLengthExceeded, match="1024"):
        mlx_host.generate(model_id, completion(" model" * context))


def test_usage_and_timings(mlx_host: Host, model_id: str, eos: int) -> None:
    request = chat(max_tokens=12, guards=NO_LOOP_GUARD, sampling={"logit_bias": {eos: -FORCE}})
    result = text_of(mlx_host, model_id, request)
    assert result.usage.completion_tokens == 12
    assert result.usage.prompt_tokens > 0
    timings = result.timings
    assert timings.total_s > 0
    assert timings.first_output_s is not None
    assert 0 < timings.first_output_s <= timings.total_s
    assert timings.prompt_tokens_per_s is not None
    assert timings.prompt_tokens_per_s > 0
    assert timings.output_tokens_per_s is not None
    assert timings.output_tokens_per_s > 0
    assert timings.peak_memory_bytes is not None
    assert timings.peak_memory_bytes > 0


def test_runaway_guard(mlx_host: Host, model_id: str, token: Token) -> None:
    request = completion(
        max_tokens=200,
        guards={"max_chars": 20, "max_repeats": None},
        sampling={"logit_bias": {token(" sea"): FORCE}},
    )
    result = text_of(mlx_host, model_id, request)
    assert result.finish_reason is FinishReason.RUNAWAY
    assert result.usage.completion_tokens < 10


def test_loop_guard(mlx_host: Host, model_id: str, token: Token) -> None:
    request = completion(max_tokens=200, sampling={"logit_bias": {token(" sea"): FORCE}})
    result = text_of(mlx_host, model_id, request)
    assert result.finish_reason is FinishReason.LOOP
    assert result.usage.completion_tokens < 50


def test_cancel_stops_within_one_token(mlx_host: Host, model_id: str, token: Token) -> None:
    request = completion(
        max_tokens=5000, guards=NO_LOOP_GUARD, sampling={"logit_bias": {token(" sea"): FORCE}}
    )
    with mlx_host.stream(model_id, request) as generation:
        before = list(itertools.islice(generation, 3))
        generation.cancel()
        after = list(generation)
    assert all(isinstance(event, TokenEvent) for event in before)
    assert sum(isinstance(event, TokenEvent) for event in after) <= 1
    terminal = after[-1]
    if isinstance(terminal, ErrorEvent):
        assert terminal.error.code == "cancelled"
    else:
        assert isinstance(terminal, ResultEvent)
        assert isinstance(terminal.result, TextResult)
        assert terminal.result.finish_reason is FinishReason.CANCELLED
        assert terminal.result.usage.completion_tokens <= 4
    assert mlx_host.model(model_id).active_requests == 0
    assert text_of(mlx_host, model_id, completion(max_tokens=2)).usage.completion_tokens <= 2


# -- chat templates ----------------------------------------------------------------------------


def without_chat_template(folder: Path) -> Path:
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    del config["chat_template"]
    config_file.write_text(json.dumps(config), encoding="utf-8")
    return folder


def test_chat_without_a_template_is_a_clear_error(
    mlx_host: Host, copy_of_tiny: Path, tokenizer: Tokenizer
) -> None:
    folder = without_chat_template(copy_of_tiny)
    model = mlx_host.load(ModelSpec(name="no-template", plugin="mlx", source=str(folder)))
    assert model.details["chat_template"] is False
    with pytest.raises(InvalidRequest, match="no chat template") as raised:
        mlx_host.generate(model.id, chat(max_tokens=2))
    assert raised.value.hint is not None
    assert "chat_template" in raised.value.hint
    assert text_of(mlx_host, model.id, completion(max_tokens=2)).usage.completion_tokens <= 2
    own = text_of(mlx_host, model.id, chat(max_tokens=2, chat_template=CHATML_TEMPLATE))
    assert own.usage.prompt_tokens == len(tokenizer.encode(CHATML_HELLO).ids)
    mlx_host.unload(model.id)
    spec = ModelSpec(
        name="template-option",
        plugin="mlx",
        source=str(folder),
        options={"chat_template": CHATML_TEMPLATE},
    )
    loaded = mlx_host.load(spec)
    assert loaded.details["chat_template"] is True
    assert text_of(mlx_host, loaded.id, chat(max_tokens=2)).usage.prompt_tokens == (
        own.usage.prompt_tokens
    )
    mlx_host.unload(loaded.id)


def test_broken_chat_template_is_a_clear_error(mlx_host: Host, model_id: str) -> None:
    with pytest.raises(InvalidRequest, match="chat template"):
        mlx_host.generate(model_id, chat(chat_template="{% for message in %}"))
    assert mlx_host.model(model_id).status is ModelStatus.READY


# -- load options -------------------------------------------------------------------------------


def test_quantize_on_load(mlx_host: Host, model_id: str, tiny_folder: Path) -> None:
    spec = ModelSpec(name="q4", plugin="mlx", source=str(tiny_folder), options={"quantize_bits": 4})
    quantized = mlx_host.load(spec)
    assert quantized.details["quantization_bits"] == 4
    assert quantized.memory_bytes < mlx_host.model(model_id).memory_bytes
    result = text_of(mlx_host, "q4", completion(max_tokens=4, guards=NO_LOOP_GUARD))
    assert result.usage.completion_tokens <= 4
    mlx_host.unload("q4")


def test_max_kv_size_bounds_the_cache_not_the_answer(
    mlx_host: Host, tiny_folder: Path, token: Token
) -> None:
    spec = ModelSpec(
        name="kv32", plugin="mlx", source=str(tiny_folder), options={"max_kv_size": 32}
    )
    loaded = mlx_host.load(spec)
    assert loaded.details["max_kv_size"] == 32
    request = completion(
        max_tokens=80, guards=NO_LOOP_GUARD, sampling={"logit_bias": {token(" sea"): FORCE}}
    )
    result = text_of(mlx_host, "kv32", request)
    assert result.usage.completion_tokens == 80
    assert result.text == " ".join(["sea"] * 80)
    mlx_host.unload("kv32")


def test_trust_remote_code(mlx_host: Host, copy_of_tiny: Path) -> None:
    """A config naming its own model code loads only when the user trusts it."""
    (copy_of_tiny / "custom_llama.py").write_text(
        "from mlx_lm.models.llama import Model, ModelArgs\n", encoding="utf-8"
    )
    config_file = copy_of_tiny / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config_file.write_text(json.dumps({**config, "model_file": "custom_llama.py"}))
    spec = ModelSpec(name="custom", plugin="mlx", source=str(copy_of_tiny))
    with pytest.raises(InvalidModel, match="trust_remote_code"):
        mlx_host.load(spec)
    assert "custom" not in {model.id for model in mlx_host.models()}
    trusted = mlx_host.load(spec.model_copy(update={"options": {"trust_remote_code": True}}))
    assert trusted.status is ModelStatus.READY
    assert text_of(mlx_host, "custom", completion(max_tokens=2)).usage.completion_tokens <= 2
    mlx_host.unload("custom")
