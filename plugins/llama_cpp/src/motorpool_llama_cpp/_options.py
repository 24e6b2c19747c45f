"""Load options of a GGUF model, as users write them in a models file or a spec."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_CONTEXT = 4096
"""Context length when none is given (capped at the model's own)."""

KvCacheType = Literal["f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "iq4_nl", "q4_1", "q4_0"]
# ggml type id and bytes per element of each KV cache type.
KV_CACHE_TYPES: dict[str, tuple[int, float]] = {
    "f32": (0, 4.0),
    "f16": (1, 2.0),
    "bf16": (30, 2.0),
    "q8_0": (8, 34 / 32),
    "q5_1": (7, 24 / 32),
    "q5_0": (6, 22 / 32),
    "iq4_nl": (20, 18 / 32),
    "q4_1": (3, 20 / 32),
    "q4_0": (2, 18 / 32),
}

ChatFormat = Literal[
    "chatml", "llama-2", "llama-3", "mistral-instruct", "gemma", "qwen", "zephyr", "alpaca",
    "openchat",
]  # fmt: skip
# llama-cpp-python's formatter function for each chat format name.
CHAT_FORMATTERS: dict[str, str] = {
    "chatml": "format_chatml",
    "llama-2": "format_llama2",
    "llama-3": "format_llama3",
    "mistral-instruct": "format_mistral_instruct",
    "gemma": "format_gemma",
    "qwen": "format_qwen",
    "zephyr": "format_zephyr",
    "alpaca": "format_alpaca",
    "openchat": "format_openchat",
}


class LlamaOptions(BaseModel):
    """How to load a GGUF. Every field is optional; the defaults suit a laptop."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    context_length: int | None = Field(default=None, ge=16)
    """Tokens of context (prompt + output). Default: 4096, or the model's own if smaller.
    More than the model was trained with is refused."""
    gpu_layers: int | Literal["auto"] = Field(default="auto", ge=-1)
    """Layers offloaded to the GPU: ``auto`` = all when this build can offload, else 0;
    ``-1`` = all."""
    threads: int | None = Field(default=None, ge=1)
    """CPU threads for generation; default: llama.cpp's choice (the physical cores)."""
    batch_size: int = Field(default=512, ge=1, le=65536)
    """Prompt tokens evaluated per batch."""
    flash_attention: bool = False
    kv_cache_type: KvCacheType = "f16"
    """Element type of the KV cache; quantised types (``q8_0`` ...) need flash attention."""
    seed: int | None = Field(default=None, ge=0, lt=2**32)
    """Seed of requests that bring none; default: a fresh random seed per request."""
    chat_format: ChatFormat | None = None
    """A built-in chat format, for models whose GGUF carries no chat template."""
    chat_template: str | None = Field(default=None, min_length=1)
    """A Jinja chat template replacing the GGUF's own."""
    mmap: bool = True
    """Map the file into memory instead of reading it (faster loads, shared pages)."""
    mlock: bool = False
    """Lock the model in RAM so the OS never swaps it out."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.kv_cache_type not in ("f32", "f16", "bf16") and not self.flash_attention:
            raise ValueError(
                f"kv_cache_type {self.kv_cache_type!r} needs flash_attention: true "
                "(llama.cpp quantises the V cache only with flash attention)"
            )
        if self.chat_format is not None and self.chat_template is not None:
            raise ValueError("give chat_format or chat_template, not both")
        return self
