"""The llama.cpp plugin through the real host and the real llama-cpp-python, on tiny GGUFs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import gguf
import llama_cpp
import pytest
from llama_cpp import llama_chat_format
from motorpool import ChatRequest, CompletionRequest, Host, ModelSpec
from motorpool.errors import (
    ContextLengthExceeded,
    InvalidModel,
    InvalidOptions,
    InvalidRequest,
    SourceNotFound,
)
from motorpool.types import (
    Accelerator,
    ErrorEvent,
    FinishReason,
    ResultEvent,
    TextResult,
    TokenEvent,
)
from motorpool_llama_cpp import _probe, plugin
from motorpool_llama_cpp._gguf import GGML_BLOCKS, read_gguf
from motorpool_llama_cpp._options import CHAT_FORMATTERS, LlamaOptions
from motorpool_llama_cpp.tiny import CHATML_TEMPLATE
from pydantic import ValidationError

# The tiny model's special tokens (motorpool_llama_cpp.tiny.SPECIAL_TOKENS): biased away,
# the random model talks until max_tokens.
NO_END = {0: -100.0, 1: -100.0, 2: -100.0}
NO_GUARDS = {"max_repeats": None}


def spec(path: Path, **options: object) -> ModelSpec:
    """A spec of the file; each set of options is its own model (named after them)."""
    options = {"context_length": 512, **options}
    name = f"{path.name} {json.dumps(options, sort_keys=True)}"
    return ModelSpec(name=name, plugin="llama-cpp", source=str(path), options=options)


def completion(prompt: str = "The quick brown fox", **fields: object) -> CompletionRequest:
    return CompletionRequest.model_validate({"prompt": prompt, **fields})


def chat(content: str = "Hello there", **fields: object) -> ChatRequest:
    return ChatRequest.model_validate(
        {"messages": [{"role": "user", "content": content}], **fields}
    )


def text_result(result: object) -> TextResult:
    assert isinstance(result, TextResult)
    return result


# -------------------------------------------------------------------------- generation


def test_completion_matches_a_direct_llama_call(host: Host, tiny_gguf: Path) -> None:
    sampling = {"seed": 7, "temperature": 0.9, "top_k": 20, "logit_bias": NO_END}
    result = text_result(
        host.generate(
            spec(tiny_gguf), completion(max_tokens=24, sampling=sampling, guards=NO_GUARDS)
        )
    )
    direct = llama_cpp.Llama(str(tiny_gguf), n_ctx=512, verbose=False)
    expected = direct.create_completion(
        "The quick brown fox",
        max_tokens=24,
        seed=7,
        temperature=0.9,
        top_k=20,
        logit_bias=NO_END,
    )
    # The same tokens. llama-cpp-python drops bytes that are not UTF-8 where motorpool
    # shows U+FFFD (the random model emits stray bytes), and it decodes one token more
    # when the last one ends inside a character: compare up to motorpool's end.
    direct_text = expected["choices"][0]["text"]
    ours = result.text.replace("\ufffd", "")
    assert len(ours) > 20
    assert direct_text.startswith(ours)
    assert result.finish_reason is FinishReason.LENGTH
    assert result.usage.prompt_tokens == expected["usage"]["prompt_tokens"]
    assert result.usage.completion_tokens == 24


def test_chat_uses_the_gguf_chat_template(host: Host, tiny_gguf: Path) -> None:
    request = chat("Hi", max_tokens=4, sampling={"seed": 1})
    result = text_result(host.generate(spec(tiny_gguf), request))
    llama = llama_cpp.Llama(str(tiny_gguf), n_ctx=512, verbose=False)
    prompt = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert result.usage.prompt_tokens == len(llama.tokenize(prompt.encode(), special=True))


def test_same_seed_same_text_other_seed_other_text(host: Host, tiny_gguf: Path) -> None:
    def run(seed: int) -> str:
        sampling = {"seed": seed, "logit_bias": NO_END}
        request = chat(max_tokens=16, sampling=sampling, guards=NO_GUARDS)
        return text_result(host.generate(spec(tiny_gguf), request)).text

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_stream_yields_tokens_then_usage_and_timings(host: Host, tiny_gguf: Path) -> None:
    request = completion(
        max_tokens=12, sampling={"seed": 2, "logit_bias": NO_END}, guards=NO_GUARDS
    )
    events = list(host.stream(spec(tiny_gguf), request))
    tokens = [e.text for e in events if isinstance(e, TokenEvent)]
    final = events[-1]
    assert isinstance(final, ResultEvent)
    result = text_result(final.result)
    assert "".join(tokens) == result.text
    assert result.usage.completion_tokens == 12
    assert result.timings.first_output_s is not None
    assert result.timings.output_tokens_per_s is not None
    assert result.timings.prompt_tokens_per_s is not None


def test_stop_sequence_ends_the_text_before_it(host: Host, tiny_gguf: Path) -> None:
    sampling = {"seed": 5, "logit_bias": NO_END}
    full = text_result(
        host.generate(
            spec(tiny_gguf), completion(max_tokens=40, sampling=sampling, guards=NO_GUARDS)
        )
    ).text
    stop = full[10:13]
    assert stop.strip(), full
    stopped = text_result(
        host.generate(
            spec(tiny_gguf),
            completion(max_tokens=40, sampling=sampling, stop=[stop], guards=NO_GUARDS),
        )
    )
    assert stopped.finish_reason is FinishReason.STOP
    assert stopped.text == full[: full.index(stop)]


def test_the_end_token_finishes_with_stop(host: Host, tiny_gguf: Path) -> None:
    # Greedy decoding with every token but the end token pushed away: it comes first.
    bias = {i: -100.0 for i in range(512) if i != 2}
    result = text_result(
        host.generate(
            spec(tiny_gguf),
            completion(max_tokens=20, sampling={"temperature": 0, "logit_bias": bias}),
        )
    )
    assert result.finish_reason is FinishReason.STOP
    assert result.usage.completion_tokens == 0  # the end token is not counted, as in llama.cpp
    assert result.text == ""


def test_a_guard_ends_a_runaway_stream(host: Host, tiny_gguf: Path) -> None:
    request = completion(
        max_tokens=200, sampling={"seed": 1, "logit_bias": NO_END}, guards={"max_chars": 20}
    )
    result = text_result(host.generate(spec(tiny_gguf), request))
    assert result.finish_reason is FinishReason.RUNAWAY
    assert result.usage.completion_tokens < 200


def test_cancel_stops_decoding_within_one_token(host: Host, tiny_gguf: Path) -> None:
    request = completion(
        max_tokens=500, sampling={"seed": 1, "logit_bias": NO_END}, guards=NO_GUARDS
    )
    generation = host.stream(spec(tiny_gguf), request)
    first = next(generation)
    assert isinstance(first, TokenEvent)
    generation.cancel()
    rest = list(generation)
    assert len([e for e in rest if isinstance(e, TokenEvent)]) <= 1
    final = rest[-1]
    assert isinstance(final, ErrorEvent | ResultEvent)
    if isinstance(final, ErrorEvent):
        assert final.error.code == "cancelled"
    else:
        assert text_result(final.result).finish_reason is FinishReason.CANCELLED


def test_prompt_caching_keeps_a_conversation_consistent(host: Host, tiny_gguf: Path) -> None:
    # The second request shares the first one's prompt prefix (llama.cpp reuses its KV);
    # the answer must not depend on what was decoded before.
    sampling = {"seed": 9, "logit_bias": NO_END}
    long = completion(
        "one two three four five six", max_tokens=8, sampling=sampling, guards=NO_GUARDS
    )
    short = completion("one two three", max_tokens=8, sampling=sampling, guards=NO_GUARDS)
    first = text_result(host.generate(spec(tiny_gguf), short)).text
    host.generate(spec(tiny_gguf), long)
    assert text_result(host.generate(spec(tiny_gguf), short)).text == first


# ----------------------------------------------------------------------------- chat formats


def test_a_model_without_chat_template_refuses_chat_clearly(
    host: Host, no_template_gguf: Path
) -> None:
    with pytest.raises(InvalidRequest, match="no chat template") as caught:
        host.generate(spec(no_template_gguf), chat(max_tokens=2))
    assert caught.value.hint is not None
    assert "chat_format" in caught.value.hint
    # Completion still works on it, and the host is unaffected.
    assert text_result(host.generate(spec(no_template_gguf), completion(max_tokens=2)))


def test_chat_format_option_gives_a_template(host: Host, no_template_gguf: Path) -> None:
    request = chat("Hi", max_tokens=4, sampling={"seed": 1})
    named = text_result(host.generate(spec(no_template_gguf, chat_format="chatml"), request))
    # llama-cpp-python's chatml format always opens with a system turn; the template not.
    assert named.usage.prompt_tokens > 20
    template = spec(no_template_gguf, chat_template=CHATML_TEMPLATE)
    assert text_result(host.generate(template, request)).usage.prompt_tokens > 10


def test_request_chat_template_overrides_the_model(host: Host, tiny_gguf: Path) -> None:
    template = "{% for m in messages %}{{ m.content }}{% endfor %}"
    result = text_result(
        host.generate(spec(tiny_gguf), chat("Hi", max_tokens=2, chat_template=template))
    )
    assert result.usage.prompt_tokens <= 2  # just "Hi", no ChatML markers
    with pytest.raises(InvalidRequest, match="not a valid Jinja template"):
        host.generate(spec(tiny_gguf), chat(max_tokens=2, chat_template="{% for %}"))


# ------------------------------------------------------------------------------- bad input


def test_missing_file(host: Host, tmp_path: Path) -> None:
    with pytest.raises(SourceNotFound):
        host.load(spec(tmp_path / "absent.gguf"))


def test_a_file_that_is_not_gguf(host: Host, tmp_path: Path) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"<html>Not found</html>")
    with pytest.raises(InvalidModel, match="not a GGUF file"):
        host.load(spec(bogus))


@pytest.mark.parametrize("keep", [0.5, 0.999, 100 / 292_832])
def test_a_truncated_gguf(host: Host, tiny_gguf: Path, tmp_path: Path, keep: float) -> None:
    data = tiny_gguf.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(InvalidModel, match="truncated") as caught:
        host.load(spec(cut))
    assert caught.value.hint is not None
    assert "download" in caught.value.hint


def test_context_length_over_the_models_limit(host: Host, tiny_gguf: Path) -> None:
    with pytest.raises(InvalidOptions, match="over this model's limit of 2048"):
        host.load(spec(tiny_gguf, context_length=4096))


def test_a_prompt_longer_than_the_context(host: Host, tiny_gguf: Path) -> None:
    long_prompt = " ".join(f"w{i}" for i in range(400))
    with pytest.raises(ContextLengthExceeded, match="context holds 256") as caught:
        host.generate(spec(tiny_gguf, context_length=256), completion(long_prompt, max_tokens=4))
    assert caught.value.hint is not None
    assert "up to 2048" in caught.value.hint
    # The model stays loaded and answers the next request.
    assert text_result(host.generate(spec(tiny_gguf, context_length=256), completion(max_tokens=2)))


def test_output_stops_when_the_context_is_full(host: Host, tiny_gguf: Path) -> None:
    request = completion(
        max_tokens=500, sampling={"seed": 1, "logit_bias": NO_END}, guards=NO_GUARDS
    )
    result = text_result(host.generate(spec(tiny_gguf, context_length=256), request))
    assert result.finish_reason is FinishReason.LENGTH
    assert result.usage.prompt_tokens + result.usage.completion_tokens == 256


def test_unknown_options_and_sampling_keys(host: Host, tiny_gguf: Path) -> None:
    with pytest.raises(InvalidOptions, match="n_gpu") as caught:
        host.load(spec(tiny_gguf, n_gpu=3))
    assert caught.value.hint is not None
    assert "gpu_layers" in caught.value.hint
    with pytest.raises(InvalidOptions, match="flash_attention"):
        host.load(spec(tiny_gguf, kv_cache_type="q8_0"))
    with pytest.raises(ValidationError, match="typical_p"):
        completion(sampling={"typical_p": 0.5})
    with pytest.raises(InvalidRequest, match="outside the vocabulary"):
        host.generate(spec(tiny_gguf), completion(sampling={"logit_bias": {99999: 1.0}}))


def test_a_quantised_kv_cache_needs_wide_enough_heads(host: Host, no_template_gguf: Path) -> None:
    with pytest.raises(InvalidOptions, match="head size of 16"):
        host.load(spec(no_template_gguf, kv_cache_type="q4_0", flash_attention=True))


def test_a_folder_of_several_ggufs_needs_a_pattern(host: Host, gguf_dir: Path) -> None:
    with pytest.raises(InvalidModel, match="several GGUF files"):
        host.load(ModelSpec(plugin="llama-cpp", source=str(gguf_dir)))
    chosen = ModelSpec(plugin="llama-cpp", source=str(gguf_dir), files=("no-template*",))
    info = host.load(chosen)
    assert info.details["file"] == "no-template.gguf"


def test_load_options_reach_llama_cpp(host: Host, tiny_gguf: Path) -> None:
    options = {
        "threads": 1,
        "batch_size": 64,
        "flash_attention": True,
        "kv_cache_type": "q8_0",
        "seed": 11,
        "mmap": False,
    }
    info = host.load(spec(tiny_gguf, **options))
    assert info.details["context_length"] == 512
    loaded = host.generate(
        spec(tiny_gguf, **options), completion(max_tokens=6, sampling={"logit_bias": NO_END})
    )
    again = host.generate(
        spec(tiny_gguf, **options), completion(max_tokens=6, sampling={"logit_bias": NO_END})
    )
    assert text_result(loaded).text == text_result(again).text  # the seed option is the default


# --------------------------------------------------------------------- memory, probe, header


def test_memory_estimate_covers_the_file_and_grows_with_the_context(tiny_gguf: Path) -> None:
    info = read_gguf(tiny_gguf)
    options = LlamaOptions(batch_size=64)
    small = plugin.estimate_memory(info, options, 256)
    large = plugin.estimate_memory(info, options, 2048)
    assert small > tiny_gguf.stat().st_size
    # 2 layers x 1 KV head x (32 + 32) dims x 2 bytes = 256 bytes per token of context.
    assert large - small == 256 * (2048 - 256)
    quantised = plugin.estimate_memory(
        info, LlamaOptions(batch_size=64, kv_cache_type="q8_0", flash_attention=True), 2048
    )
    assert quantised < large


def test_header_reader_knows_the_tiny_model(tiny_gguf: Path) -> None:
    info = read_gguf(tiny_gguf)
    assert info.architecture == "llama"
    assert info.context_length == 2048
    assert info.chat_template == CHATML_TEMPLATE
    assert info.data_end == tiny_gguf.stat().st_size
    assert info.array_lengths["tokenizer.ggml.tokens"] == 512


def test_block_sizes_match_the_gguf_package() -> None:
    for type_id, sizes in GGML_BLOCKS.items():
        assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(type_id)] == sizes


def test_quick_probe_does_not_import_llama_cpp() -> None:
    code = textwrap.dedent(
        """
        import json, sys
        from motorpool_llama_cpp import plugin
        report = plugin.motorpool_probe(deep=False)
        print(json.dumps({"ready": report.ready, "imported": "llama_cpp" in sys.modules,
                          "version": report.engine_version}))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    answer = json.loads(out.stdout)
    assert answer == {"ready": True, "imported": False, "version": llama_cpp.__version__}


