"""/v1/fine_tuning/jobs: create, list, retrieve, cancel, pause, resume, events, checkpoints.

Creating a job only writes a `validating_files` row; the worker process checks the files, queues
and trains it. Cancel and pause change the row's status; the worker sees it within a second and
stops at the end of the current step, saving a checkpoint (a paused job resumes from it).
"""

import csv
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import ValidationError

from tuneforge.registry import jobs, store
from tuneforge.registry.jobs import Job
from tuneforge.runs.naming import is_tuned_name, tuned_model_name
from tuneforge.serve.deps import project
from tuneforge.serve.model_access import base_model_for_request
from tuneforge.serve.protocol import (
    APIError,
    ErrorResponse,
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobEvent,
    JobCreate,
    ListPage,
    not_found,
)

router = APIRouter(tags=["fine-tuning"], responses={"4XX": {"model": ErrorResponse}})
# OpenAI's own fields, and TrainConfig fields the job's files and method set: not valid as extras.
RESERVED = {
    "data",
    "validation_data",
    "model",
    "suffix",
    "seed",
    "n_epochs",
    "batch_size",
    "learning_rate_multiplier",
    "method",
}


def _extras(body: JobCreate) -> dict:
    """Our additions to OpenAI's request: TrainConfig fields by name, plus `training_method` (lora |
    full), which is TrainConfig's `method` (OpenAI's `method` means supervised | dpo)."""
    from tuneforge.train.config import TrainConfig

    extras = dict(body.model_extra or {})
    unknown = [
        name
        for name in extras
        if name != "training_method" and (name not in TrainConfig.model_fields or name in RESERVED)
    ]
    if unknown:
        raise APIError(
            400, f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0], code="unknown_parameter"
        )
    if "training_method" in extras:
        extras["method"] = extras.pop("training_method")
    return extras


def _checked_file(owner: str, file_id: str | None, param: str):
    if file_id is None:
        return None
    row = jobs.get_file(owner, file_id)
    if row is None:
        raise APIError(400, f"invalid {param}: no file '{file_id}' in this project", param=param, code="invalid_file")
    if row.purpose != "fine-tune":
        raise APIError(
            400,
            f"invalid {param}: file '{file_id}' has purpose '{row.purpose}', not 'fine-tune'",
            param=param,
            code="invalid_file",
        )
    return row  # a file that failed the data check fails the job at validating_files, with the details


@router.post("/fine_tuning/jobs")
def create(body: JobCreate, request: Request, owner: str = Depends(project)) -> FineTuningJob:
    from tuneforge.train.config import TrainConfig

    method = body.method.model_dump(exclude_none=True) if body.method else {"type": "supervised"}
    if method["type"] != "supervised":
        raise APIError(
            400,
            f"method '{method['type']}' is not available yet; use 'supervised'",
            param="method.type",
            code="unsupported_method",
        )
    hyperparameters = (
        body.method.supervised.hyperparameters if body.method and body.method.supervised else None
    ) or body.hyperparameters
    hyperparameters = hyperparameters.model_dump(exclude_none=True) if hyperparameters else {}
    method["supervised"] = {"hyperparameters": hyperparameters}
    if is_tuned_name(body.model):
        raise APIError(
            400,
            "continuing from a tuned model is not available yet; use a base model",
            param="model",
            code="model_not_available",
        )
    base = base_model_for_request(body.model, request.app.state.allowed_model_dirs)
    if base is None:  # the same answer whatever exists on the server's disk
        raise APIError(
            400,
            f"The model '{body.model}' does not exist or you do not have access to it. Use a model "
            "listed by GET /v1/models.",
            param="model",
            code="model_not_available",
        )
    model = base[0]
    training = _checked_file(owner, body.training_file, "training_file")
    _checked_file(owner, body.validation_file, "validation_file")
    extras = _extras(body)
    seed = body.seed if body.seed is not None else 42
    try:  # the same validation `tuneforge train` applies, before anything is queued
        TrainConfig(
            model=model,
            data=Path(training.path),
            suffix=body.suffix,
            seed=seed,
            **{k: v for k, v in hyperparameters.items()},
            **extras,
        )
    except ValidationError as error:
        first = error.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise APIError(
            400, f"Invalid value for '{param}': {first['msg']}", param=param, code="invalid_value"
        ) from None
    job = jobs.create_job(
        owner,
        model=model,
        training_file=body.training_file,
        validation_file=body.validation_file,
        suffix=body.suffix,
        seed=seed,
        method=method,
        extra=extras,
        meta=body.metadata,
    )
    return FineTuningJob.from_row(job)


