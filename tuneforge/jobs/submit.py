"""Submitting and steering fine-tuning jobs: what the jobs API asks of the queue.

`submit` checks a job the way `tuneforge train` checks a run (the method, the files, every extra
option against TrainConfig) before a row is written; the worker then validates the files' contents
and trains it. `steer` is the job's state machine for cancel, pause and resume: one guarded UPDATE
each, so a request and the worker never overwrite each other. `checkpoints` lists a job's run's
checkpoints with the training metrics of their step. Errors are `InvalidRequest` naming the field.
"""

import csv
from pathlib import Path

from pydantic import ValidationError

from tuneforge.errors import InvalidRequest, UsageError
from tuneforge.registry import artifacts, jobs, store
from tuneforge.registry.jobs import Job
from tuneforge.runs import stored
from tuneforge.runs.continuation import continue_from
from tuneforge.runs.naming import tuned_model_name

DEFAULT_SEED = 42
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
    "objective",
    "dpo_beta",
    "continued_from",
    "tracking_project",
    "tracking_name",
    "tracking_tags",
    "wandb_entity",
}
# OpenAI's method types Tuneforge trains, as TrainConfig's objective; its hyperparameter names
# that are not TrainConfig's own.
OBJECTIVES = {"supervised": "sft", "dpo": "dpo"}
RENAMED = {"beta": "dpo_beta"}
# verb -> (statuses it applies to, the status it sets, the event it writes, other values it sets)
STEERING = {
    "cancel": (
        ("validating_files", "queued", "running", "paused"),
        "cancelled",
        "Job cancellation requested",
        {"estimated_finish": None},
    ),
    "pause": (("queued", "running"), "paused", "Job pause requested", {}),
    "resume": (("paused",), "queued", "Job resumed; queued to continue from its checkpoint", {"resume": True}),
}


def _extras(extras: dict) -> dict:
    """Our additions to OpenAI's request: TrainConfig fields by name, plus `training_method` (lora |
    full), which is TrainConfig's `method` (OpenAI's `method` means supervised | dpo)."""
    from tuneforge.train.config import TrainConfig

    unknown = [
        name
        for name in extras
        if name != "training_method" and (name not in TrainConfig.model_fields or name in RESERVED)
    ]
    if unknown:
        raise InvalidRequest(
            f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0], code="unknown_parameter"
        )
    extras = dict(extras)
    if "training_method" in extras:
        extras["method"] = extras.pop("training_method")
    return extras


def _integration_extras(integrations: list[dict]) -> dict:
    """OpenAI's `integrations` (a W&B entry: project, name, entity, tags) as the TrainConfig fields of
    the trackers (runs/tracking.py)."""
    for entry in integrations:
        wandb = entry["wandb"]
        return {
            "report_to": "wandb",
            "tracking_project": wandb["project"],
            "tracking_name": wandb.get("name"),
            "wandb_entity": wandb.get("entity"),
            "tracking_tags": ",".join(wandb.get("tags") or []),
        }
    return {}


def job_integrations(job: Job) -> list[dict]:
    """A job's `integrations` as OpenAI shows them, from the tracker fields it trains with."""
    extra = job.extra or {}
    if "wandb" not in (extra.get("report_to") or "").split(","):
        return []
    wandb = {"project": extra.get("tracking_project") or "tuneforge"}
    wandb |= {k: extra[f] for k, f in (("name", "tracking_name"), ("entity", "wandb_entity")) if extra.get(f)}
    if extra.get("tracking_tags"):
        wandb["tags"] = extra["tracking_tags"].split(",")
    return [{"type": "wandb", "wandb": wandb}]


def _checked_file(project: str, file_id: str | None, param: str):
    if file_id is None:
        return None
    row = jobs.get_file(project, file_id)
    if row is None:
        raise InvalidRequest(f"invalid {param}: no file '{file_id}' in this project", param=param, code="invalid_file")
    if row.purpose != "fine-tune":
        raise InvalidRequest(
            f"invalid {param}: file '{file_id}' has purpose '{row.purpose}', not 'fine-tune'",
            param=param,
            code="invalid_file",
        )
    return row  # a file that failed the data check fails the job at validating_files, with the details


