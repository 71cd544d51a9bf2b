"""Request bodies as pydantic models: the jobs API's, chat and text completions', feedback's.

A field OpenAI has and we cannot honour is refused by name; an unknown one as OpenAI refuses it."""

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tuneforge.serve.protocol.errors import APIError


class Hyperparameters(BaseModel):
    n_epochs: int | Literal["auto"] | None = None
    batch_size: int | Literal["auto"] | None = None
    learning_rate_multiplier: float | Literal["auto"] | None = None


class MethodHyperparameters(BaseModel):
    hyperparameters: Hyperparameters | None = None


class DpoHyperparameters(Hyperparameters):
    beta: float | Literal["auto"] | None = None


class DpoMethod(BaseModel):
    hyperparameters: DpoHyperparameters | None = None


class Method(BaseModel):
    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: MethodHyperparameters | None = None
    dpo: DpoMethod | None = None
    reinforcement: dict | None = None


class WandbIntegration(BaseModel):
    project: Annotated[str, Field(min_length=1, max_length=128)]
    name: Annotated[str, Field(max_length=128)] | None = None
    entity: Annotated[str, Field(max_length=128)] | None = None
    tags: list[Annotated[str, Field(max_length=64)]] | None = None


class Integration(BaseModel):
    type: Literal["wandb"]
    wandb: WandbIntegration


# OpenAI's bounds on an object's metadata.
METADATA_KEYS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512
Seed64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]  # what a 64-bit seed column and torch take


def check_metadata(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is None:
        return value
    if len(value) > METADATA_KEYS:
        raise ValueError(f"at most {METADATA_KEYS} keys, got {len(value)}")
    for key, item in value.items():
        if len(key) > METADATA_KEY_CHARS:
            raise ValueError(f"key '{key[:20]}...' is longer than {METADATA_KEY_CHARS} characters")
        if len(item) > METADATA_VALUE_CHARS:
            raise ValueError(f"the value of '{key}' is longer than {METADATA_VALUE_CHARS} characters")
    return value


class JobCreate(BaseModel):
    # Unknown fields are our extras (TrainConfig fields such as lora_rank or prompt_loss_weight);
    # the route checks them against TrainConfig and rejects misspellings with their name as `param`.
    model_config = ConfigDict(extra="allow")
    model: str
    training_file: str
    validation_file: str | None = None
    suffix: Annotated[str, Field(max_length=64)] | None = None
    seed: int | None = None  # bounded by TrainConfig.seed, which names the field in its error
    metadata: dict[str, str] | None = None
    method: Method | None = None
    hyperparameters: Hyperparameters | None = None  # deprecated by OpenAI in favour of method, still sent by old code
    integrations: Annotated[list[Integration], Field(max_length=5)] | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value):
        return check_metadata(value)


