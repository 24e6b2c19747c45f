"""The loaded model: a ``llama_cpp.Llama``, its prompt formatting and its token loop.

Imported only inside ``motorpool_load``: importing it loads llama.cpp's native library.
The token loop drives ``Llama.generate`` directly and turns each token into its text
piece; :func:`motorpool.textgen.stream_text` does stops, limits, guards and the result.
"""

from __future__ import annotations

import codecs
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import llama_cpp
from llama_cpp import llama_chat_format
from motorpool.errors import ContextLengthExceeded, InvalidRequest
from motorpool.types import ChatRequest, Sampling, TextRequest

from motorpool_llama_cpp._gguf import GGUFInfo
from motorpool_llama_cpp._options import CHAT_FORMATTERS, KV_CACHE_TYPES, LlamaOptions

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

# llama-cpp-python's defaults for create_completion, so results match a direct call.
DEFAULT_SAMPLING = Sampling(temperature=0.8, top_p=0.95, top_k=40, min_p=0.05, repeat_penalty=1.0)

Formatter = Callable[..., llama_chat_format.ChatFormatterResponse]


@dataclass(frozen=True, slots=True)
class Prompt:
    """A request's prompt as tokens, and the stop strings its chat format adds."""

    tokens: list[int]
    stops: tuple[str, ...] = ()


class LlamaModel:
    """One loaded GGUF. Not thread-safe: the host runs one request at a time on it."""

    def __init__(self, llama: llama_cpp.Llama, info: GGUFInfo, options: LlamaOptions) -> None:
        self.llama = llama
        self.info = info
        self.options = options
        self.context_length = llama.n_ctx()
        self._vocab = llama_cpp.llama_model_get_vocab(llama.model)
        self._formatter = self._model_formatter()

    def close(self) -> None:
        """Free the model and its context now rather than at garbage collection."""
        self.llama.close()

    # ---------------------------------------------------------------- prompts

    def prompt(self, request: TextRequest) -> Prompt:
        """Tokenise the request's prompt (through the chat template for chat)."""
        if isinstance(request, ChatRequest):
            formatted = self._format_chat(request)
            text, add_bos = formatted.prompt, not formatted.added_special
            stop = formatted.stop
            stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
        else:
            text, add_bos, stops = request.prompt, True, ()
        tokens = self.llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)
        if len(tokens) >= self.context_length:
            trained = self.info.context_length
            raise ContextLengthExceeded(
                f"the prompt is {len(tokens)} tokens but the context holds "
                f"{self.context_length} (and the answer needs room too)",
                hint="shorten the prompt, or load the model with a larger context_length"
                + (f" (this model takes up to {trained})" if trained else ""),
            )
        return Prompt(tokens, stops)

    def _format_chat(self, request: ChatRequest) -> llama_chat_format.ChatFormatterResponse:
        formatter = self._formatter
        if request.chat_template is not None:
            formatter = self._jinja(request.chat_template)
        if formatter is None:
            raise InvalidRequest(
                "this model has no chat template, so it cannot answer chat requests as it is",
                hint="load it with the option chat_format (e.g. 'chatml') or chat_template, "
                "send a chat_template with the request, or use a completion request",
            )
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        try:
            return formatter(messages=messages)
        except Exception as exc:
            raise InvalidRequest(f"the chat template failed on these messages: {exc}") from exc

    def _model_formatter(self) -> Formatter | None:
        options = self.options
        if options.chat_format is not None:
            formatter: Formatter = getattr(llama_chat_format, CHAT_FORMATTERS[options.chat_format])
            return formatter
        template = options.chat_template or self.info.chat_template
        return self._jinja(template) if template is not None else None

    def _jinja(self, template: str) -> Formatter:
        return _jinja_formatter(
            template,
            self._token_text(llama_cpp.llama_vocab_eos(self._vocab)),
            self._token_text(llama_cpp.llama_vocab_bos(self._vocab)),
        )

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return llama_cpp.llama_vocab_get_text(self._vocab, token).decode("utf-8", "replace")

    # ------------------------------------------------------------- generation

    def max_new_tokens(self, prompt: Prompt) -> int:
        """Room left in the context after the prompt."""
        return self.context_length - len(prompt.tokens)

    def pieces(self, prompt: Prompt, sampling: Sampling) -> Iterator[str]:
        """The text of each generated token; ends at an end-of-generation token.

        Bad sampling (a logit bias outside the vocabulary) raises here, before the stream
        starts. The iterator is a generator: closing it stops decoding after the current
        token.
        """
        params = _sampling_params(sampling, self.options)
        processor = self._logit_bias(sampling.logit_bias)
        return self._decode(prompt, params, processor)

    def _decode(
        self, prompt: Prompt, params: _Params, processor: llama_cpp.LogitsProcessorList | None
    ) -> Iterator[str]:
        self.llama.set_seed(params.seed)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for token in self.llama.generate(
            prompt.tokens,
            top_k=params.top_k,
            top_p=params.top_p,
            min_p=params.min_p,
            temp=params.temperature,
            repeat_penalty=params.repeat_penalty,
            logits_processor=processor,
        ):
            if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                return
            yield decoder.decode(self.llama.detokenize([token]))

    def _logit_bias(self, bias: dict[int, float]) -> llama_cpp.LogitsProcessorList | None:
        if not bias:
            return None
        vocab = self.llama.n_vocab()
        unknown = sorted(token for token in bias if not 0 <= token < vocab)
        if unknown:
            raise InvalidRequest(
                f"logit_bias names tokens outside the vocabulary (0..{vocab - 1}): {unknown[:5]}"
            )
        import numpy as np  # noqa: PLC0415 - only requests with a bias need it

        ids = np.fromiter(bias.keys(), dtype=np.intc)
        values = np.fromiter(bias.values(), dtype=np.single)

        def add_bias(
            _ids: npt.NDArray[np.intc], scores: npt.NDArray[np.single]
        ) -> npt.NDArray[np.single]:
            scores[ids] += values
            return scores

        return llama_cpp.LogitsProcessorList([add_bias])


