"""Response objects built from registry rows: lists, files, fine-tuning jobs, their events and
checkpoints, models, and our additions (feedback, request metrics)."""

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from tuneforge.jobs.submit import job_integrations
from tuneforge.registry.access import Completion as StoredCompletion
from tuneforge.registry.jobs import Job, JobEvent, StoredFile, unix
from tuneforge.registry.store import Checkpoint
from tuneforge.registry.store import Model as TunedModel
from tuneforge.runs.naming import checkpoint_id, checkpoint_model_name

# ----------------------------------------------------------------------------- responses
# One pydantic model per object we answer with, named and shaped after openai-python's `types/`
# (vLLM's protocol.py does the same), so /openapi.json documents what goes on the wire. They are
# serialized with every field: OpenAI's nulls (`finished_at`, `error`, `logprobs`, ...) are part of
# its objects, so nothing here is dumped with exclude_none. The few fields that some objects carry
# and others lack (a tuned model's `root`, a stream's last `usage`) are `omitted_when_none` instead.
T = TypeVar("T")
FinishReason = Literal["stop", "length"]  # the engine's: an end of turn or stop sequence, or max_tokens


def _is_none(value: Any) -> bool:
    return value is None


def omitted_when_none(description: str | None = None) -> Any:
    """A field left out of the JSON when None (rather than written as null), as today's wire has it."""
    return Field(None, exclude_if=_is_none, description=description)


class ObjectList(BaseModel, Generic[T]):
    """A whole list (models, metrics): OpenAI's `{"object": "list", "data": [...]}`, no paging."""

    object: Literal["list"] = "list"
    data: list[T]


class ListPage(ObjectList[T], Generic[T]):
    """One page of a list; the next page starts `after` the last id of this one."""

    has_more: bool


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: Literal["fine-tune", "fine-tune-results", "user_data", "evals"]
    status: Literal["uploaded", "processed", "error"]
    status_details: str | None = Field(
        None, description="Why the data check failed: the first problems, each with its line, field and fix."
    )
    expires_at: int | None = None

    @classmethod
    def from_row(cls, row: StoredFile) -> "FileObject":
        return cls(
            id=row.id,
            bytes=row.bytes,
            created_at=unix(row.created_at),
            filename=row.filename,
            purpose=row.purpose,
            status=row.status,
            status_details=row.status_details,
        )


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class FineTuningJobHyperparameters(BaseModel):
    """What the job trains with: the resolved value once training starts, else the requested one, else auto."""

    n_epochs: int | Literal["auto"]
    batch_size: int | Literal["auto"]
    learning_rate_multiplier: float | Literal["auto"]


class SupervisedMethod(BaseModel):
    hyperparameters: FineTuningJobHyperparameters


class DpoHyperparameters(FineTuningJobHyperparameters):
    beta: float | Literal["auto"]


class DpoMethod(BaseModel):
    hyperparameters: DpoHyperparameters


class FineTuningJobMethod(BaseModel):
    type: Literal["supervised", "dpo", "reinforcement"]
    # Only the method the job uses is present (OpenAI's reinforcement method is refused today).
    supervised: SupervisedMethod | None = omitted_when_none()
    dpo: DpoMethod | None = omitted_when_none()
    reinforcement: dict[str, Any] | None = omitted_when_none()


class FineTuningJobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class FineTuningJobTuneforge(BaseModel):
    """Our additions to a job: the run that trains it, and the TrainConfig fields the request set
    beyond OpenAI's (`lora_rank`, `prompt_loss_weight`, `method`: lora | full, ...), by name."""

    model_config = ConfigDict(extra="allow")
    run_id: str | None = Field(
        None, description="The registry run training this job (`tuneforge runs`); null until it starts."
    )


JobStatus = Literal["validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"]


class FineTuningJob(BaseModel):
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    id: str
    model: str
    created_at: int
    finished_at: int | None = None
    fine_tuned_model: str | None = None
    organization_id: str = Field(description="The project that owns the job.")
    result_files: list[str]
    status: JobStatus
    validation_file: str | None = None
    training_file: str
    hyperparameters: FineTuningJobHyperparameters
    trained_tokens: int | None = None
    error: FineTuningJobError | None = None
    seed: int
    estimated_finish: int | None = None
    integrations: list[dict[str, Any]] = []
    metadata: dict[str, str] | None = None
    user_provided_suffix: str | None = None
    method: FineTuningJobMethod
    tuneforge: FineTuningJobTuneforge

    @classmethod
    def from_row(cls, job: Job) -> "FineTuningJob":
        requested = (job.method.get(job.method["type"]) or {}).get("hyperparameters") or {}
        hyperparameters = {
            name: (job.resolved or {}).get(name) or requested.get(name) or "auto"
            for name in ("n_epochs", "batch_size", "learning_rate_multiplier")
        }
        method_hyperparameters = hyperparameters
        if job.method["type"] == "dpo":
            beta = (job.resolved or {}).get("dpo_beta") or requested.get("beta") or "auto"
            method_hyperparameters = {**hyperparameters, "beta": beta}
        return cls(
            id=job.id,
            model=job.model,
            created_at=unix(job.created_at),
            finished_at=unix(job.finished_at),
            fine_tuned_model=job.fine_tuned_model,
            organization_id=job.project,
            result_files=job.result_files or [],
            status=job.status,
            validation_file=job.validation_file,
            training_file=job.training_file,
            hyperparameters=hyperparameters,
            trained_tokens=job.trained_tokens,
            error=job.error,
            seed=job.seed,
            estimated_finish=unix(job.estimated_finish),
            metadata=job.meta,
            user_provided_suffix=job.suffix,
            method={**job.method, job.method["type"]: {"hyperparameters": method_hyperparameters}},
            tuneforge={"run_id": job.run_id, **(job.extra or {})},
            integrations=job_integrations(job),
        )