class ContentPart(BaseModel):
    """One part of a message's content. A text model reads text parts only; the route refuses others."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


TOOLS_UNSUPPORTED = (
    "this server's models answer in text, without tool calls. Describe the tools in the prompt "
    "and parse the answer, or ask for JSON with response_format (json_schema)."
)


class SamplingRequest(BaseModel):
    # No parameter is silently ignored: each is used, refused by name as unsupported (`UNSUPPORTED`),
    # or refused as unknown, as OpenAI answers a misspelt one. `_refuse_unused_fields` does it.
    model_config = ConfigDict(extra="forbid")
    # Sent routinely by OpenAI clients and with no effect on the answer, so accepted and dropped:
    # user / safety_identifier (abuse tracking), store / metadata (OpenAI keeps the completion; we
    # store every one anyway), service_tier (a latency and price tier), prompt_cache_key /
    # prompt_cache_retention (caching hints). reasoning_effort is refused: it changes OpenAI's answers.
    NO_EFFECT: ClassVar[tuple[str, ...]] = (
        "user",
        "safety_identifier",
        "store",
        "metadata",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_retention",
    )
    # OpenAI parameters this server cannot honour: name -> why, and what to do instead. Checked in
    # this order (tools before parallel_tool_calls); a null value, or one in `HARMLESS`, is accepted.
    UNSUPPORTED: ClassVar[dict[str, str]] = {}
    HARMLESS: ClassVar[dict[str, tuple]] = {}
    model: str
    temperature: Annotated[float, Field(ge=0, le=2)] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    # OpenAI takes up to 4 stop sequences; an empty one would stop before the first token.
    stop: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=4)]
        | None
    ) = None
    seed: Seed64 | None = None
    n: Annotated[int, Field(ge=1, le=8)] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] = 0.0
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] = 0.0
    logit_bias: dict[str, float] | None = None  # token id (as a string) -> bias in [-100, 100]
    # {"type": "text" | "json_object" | "json_schema", "json_schema": {"name", "schema", "strict"}}: the
    # engine checks it (constrained.py) and names response_format in its 400.
    response_format: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _refuse_unused_fields(cls, data):
        if not isinstance(data, dict):
            return data
        for name, reason in cls.UNSUPPORTED.items():
            value = data.get(name)
            if value is not None and value not in cls.HARMLESS.get(name, ()):
                raise APIError(400, f"{name} is not supported: {reason}", param=name, code="unsupported_parameter")
        for name in data:
            if name not in cls.model_fields and name not in cls.NO_EFFECT and name not in cls.UNSUPPORTED:
                raise APIError(
                    400, f"Unrecognized request argument supplied: {name}", param=name, code="unknown_parameter"
                )
        return {name: value for name, value in data.items() if name in cls.model_fields}

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias(cls, value):
        for token, bias in (value or {}).items():
            if not token.isdigit():
                raise ValueError(f"'{token}' is not a token id (a non-negative integer, written as a string)")
            if not -100 <= bias <= 100:
                raise ValueError(f"the bias of token {token} must be between -100 and 100, got {bias}")
        return value

    def stop_list(self) -> list[str] | None:
        return [self.stop] if isinstance(self.stop, str) else self.stop

    def logit_bias_ids(self) -> dict[int, float] | None:
        return {int(token): bias for token, bias in self.logit_bias.items()} if self.logit_bias else None

    def logprob_alternatives(self) -> int | None:
        """None: no log-probs; k: each token's log-prob and its k most likely alternatives."""
        return None


class ChatCompletionRequest(SamplingRequest):
    UNSUPPORTED: ClassVar[dict[str, str]] = {
        "tools": TOOLS_UNSUPPORTED,
        "tool_choice": TOOLS_UNSUPPORTED,
        "functions": TOOLS_UNSUPPORTED,
        "function_call": TOOLS_UNSUPPORTED,
        "parallel_tool_calls": TOOLS_UNSUPPORTED,
        "audio": "the answer is text only. Omit audio and modalities.",
        "modalities": 'the answer is text only. Send modalities ["text"] or omit it.',
        "prediction": "the answer is generated in full, without predicted outputs. Omit prediction.",
        "web_search_options": "the model answers from its weights, without web search. Put the sources in the prompt.",
        "reasoning_effort": "these models do not reason before answering. Omit reasoning_effort.",
        "verbosity": "ask for the length you want in the prompt, or set max_completion_tokens.",
    }
    # Values that ask for nothing beyond a plain text answer (parallel_tool_calls means nothing without tools).
    HARMLESS: ClassVar[dict[str, tuple]] = {
        "tool_choice": ("none",),
        "function_call": ("none",),
        "parallel_tool_calls": (True, False),
        "modalities": (["text"],),
    }
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool | None = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs_need_logprobs(cls, value, info):
        if value and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs set to true")
        return value

    def logprob_alternatives(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


MAX_PROMPTS = 32  # prompts in one /v1/completions request: each is a row of one decode batch


class CompletionRequest(SamplingRequest):
    prompt: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=MAX_PROMPTS)]
    )
    max_tokens: Annotated[int, Field(ge=1)] | None = 16  # OpenAI's default for /v1/completions
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None  # the legacy form: k alternatives per token
    UNSUPPORTED: ClassVar[dict[str, str]] = {
        "echo": "the prompt is not echoed. Omit echo and prepend the prompt yourself.",
        "best_of": "ask for n completions and pick one yourself.",
        "suffix": "text is continued, never inserted before a suffix. Omit suffix.",
    }
    HARMLESS: ClassVar[dict[str, tuple]] = {"echo": (False,), "best_of": (1,), "suffix": ("",)}

    def logprob_alternatives(self) -> int | None:
        return self.logprobs


class FeedbackCreate(BaseModel):
    completion_id: str
    rating: Literal[1, -1] = Field(description="1: a good answer; -1: a bad one.")
    correction: str | None = Field(None, description="The answer it should have given: becomes training data.")
    comment: str | None = None