@dataclass(frozen=True, slots=True)
class _Params:
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    repeat_penalty: float
    seed: int


def _sampling_params(sampling: Sampling, options: LlamaOptions) -> _Params:
    default = DEFAULT_SAMPLING
    seed = sampling.seed if sampling.seed is not None else options.seed
    return _Params(
        temperature=_pick(sampling.temperature, default.temperature),
        top_p=_pick(sampling.top_p, default.top_p),
        top_k=int(_pick(sampling.top_k, default.top_k)),
        min_p=_pick(sampling.min_p, default.min_p),
        repeat_penalty=_pick(sampling.repeat_penalty, default.repeat_penalty),
        # llama.cpp seeds are 32-bit; larger seeds are folded, not refused.
        seed=(seed % 2**32) if seed is not None else random.getrandbits(32),
    )


def _pick(value: float | None, default: float | None) -> float:
    chosen = value if value is not None else default
    assert chosen is not None  # DEFAULT_SAMPLING sets every field
    return chosen


@lru_cache(maxsize=16)
def _jinja_formatter(template: str, eos: str, bos: str) -> Formatter:
    try:
        return llama_chat_format.Jinja2ChatFormatter(
            template=template, eos_token=eos, bos_token=bos
        )
    except Exception as exc:
        raise InvalidRequest(f"the chat template is not a valid Jinja template: {exc}") from exc


def open_llama(info: GGUFInfo, options: LlamaOptions, context_length: int) -> llama_cpp.Llama:
    """Create the ``Llama`` for a checked GGUF and validated options."""
    gpu_layers = options.gpu_layers
    if gpu_layers == "auto":
        gpu_layers = -1 if llama_cpp.llama_supports_gpu_offload() else 0
    kv_type = KV_CACHE_TYPES[options.kv_cache_type][0]
    return llama_cpp.Llama(
        model_path=str(info.path),
        n_ctx=context_length,
        n_gpu_layers=gpu_layers,
        n_threads=options.threads,
        n_threads_batch=options.threads,
        n_batch=min(options.batch_size, context_length),
        flash_attn=options.flash_attention,
        type_k=kv_type,
        type_v=kv_type,
        seed=options.seed if options.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED,
        use_mmap=options.mmap,
        use_mlock=options.mlock,
        verbose=False,
    )


def gpu_offload_supported() -> bool:
    """Whether this llama.cpp build can offload layers to a GPU."""
    return bool(llama_cpp.llama_supports_gpu_offload())


def system_info() -> str:
    """llama.cpp's one-line description of its build (SIMD features, backends)."""
    return llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()


def version() -> str:
    """The installed llama-cpp-python version."""
    return str(llama_cpp.__version__)