def test_deep_probe_reports_the_build() -> None:
    report = plugin.motorpool_probe(deep=True)
    assert report.ready
    assert any(note.startswith("build: ") and "CPU" in note for note in report.notes)
    assert any("GPU offload supported: False" in note for note in report.notes)


def test_missing_package_gives_the_install_command_for_the_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_probe, "installed_backends", lambda: None)
    monkeypatch.setattr(_probe, "likely_accelerators", lambda: frozenset({Accelerator.CUDA}))
    report = _probe.probe(deep=False)
    assert not report.ready
    assert report.missing[0].install == 'CMAKE_ARGS="-DGGML_CUDA=on" pip install llama-cpp-python'
    monkeypatch.setattr(_probe, "installed_backends", frozenset)
    report = _probe.probe(deep=False)
    assert report.ready
    assert any("CPU-only" in note and "--force-reinstall" in note for note in report.notes)


def test_match_claims_gguf_sources(tiny_gguf: Path, tmp_path: Path) -> None:
    assert plugin.motorpool_match(ModelSpec(source=str(tiny_gguf)), tiny_gguf) == 90
    assert plugin.motorpool_match(ModelSpec(source=str(tmp_path)), tmp_path) is None
    hub = ModelSpec(source="Qwen/Qwen2.5-0.5B-Instruct-GGUF", files=("*q4_k_m.gguf",))
    assert plugin.motorpool_match(hub, None) == 70
    assert plugin.motorpool_match(ModelSpec(source="org/model"), None) is None


