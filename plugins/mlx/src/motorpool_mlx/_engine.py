"""The loaded model: mlx-lm's model and tokenizer, prompt formatting and the token loop.

Imported only inside ``motorpool_load`` and the deep probe: importing it imports mlx and
mlx-lm (and through it transformers). The token loop is ``mlx_lm.stream_generate``
turned into one text piece per token; :func:`motorpool.textgen.stream_text` does stops,
limits, cancellation, guards and the result.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import mlx.core as mx
import mlx_lm
from jinja2 import TemplateError
from mlx import nn
from mlx_lm.sample_utils import make_logits_processors, make_sampler
from mlx_lm.utils import MODEL_REMAPPING
from motorpool.errors import ContextLengthExceeded, InvalidModel, InvalidRequest
from motorpool.types import Accelerator, ChatRequest, Device, Sampling, TextRequest

from motorpool_mlx import _mlx
from motorpool_mlx._folder import (
    ModelFolder,
    has_architecture,
    nearest_architectures,
    supported_architectures,
)
from motorpool_mlx._options import MlxOptions

if TYPE_CHECKING:
    from mlx_lm.tokenizer_utils import TokenizerWrapper

# mlx-lm's own defaults (its CLI and server): greedy unless the request says otherwise,
# so a request without sampling fields gives what a direct mlx-lm call gives.
DEFAULT_SAMPLING = Sampling(temperature=0.0, top_p=1.0, top_k=0, min_p=0.0)

_LOAD_ERRORS = (OSError, ValueError, KeyError, TypeError)
"""What mlx-lm raises for a folder it cannot use: missing or mismatched weights
(``ValueError``), config fields its architecture needs (``KeyError``, ``TypeError``),
tokenizer files transformers cannot read (``OSError``, ``ValueError``)."""


def check_architecture(folder: ModelFolder) -> None:
    """Raise ``InvalidModel`` naming the nearest known architecture when mlx-lm lacks it."""
    if "model_file" in folder.config:  # the model brings its own code (trust_remote_code)
        return
    model_type = folder.model_type
    if has_architecture(MODEL_REMAPPING.get(model_type, model_type)):
        return
    nearest = nearest_architectures(model_type, supported_architectures())
    hint = "upgrade mlx-lm if a newer release supports it: pip install -U mlx-lm"
    if nearest:
        hint = f"the nearest architectures mlx-lm knows: {', '.join(nearest)}; {hint}"
    raise InvalidModel(
        f"mlx-lm {mlx_lm.__version__} does not support the architecture {model_type!r} "
        f"of {folder.path.name}",
        hint=hint,
    )


def load(folder: ModelFolder, options: MlxOptions) -> MlxModel:
    """Load a checked model folder with ``mlx_lm.load``, quantising it if asked."""
    check_architecture(folder)
    tokenizer_config: dict[str, object] | None = (
        {"trust_remote_code": True} if options.trust_remote_code else None
    )
    try:
        loaded = mlx_lm.load(
            str(folder.path),
            tokenizer_config=tokenizer_config,
            trust_remote_code=options.trust_remote_code,
        )
    except _LOAD_ERRORS as exc:
        raise InvalidModel(
            f"mlx-lm could not load {folder.path.name} "
            f"(architecture {folder.model_type!r}): {type(exc).__name__}: {exc}",
            hint="check that the folder is a complete model (config.json, every "
            "model*.safetensors shard, the tokenizer files)",
        ) from exc
    model, tokenizer = loaded[0], loaded[1]
    if options.quantize_bits is not None:
        _quantize(model, options.quantize_bits, options.quantize_group_size)
    return MlxModel(model, tokenizer, folder, options)


def _quantize(model: nn.Module, bits: int, group_size: int) -> None:
    """Quantise the layers mlx can quantise, as ``mlx_lm.convert -q`` does (without its print)."""
    own_predicate = cast(
        "Callable[[str, nn.Module], bool | dict[str, object]] | None",
        getattr(model, "quant_predicate", None),
    )

    def predicate(path: str, module: nn.Module) -> bool | dict[str, object]:
        if not hasattr(module, "to_quantized"):
            return False
        weight = cast("mx.array", module["weight"])
        if weight.shape[-1] % group_size:
            return False
        return own_predicate(path, module) if own_predicate is not None else True

    _mlx.quantize(model, group_size, bits, class_predicate=predicate)
    _mlx.materialise(model)


class MlxModel:
    """One loaded model. The host runs one request at a time on it."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: TokenizerWrapper,
        folder: ModelFolder,
        options: MlxOptions,
    ) -> None:
        self._model: nn.Module | None = model
        self._wrapper = tokenizer
        self._tokenizer = cast("_mlx.Tokenizer", tokenizer)
        self.folder = folder
        self.options = options
        self.context_length = folder.context_length
        self.vocab_size = folder.vocab_size or len(self._tokenizer)

    @property
    def model(self) -> nn.Module:
        """The mlx module; gone once the model is closed."""
        if self._model is None:
            raise InvalidRequest("this model was unloaded")
        return self._model

    @property
    def has_chat_template(self) -> bool:
        """Whether chat requests work without a template of their own."""
        return self.options.chat_template is not None or self._tokenizer.has_chat_template

    def weights_bytes(self) -> int:
        """Bytes of the weights in memory (after any quantisation)."""
        return sum(value.nbytes for _, value in _mlx.parameters(self.model))

    def close(self) -> None:
        """Drop the weights and give MLX's cached buffers back."""
        self._model = None
        mx.clear_cache()

    # ---------------------------------------------------------------- prompts

    def prompt(self, request: TextRequest) -> list[int]:
        """The request's prompt as token ids (through the chat template for chat)."""
        if isinstance(request, ChatRequest):
            tokens = self._chat_tokens(request)
        else:
            bos = self._tokenizer.bos_token
            add_special = bos is None or not request.prompt.startswith(bos)
            tokens = self._tokenizer.encode(request.prompt, add_special_tokens=add_special)
        if not tokens:
            raise InvalidRequest("the prompt is empty once tokenised")
        limit = self.context_length
        if limit is not None and len(tokens) >= limit:
            raise ContextLengthExceeded(
                f"the prompt is {len(tokens)} tokens but the model's context holds {limit} "
                "(and the answer needs room too)",
                hint="shorten the prompt",
            )
        return tokens

    def _chat_tokens(self, request: ChatRequest) -> list[int]:
        template = request.chat_template or self.options.chat_template
        if template is None and not self._tokenizer.has_chat_template:
            raise InvalidRequest(
                "this model's tokenizer has no chat template, so it cannot answer chat "
                "requests as it is",
                hint="load it with the option chat_template, send a chat_template with "
                "the request, or use a completion request",
            )
        extra: dict[str, object] = {} if template is None else {"chat_template": template}
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        try:
            return list(
                self._tokenizer.apply_chat_template(
                    messages, add_generation_prompt=True, tokenize=True, **extra
                )
            )
        except (TemplateError, ValueError, TypeError, KeyError) as exc:
            raise InvalidRequest(f"the chat template failed on these messages: {exc}") from exc

    def max_new_tokens(self, tokens: list[int]) -> int | None:
        """Room left in the model's context after the prompt (``None``: unknown)."""
        return None if self.context_length is None else self.context_length - len(tokens)

    # ------------------------------------------------------------- generation

    def sampling(self, sampling: Sampling) -> SamplingPlan:
        """mlx-lm's sampler and logits processors for the request's sampling fields.

        Checked before the stream starts, so a bad ``logit_bias`` fails the request at once.
        """
        default = DEFAULT_SAMPLING
        bias = sampling.logit_bias
        unknown = sorted(token for token in bias if not 0 <= token < self.vocab_size)
        if unknown:
            raise InvalidRequest(
                f"logit_bias names tokens outside the vocabulary (0..{self.vocab_size - 1}): "
                f"{unknown[:5]}"
            )
        seed = sampling.seed if sampling.seed is not None else self.options.seed
        return SamplingPlan(
            sampler=make_sampler(
                temp=_pick(sampling.temperature, default.temperature),
                top_p=_pick(sampling.top_p, default.top_p),
                min_p=_pick(sampling.min_p, default.min_p),
                top_k=int(_pick(sampling.top_k, default.top_k)),
            ),
            processors=make_logits_processors(
                logit_bias=dict(bias) if bias else None,
                repetition_penalty=sampling.repeat_penalty,
            ),
            seed=seed if seed is not None else random.getrandbits(63),
        )

    def pieces(self, tokens: list[int], plan: SamplingPlan, max_tokens: int) -> Iterator[str]:
        """The text of each generated token, through ``mlx_lm.stream_generate``.

        Ends at the model's end token. A generator: closing it stops decoding after the
        current token. ``max_tokens`` is the most the caller will take: mlx-lm then
        flushes the text its detokenizer held back into the last piece.
        """
        mx.random.seed(plan.seed)  # MLX's generator is global: seeded as decoding starts
        mx.reset_peak_memory()
        responses = _mlx.stream_generate(
            self.model,
            self._wrapper,
            mx.array(tokens),
            max_tokens=max_tokens,
            sampler=plan.sampler,
            logits_processors=plan.processors,
            max_kv_size=self.options.max_kv_size,
        )
        with closing(responses):
            for response in responses:
                if response.finish_reason == "stop":
                    # The end token: no text of its own, but the detokenizer flushes what
                    # it held back (a trailing space, an unfinished character) with it.
                    if response.text:
                        yield response.text
                    return
                yield response.text

    def peak_memory(self) -> int | None:
        """MLX's peak memory since the last generation started, in bytes."""
        return mx.get_peak_memory() or None

    @property
    def device(self) -> str:
        """The device MLX computes on (``gpu`` on Apple silicon, else ``cpu``)."""
        return default_device()


@dataclass(frozen=True, slots=True)
class SamplingPlan:
    """How one request samples: mlx-lm's sampler, its logits processors and the seed."""

    sampler: _mlx.Sampler
    processors: list[_mlx.LogitsProcessor]
    seed: int


def _pick(value: float | None, default: float | None) -> float:
    chosen = value if value is not None else default
    assert chosen is not None  # DEFAULT_SAMPLING sets every field it is asked for
    return chosen


def default_device() -> str:
    """The device MLX computes on by default (``gpu`` on Apple silicon, else ``cpu``)."""
    return mx.default_device().type.name


def devices() -> list[Device]:
    """The devices this mlx build can use."""
    found = [Device(accelerator=Accelerator.CPU, name="cpu")]
    if mx.metal.is_available():
        info = mx.device_info()
        memory = info.get("memory_size")
        found.append(
            Device(
                accelerator=Accelerator.METAL,
                name=str(info.get("device_name", "Apple silicon")),
                memory_bytes=memory if isinstance(memory, int) else None,
            )
        )
    elif sys.platform.startswith("linux") and mx.cuda.is_available():
        found.append(Device(accelerator=Accelerator.CUDA, name="cuda"))
    return found
