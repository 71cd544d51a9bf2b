"""Chat and text completions, streamed chunks, usage and log-probs, as OpenAI's objects."""

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from tuneforge.serve.protocol.objects import FinishReason, omitted_when_none

if TYPE_CHECKING:
    from tuneforge.inference.engine import TokenLogprob


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> "Usage":
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )


class TopLogprob(BaseModel):
    token: str = Field(description='The token\'s text; "bytes:\\xe6" when it holds part of a character.')
    logprob: float
    bytes: list[int] | None = None


class ChatCompletionTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[ChatCompletionTokenLogprob] | None = None
    refusal: list[ChatCompletionTokenLogprob] | None = None

    @classmethod
    def of(cls, logprobs: "list[TokenLogprob] | None") -> "ChoiceLogprobs | None":
        """The engine's token log-probs, or None when the request did not ask for them."""
        if logprobs is None:
            return None
        return cls(
            content=[
                ChatCompletionTokenLogprob(
                    token=t.token,
                    logprob=t.logprob,
                    bytes=t.bytes,
                    top_logprobs=[TopLogprob(token=a.token, logprob=a.logprob, bytes=a.bytes) for a in t.top_logprobs],
                )
                for t in logprobs
            ]
        )


class ChatCompletionMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None


class ChatCompletionChoice(BaseModel):
    index: int
    message: ChatCompletionMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason


class ChatCompletion(BaseModel):
    id: str = Field(description="The completion's id: feedback on it (POST /v1/tuneforge/feedback) names it.")
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    usage: Usage
    choices: list[ChatCompletionChoice]


class ChoiceDelta(BaseModel):
    role: Literal["assistant"] | None = omitted_when_none("On the first chunk only.")
    content: str | None = omitted_when_none()


class ChatCompletionChunkChoice(BaseModel):
    index: int
    delta: ChoiceDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed chat completion."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatCompletionChunkChoice]
    usage: Usage | None = omitted_when_none(
        "On the last chunk, with no choices, when stream_options.include_usage is set."
    )


class CompletionLogprobs(BaseModel):
    """The legacy form: per token its text, log-prob, k most likely alternatives (and itself), and character offset."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReason | None = Field(None, description="null on a streamed chunk before the last.")


class Completion(BaseModel):
    """A /v1/completions answer, and each server-sent event of a streamed one (as OpenAI's)."""

    id: str = Field(description="The completion's id: feedback on it (POST /v1/tuneforge/feedback) names it.")
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[CompletionChoice]
    usage: Usage | None = omitted_when_none(
        "Always on a plain answer; on a stream's last event when stream_options.include_usage is set."
    )