def submit(
    project: str,
    model: str,
    training_file: str,
    validation_file: str | None,
    suffix: str | None,
    seed: int | None,
    metadata: dict | None,
    method: dict,
    hyperparameters: dict,
    extras: dict,
    integrations: list[dict] = (),
) -> Job:
    """A `validating_files` job for `project`, after every check that needs no file contents.

    `model` is a base model the caller may use (the server decides which: serve/model_access.py);
    `method` is OpenAI's `{"type": ...}`, `hyperparameters` that method's hyperparameters."""
    if method["type"] not in OBJECTIVES:
        raise InvalidRequest(
            f"method '{method['type']}' is not available yet; use 'supervised' or 'dpo'",
            param="method.type",
            code="unsupported_method",
        )
    method = {**method, method["type"]: {"hyperparameters": hyperparameters}}
    training = _checked_file(project, training_file, "training_file")
    validation = _checked_file(project, validation_file, "validation_file")
    extras = {**_extras(extras), **_integration_extras(integrations)}
    seed = seed if seed is not None else DEFAULT_SEED
    try:  # the config the worker will train with, checked as `tuneforge train` checks it, before anything is queued
        config = training_config(model, training, validation, suffix, seed, method, extras)
    except ValidationError as error:
        first = error.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise InvalidRequest(f"Invalid value for '{param}': {first['msg']}", param=param) from None
    try:  # a tuned model to train on: the caller's own, in a shape it can continue
        continue_from(config, project)
    except UsageError as error:
        param = getattr(error, "param", "model")
        raise InvalidRequest(error.message, param="training_method" if param == "method" else param) from None
    return jobs.create_job(
        project,
        model=model,
        training_file=training_file,
        validation_file=validation_file,
        suffix=suffix,
        seed=seed,
        method=method,
        extra=extras,
        meta=metadata,
    )


def training_config(model: str, training, validation, suffix: str | None, seed: int, method: dict, extras: dict):
    """The TrainConfig of a job: its base model, stored files, suffix, seed, OpenAI method (its type and
    hyperparameters) and our extras. `submit` checks it before the row is written; the worker trains with it."""
    from tuneforge.train.config import TrainConfig

    hyperparameters = (method.get(method["type"]) or {}).get("hyperparameters") or {}
    return TrainConfig(
        model=model,
        data=artifacts.local_copy(training.path),  # a stored object is fetched once into this machine's cache
        validation_data=artifacts.local_copy(validation.path) if validation else None,
        suffix=suffix,
        seed=seed,
        objective=OBJECTIVES[method["type"]],
        **{RENAMED.get(k, k): v for k, v in hyperparameters.items() if v is not None},
        **extras,
    )


def job_config(job: Job):
    """The TrainConfig the worker trains `job` with (the one `submit` checked)."""
    validation = jobs.get_file(job.project, job.validation_file) if job.validation_file else None
    training = jobs.get_file(job.project, job.training_file)
    return training_config(job.model, training, validation, job.suffix, job.seed, job.method, job.extra or {})


def steer(job: Job, verb: str) -> Job:
    """Cancel, pause or resume `job`; InvalidRequest (`invalid_state`) when its status does not allow it."""
    allowed, status, event, values = STEERING[verb]
    moved = jobs.transition(job.id, allowed, status, **values)
    if moved is None:
        now = jobs.get_job(None, job.id).status
        raise InvalidRequest(f"Cannot {verb} a job whose status is '{now}'.", code="invalid_state")
    jobs.add_event(job.id, event)
    return moved


def checkpoints(job: Job) -> tuple[str, list[tuple[store.Checkpoint, dict]]]:
    """(the job's tuned model name, its run's checkpoints newest first, each with its step's training metrics)."""
    run = store.get_run(job.run_id) if job.run_id else None
    if run is None:
        return job.fine_tuned_model or "", []
    train_rows = _metrics_by_step(stored.run_folder(run) / "metrics.csv")
    model_name = job.fine_tuned_model or tuned_model_name(job.model, job.project, job.suffix, run.id)
    ordered = sorted(run.checkpoints, key=lambda c: c.step, reverse=True)
    return model_name, [(checkpoint, train_rows.get(checkpoint.step, {})) for checkpoint in ordered]


def _metrics_by_step(path: Path) -> dict[int, dict]:
    if not path.exists():
        return {}
    with path.open() as handle:
        return {
            int(row["step"]): {k: float(v) for k, v in row.items() if v not in ("", None) and k != "step"}
            for row in csv.DictReader(handle)
        }
