"""OpenAI text requests to motorpool's, and motorpool's results and events back."""

from __future__ import annotations

import time
from typing import Literal

from motorpool.server.wire import openai as oa
from motorpool.types import ChatMessage, ChatRequest, CompletionRequest, Sampling, TextResult


def to_request(
    body: oa.ChatCompletionRequest | oa.CompletionRequest,
) -> ChatRequest | CompletionRequest:
    """The core request an OpenAI body stands for."""
    sampling = Sampling(
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        min_p=body.min_p,
        repeat_penalty=body.repeat_penalty,
        seed=body.seed,
        logit_bias=body.logit_bias or {},
    )
    fields: dict[str, object] = {"stop": body.stop_sequences, "sampling": sampling}
    if body.guards is not None:
        fields["guards"] = body.guards
    if isinstance(body, oa.ChatCompletionRequest):
        max_tokens = body.max_completion_tokens or body.max_tokens
        messages = [ChatMessage(role=_role(m.role), content=m.text) for m in body.messages]
        fields["messages"] = messages
        model: type[ChatRequest | CompletionRequest] = ChatRequest
    else:
        max_tokens = body.max_tokens
        fields["prompt"] = body.prompt
        model = CompletionRequest
    if max_tokens is not None:  # otherwise the core's default
        fields["max_tokens"] = max_tokens
    return model.model_validate(fields)


def _role(role: oa.Role) -> Literal["system", "user", "assistant", "tool"]:
    return "system" if role == "developer" else role


def usage_of(result: TextResult) -> oa.UsageOut:
    """OpenAI's usage block."""
    return oa.UsageOut(
        prompt_tokens=result.usage.prompt_tokens,
        completion_tokens=result.usage.completion_tokens,
        total_tokens=result.usage.total_tokens,
    )


def now() -> int:
    """Unix seconds, as OpenAI's ``created`` fields."""
    return int(time.time())


class ChunkWriter:
    """Builds the chunks of one streamed response, chat or completion."""

    def __init__(self, *, chat: bool, completion_id: str, model: str) -> None:
        self.chat = chat
        self.id = completion_id
        self.model = model
        self.created = now()

    def start(self) -> oa.ChatCompletionChunk | None:
        """Chat streams open with the assistant role, as OpenAI's do."""
        if not self.chat:
            return None
        return self._chat(oa.ChatDelta(role="assistant", content=""), None)

    def token(self, text: str) -> oa.ChatCompletionChunk | oa.Completion:
        """A piece of text."""
        if self.chat:
            return self._chat(oa.ChatDelta(content=text), None)
        return self._completion(text, None)

    def finish(self, reason: str) -> oa.ChatCompletionChunk | oa.Completion:
        """The chunk carrying the finish reason."""
        if self.chat:
            return self._chat(oa.ChatDelta(), reason)
        return self._completion("", reason)

    def usage(self, usage: oa.UsageOut) -> oa.ChatCompletionChunk | oa.Completion:
        """The last chunk when ``stream_options.include_usage``: no choices, only usage."""
        if self.chat:
            return oa.ChatCompletionChunk(
                id=self.id, created=self.created, model=self.model, choices=(), usage=usage
            )
        return oa.Completion(
            id=self.id, created=self.created, model=self.model, choices=(), usage=usage
        )

    def _chat(self, delta: oa.ChatDelta, reason: str | None) -> oa.ChatCompletionChunk:
        return oa.ChatCompletionChunk(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=(oa.ChatChunkChoice(delta=delta, finish_reason=reason),),
        )

    def _completion(self, text: str, reason: str | None) -> oa.Completion:
        return oa.Completion(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=(oa.CompletionChoice(text=text, finish_reason=reason),),
        )


def chat_completion(completion_id: str, model: str, result: TextResult) -> oa.ChatCompletion:
    """A whole chat completion."""
    return oa.ChatCompletion(
        id=completion_id,
        created=now(),
        model=model,
        choices=(
            oa.ChatChoice(
                message=oa.AssistantMessage(content=result.text),
                finish_reason=result.finish_reason.value,
            ),
        ),
        usage=usage_of(result),
    )


def completion(completion_id: str, model: str, result: TextResult) -> oa.Completion:
    """A whole text completion."""
    return oa.Completion(
        id=completion_id,
        created=now(),
        model=model,
        choices=(oa.CompletionChoice(text=result.text, finish_reason=result.finish_reason.value),),
        usage=usage_of(result),
    )