class FineTuningJobEvent(BaseModel):
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    id: str
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    data: dict[str, Any] | None = Field(
        None, description="For `metrics` events: the step's losses, accuracy, learning rate and tokens/s."
    )
    type: Literal["message", "metrics"]

    @classmethod
    def from_row(cls, event: JobEvent) -> "FineTuningJobEvent":
        return cls(
            id=event.id,
            created_at=unix(event.created_at),
            level=event.level,
            message=event.message,
            data=event.data,
            type=event.type,
        )


class FineTuningJobCheckpointMetrics(BaseModel):
    step: int
    train_loss: float | None = None
    train_mean_token_accuracy: float | None = None
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None


class FineTuningJobCheckpoint(BaseModel):
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    id: str
    created_at: int
    fine_tuning_job_id: str
    step_number: int
    fine_tuned_model_checkpoint: str = Field(description="The checkpoint's model name: usable wherever a model is.")
    metrics: FineTuningJobCheckpointMetrics

    @classmethod
    def from_row(
        cls, checkpoint: Checkpoint, job_id: str, model_name: str, train_metrics: dict[str, float]
    ) -> "FineTuningJobCheckpoint":
        """`train_metrics`: the metrics.csv row of the checkpoint's step; validation comes from the checkpoint row."""
        valid = checkpoint.metrics or {}
        return cls(
            id=checkpoint_id(job_id, checkpoint.step),
            created_at=unix(checkpoint.created_at),
            fine_tuning_job_id=job_id,
            step_number=checkpoint.step,
            fine_tuned_model_checkpoint=checkpoint_model_name(model_name, checkpoint.step),
            metrics=FineTuningJobCheckpointMetrics(
                step=checkpoint.step,
                train_loss=train_metrics.get("train_loss"),
                train_mean_token_accuracy=train_metrics.get("train_accuracy"),
                valid_loss=valid.get("valid_loss"),
                valid_mean_token_accuracy=valid.get("valid_mean_token_accuracy"),
                full_valid_loss=valid.get("valid_loss"),
                full_valid_mean_token_accuracy=valid.get("valid_mean_token_accuracy"),
            ),
        )


class BaseModelInfo(BaseModel):
    source: str = Field(description="Where the base model comes from: bundled | hub | local.")


class TunedModelInfo(BaseModel):
    run_id: str = Field(description="The registry run that trained it.")
    kind: str = Field(description="adapter (LoRA weights on its base) | full (all weights).")


# A base model's owner, by its source (model_access.base_model_for_request's second value).
MODEL_OWNERS = {"bundled": "tuneforge", "hub": "huggingface"}


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = Field(
        description="A base model's origin (tuneforge, huggingface, local); a tuned model's project."
    )
    root: str | None = omitted_when_none("A tuned model's base model.")
    parent: str | None = omitted_when_none("A tuned model's base model.")
    tuneforge: TunedModelInfo | BaseModelInfo

    @classmethod
    def base(cls, name: str, source: str) -> "Model":
        return cls(
            id=name, created=0, owned_by=MODEL_OWNERS.get(source, source), tuneforge=BaseModelInfo(source=source)
        )

    @classmethod
    def from_row(cls, model: TunedModel, owned_by: str) -> "Model":
        return cls(
            id=model.name,
            created=unix(model.created_at),
            owned_by=owned_by,
            root=model.base_model,
            parent=model.base_model,
            tuneforge=TunedModelInfo(run_id=model.run_id, kind=model.kind),
        )


class ModelDeleted(BaseModel):
    id: str
    object: Literal["model"] = "model"
    deleted: bool


class Feedback(BaseModel):
    id: str
    object: Literal["tuneforge.feedback"] = "tuneforge.feedback"
    completion_id: str
    model: str
    rating: Literal[1, -1]
    correction: str | None = None

    @classmethod
    def recorded(
        cls, feedback_id: int, completion: StoredCompletion, rating: int, correction: str | None
    ) -> "Feedback":
        return cls(
            id=f"feedback-{feedback_id}",
            completion_id=completion.id,
            model=completion.model,
            rating=rating,
            correction=correction,
        )


class LatencySummary(BaseModel):
    mean: float
    p50: float
    p95: float
    max: float


class RequestMetrics(BaseModel):
    """The request log of one route and model, for the caller's project."""

    method: str
    route: str = Field(description="The route's template, e.g. /v1/fine_tuning/jobs/{job_id}.")
    model: str | None = None
    requests: int
    errors: int = Field(description="Requests answered with a status of 400 or more.")
    latency_ms: LatencySummary
    prompt_tokens: int
    completion_tokens: int
