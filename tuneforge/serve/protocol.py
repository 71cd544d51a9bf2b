"""The OpenAI objects we speak: request bodies as pydantic models, responses rendered from registry rows.

Field names, ids and shapes follow OpenAI's API (openai-python's `types/`), so the official client
parses our answers unchanged. What OpenAI lacks we add as extra fields, never by changing theirs.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tuneforge.registry.jobs import Job, JobEvent, StoredFile, unix


class APIError(Exception):
    """An error the client caused (or may retry), rendered as OpenAI's envelope with its HTTP status."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def envelope(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def not_found(kind: str, object_id: str, param: str | None = None) -> APIError:
    return APIError(404, f"No {kind} found with id '{object_id}'.", param=param, code="not_found")


# ------------------------------------------------------------------------------ requests
class Hyperparameters(BaseModel):
    n_epochs: int | Literal["auto"] | None = None
    batch_size: int | Literal["auto"] | None = None
    learning_rate_multiplier: float | Literal["auto"] | None = None


class MethodHyperparameters(BaseModel):
    hyperparameters: Hyperparameters | None = None


class Method(BaseModel):
    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: MethodHyperparameters | None = None
    dpo: dict | None = None
    reinforcement: dict | None = None


class JobCreate(BaseModel):
    # Unknown fields are our extras (TrainConfig fields such as lora_rank or prompt_loss_weight);
    # the route checks them against TrainConfig and rejects misspellings with their name as `param`.
    model_config = ConfigDict(extra="allow")
    model: str
    training_file: str
    validation_file: str | None = None
    suffix: Annotated[str, Field(max_length=64)] | None = None
    seed: int | None = None
    metadata: dict[str, str] | None = None
    method: Method | None = None
    hyperparameters: Hyperparameters | None = None  # deprecated by OpenAI in favour of method, still sent by old code
    integrations: list | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict] | None = None
    name: str | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingRequest(BaseModel):
    # Parameters we do not use (logit_bias, user, store, ...) are accepted and ignored, as a client
    # written for OpenAI may send them.
    model_config = ConfigDict(extra="allow")
    model: str
    temperature: Annotated[float, Field(ge=0, le=2)] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: Annotated[int, Field(ge=1, le=8)] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None

    def stop_list(self) -> list[str] | None:
        return [self.stop] if isinstance(self.stop, str) else self.stop


class ChatCompletionRequest(SamplingRequest):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None


class CompletionRequest(SamplingRequest):
    prompt: str | list[str]
    max_tokens: Annotated[int, Field(ge=1)] | None = 16  # OpenAI's default for /v1/completions


class FeedbackCreate(BaseModel):
    completion_id: str
    rating: Literal[1, -1] = Field(description="1: a good answer; -1: a bad one.")
    correction: str | None = Field(None, description="The answer it should have given: becomes training data.")
    comment: str | None = None


# ----------------------------------------------------------------------------- responses
def page(data: list[dict], has_more: bool) -> dict:
    return {"object": "list", "data": data, "has_more": has_more}


def file_object(row: StoredFile) -> dict:
    return {"id": row.id, "object": "file", "bytes": row.bytes, "created_at": unix(row.created_at),
            "filename": row.filename, "purpose": row.purpose, "status": row.status,
            "status_details": row.status_details, "expires_at": None}


def job_object(job: Job) -> dict:
    requested = (job.method.get(job.method["type"]) or {}).get("hyperparameters") or {}
    hyperparameters = {name: (job.resolved or {}).get(name) or requested.get(name) or "auto"
                       for name in ("n_epochs", "batch_size", "learning_rate_multiplier")}
    return {
        "object": "fine_tuning.job", "id": job.id, "model": job.model, "created_at": unix(job.created_at),
        "finished_at": unix(job.finished_at), "fine_tuned_model": job.fine_tuned_model,
        "organization_id": job.project, "result_files": job.result_files or [], "status": job.status,
        "validation_file": job.validation_file, "training_file": job.training_file,
        "hyperparameters": hyperparameters, "trained_tokens": job.trained_tokens, "error": job.error,
        "seed": job.seed, "estimated_finish": unix(job.estimated_finish), "integrations": [],
        "metadata": job.meta, "user_provided_suffix": job.suffix,
        "method": {**job.method, job.method["type"]: {"hyperparameters": hyperparameters}},
        "tuneforge": {"run_id": job.run_id, **(job.extra or {})},
    }


def event_object(event: JobEvent) -> dict:
    return {"object": "fine_tuning.job.event", "id": event.id, "created_at": unix(event.created_at),
            "level": event.level, "message": event.message, "data": event.data, "type": event.type}


def model_object(name: str, created: int, owned_by: str, **extra: Any) -> dict:
    return {"id": name, "object": "model", "created": created, "owned_by": owned_by, **extra}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