@router.get("/fine_tuning/jobs")
def list_jobs(
    request: Request,
    owner: str = Depends(project),
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ListPage[FineTuningJob]:
    metadata = {
        key[len("metadata[") : -1]: value
        for key, value in request.query_params.items()
        if key.startswith("metadata[") and key.endswith("]")
    }
    rows, has_more = jobs.list_jobs(owner, after, limit, metadata)
    return ListPage[FineTuningJob](data=[FineTuningJob.from_row(job) for job in rows], has_more=has_more)


def _owned(owner: str, job_id: str) -> Job:
    job = jobs.get_job(owner, job_id)
    if job is None:
        raise not_found("fine-tuning job", job_id, "fine_tuning_job_id")
    return job


@router.get("/fine_tuning/jobs/{job_id}")
def retrieve(job_id: str, owner: str = Depends(project)) -> FineTuningJob:
    return FineTuningJob.from_row(_owned(owner, job_id))


def _move(
    owner: str, job_id: str, allowed: tuple[str, ...], status: str, verb: str, event: str, **values
) -> FineTuningJob:
    job = _owned(owner, job_id)
    moved = jobs.transition(job.id, allowed, status, **values)
    if moved is None:
        raise APIError(
            400, f"Cannot {verb} a job whose status is '{jobs.get_job(owner, job_id).status}'.", code="invalid_state"
        )
    jobs.add_event(job.id, event)
    return FineTuningJob.from_row(moved)


@router.post("/fine_tuning/jobs/{job_id}/cancel")
def cancel(job_id: str, owner: str = Depends(project)) -> FineTuningJob:
    return _move(
        owner,
        job_id,
        ("validating_files", "queued", "running", "paused"),
        "cancelled",
        "cancel",
        "Job cancellation requested",
        estimated_finish=None,
    )


@router.post("/fine_tuning/jobs/{job_id}/pause")
def pause(job_id: str, owner: str = Depends(project)) -> FineTuningJob:
    return _move(owner, job_id, ("queued", "running"), "paused", "pause", "Job pause requested")


@router.post("/fine_tuning/jobs/{job_id}/resume")
def resume(job_id: str, owner: str = Depends(project)) -> FineTuningJob:
    return _move(
        owner,
        job_id,
        ("paused",),
        "queued",
        "resume",
        "Job resumed; queued to continue from its checkpoint",
        resume=True,
    )


@router.get("/fine_tuning/jobs/{job_id}/events")
def events(
    job_id: str,
    owner: str = Depends(project),
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> ListPage[FineTuningJobEvent]:
    rows, has_more = jobs.list_events(_owned(owner, job_id).id, after, limit)
    return ListPage[FineTuningJobEvent](data=[FineTuningJobEvent.from_row(e) for e in rows], has_more=has_more)


@router.get("/fine_tuning/jobs/{job_id}/checkpoints")
def checkpoints(
    job_id: str,
    owner: str = Depends(project),
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> ListPage[FineTuningJobCheckpoint]:
    job = _owned(owner, job_id)
    run = store.get_run(job.run_id) if job.run_id else None
    if run is None:
        return ListPage[FineTuningJobCheckpoint](data=[], has_more=False)
    train_rows = _metrics_by_step(Path(run.run_dir) / "metrics.csv")
    model_name = job.fine_tuned_model or tuned_model_name(job.model, job.project, job.suffix, run.id)
    data = [
        FineTuningJobCheckpoint.from_row(checkpoint, job.id, model_name, train_rows.get(checkpoint.step, {}))
        for checkpoint in sorted(run.checkpoints, key=lambda c: c.step, reverse=True)
    ]
    if after:
        ids = [c.id for c in data]
        data = data[ids.index(after) + 1 :] if after in ids else data
    return ListPage[FineTuningJobCheckpoint](data=data[:limit], has_more=len(data) > limit)


def _metrics_by_step(path: Path) -> dict[int, dict]:
    if not path.exists():
        return {}
    with path.open() as handle:
        return {
            int(row["step"]): {k: float(v) for k, v in row.items() if v not in ("", None) and k != "step"}
            for row in csv.DictReader(handle)
        }