def test_many_requests_at_once_queue_on_the_one_context(host: Host, tiny_gguf: Path) -> None:
    results: list[str] = []

    def ask(seed: int) -> None:
        request = completion(
            max_tokens=8, sampling={"seed": seed, "logit_bias": NO_END}, guards=NO_GUARDS
        )
        results.append(text_result(host.generate(spec(tiny_gguf), request)).text)

    threads = [threading.Thread(target=ask, args=(seed,)) for seed in (1, 2, 1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 4
    assert sorted(results)[0] == sorted(results)[1]  # same seed, same text, whatever the order
    assert len(set(results)) == 2


def test_copying_a_model_into_place_is_picked_up(
    tiny_gguf: Path, tmp_path: Path, host: Host
) -> None:
    folder = tmp_path / "snapshot"
    folder.mkdir()
    shutil.copy(tiny_gguf, folder / "model-q8_0.gguf")
    (folder / "mmproj-model-f16.gguf").write_bytes(b"projector, never loaded as the model")
    info = host.load(ModelSpec(plugin="llama-cpp", source=str(folder)))
    assert info.details["file"] == "model-q8_0.gguf"


def test_every_chat_format_name_is_a_formatter_of_this_llama_cpp() -> None:
    for function in CHAT_FORMATTERS.values():
        assert callable(getattr(llama_chat_format, function))
