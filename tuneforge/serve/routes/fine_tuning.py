"""/v1/fine_tuning/jobs: create, list, retrieve, cancel, pause, resume, events, checkpoints.

Creating a job only writes a `validating_files` row; the worker process checks the files, queues
and trains it. Cancel and pause change the row's status; the worker sees it within a second and
stops at the end of the current step, saving a checkpoint (a paused job resumes from it).
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from tuneforge.jobs import submit
from tuneforge.registry import jobs
from tuneforge.registry.jobs import Job
from tuneforge.runs import ownership
from tuneforge.runs.naming import is_tuned_name
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


@router.post("/fine_tuning/jobs")
def create(body: JobCreate, request: Request, owner: str = Depends(project)) -> FineTuningJob:
    if is_tuned_name(body.model):  # train on from the caller's own tuned model (runs/continuation.py)
        base = (body.model, "tuned") if _owns_tuned_model(owner, body.model) else None
    else:
        base = base_model_for_request(body.model, request.app.state.allowed_model_dirs)
    if base is None:  # the same answer whatever exists on the server's disk, or in other projects
        raise APIError(
            400,
            f"The model '{body.model}' does not exist or you do not have access to it. Use a model "
            "listed by GET /v1/models.",
            param="model",
            code="model_not_available",
        )
    method = body.method.model_dump(exclude_none=True) if body.method else {"type": "supervised"}
    chosen = getattr(body.method, method["type"], None) if body.method else None  # {"hyperparameters": ...}
    hyperparameters = (chosen.hyperparameters if isinstance(chosen, BaseModel) else None) or body.hyperparameters
    job = submit.submit(
        owner,
        model=base[0],
        training_file=body.training_file,
        validation_file=body.validation_file,
        suffix=body.suffix,
        seed=body.seed,
        metadata=body.metadata,
        method={"type": method["type"]},
        hyperparameters=hyperparameters.model_dump(exclude_none=True) if hyperparameters else {},
        extras=dict(body.model_extra or {}),
        integrations=[i.model_dump(exclude_none=True) for i in body.integrations or []],
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


@router.post("/fine_tuning/jobs/{job_id}/cancel")
def cancel(job_id: str, owner: str = Depends(project)) -> FineTuningJob:
    return FineTuningJob.from_row(submit.steer(_owned(owner, job_id), "cancel"))


@router.post("/fine_tuning/jobs/{job_id}/pause")
def pause(job_id: str, owner: str = Depends(project)) -> FineTuningJob:
    return FineTuningJob.from_row(submit.steer(_owned(owner, job_id), "pause"))


@router.post("/fine_tuning/jobs/{job_id}/resume")
def resume(job_id: str, owner: str = Depends(project)) -> FineTuningJob:
    return FineTuningJob.from_row(submit.steer(_owned(owner, job_id), "resume"))


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
    model_name, kept = submit.checkpoints(job)
    data = [FineTuningJobCheckpoint.from_row(checkpoint, job.id, model_name, train) for checkpoint, train in kept]
    if after:
        ids = [c.id for c in data]
        data = data[ids.index(after) + 1 :] if after in ids else data
    return ListPage[FineTuningJobCheckpoint](data=data[:limit], has_more=len(data) > limit)


def _owns_tuned_model(owner: str, name: str) -> bool:
    try:
        return ownership.owned_tuned_model(owner, name) is not None
    except ownership.NotOwned:
        return False
