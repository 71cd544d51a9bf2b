"""The registry: what exists and what came from what, shared by the CLI, the worker and the server.

Datasets, runs, checkpoints, tuned models, evaluations and human ratings, and the operations on
them (the database itself is db.py's). A run is a directory plus a row: `delete_run` removes both,
and `runs list` flags rows whose directory has gone missing.
"""

import json
import shutil
from datetime import datetime
from pathlib import Path

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tuneforge.registry import artifacts
from tuneforge.registry.db import Base, _sessionmaker, database_url, now, session  # noqa: F401  (the registry's API)


class Dataset(Base):
    """A data file, identified by the sha256 of its bytes."""

    __tablename__ = "datasets"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    kind: Mapped[str | None] = mapped_column(String(16))
    examples: Mapped[int | None] = mapped_column(Integer)
    manifest: Mapped[dict | None] = mapped_column(JSON)  # the data stage's manifest, when it came from `prepare`
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="running")  # running | succeeded | failed | interrupted
    method: Mapped[str] = mapped_column(String(16))
    base_model: Mapped[str] = mapped_column(Text)
    suffix: Mapped[str | None] = mapped_column(String(64))
    run_dir: Mapped[str] = mapped_column(Text)
    # Whose run it is: the project of the job that trained it, `default` for `tuneforge train`.
    project: Mapped[str] = mapped_column(String(64), index=True, default="default", server_default="default")
    config: Mapped[dict] = mapped_column(JSON)
    train_dataset: Mapped[str | None] = mapped_column(ForeignKey("datasets.sha256"))
    validation_dataset: Mapped[str | None] = mapped_column(ForeignKey("datasets.sha256"))
    trained_tokens: Mapped[int] = mapped_column(Integer, default=0)
    metrics: Mapped[dict | None] = mapped_column(JSON)  # final metrics
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    checkpoints: Mapped[list["Checkpoint"]] = relationship(
        back_populates="run", cascade="all, delete-orphan", order_by="Checkpoint.step"
    )
    models: Mapped[list["Model"]] = relationship(back_populates="run", cascade="all, delete-orphan")


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[float] = mapped_column(Float)
    path: Mapped[str] = mapped_column(Text)
    metrics: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    run: Mapped[Run] = relationship(back_populates="checkpoints")


class Model(Base):
    """A tuned model users can name: `ft:<base>:<suffix>:<run id>`."""

    __tablename__ = "models"
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    base_model: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16))  # adapter | full
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    run: Mapped[Run] = relationship(back_populates="models")


class Evaluation(Base):
    """One `tuneforge eval`: which model on which data, the headline metrics, where the report is."""

    __tablename__ = "evaluations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(Text)
    against: Mapped[str | None] = mapped_column(Text)
    run_id: Mapped[str | None] = mapped_column(String(64))  # set when the model is a run of the registry
    data_sha256: Mapped[str] = mapped_column(String(64))
    task: Mapped[str] = mapped_column(String(32))
    metrics: Mapped[dict] = mapped_column(JSON)  # per side: metric means, loss, perplexity; and the comparison
    report_dir: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    # Whose: the model's run's project, else the default project's (the CLI evaluating base models).
    project: Mapped[str] = mapped_column(String(64), index=True, default="default", server_default="default")
    status: Mapped[str] = mapped_column(
        String(16), default="succeeded", server_default="succeeded"
    )  # running | failed
    error: Mapped[str | None] = mapped_column(Text)


class HumanRating(Base):
    """One import of a rated blind A/B sheet: how often people preferred the tuned model's answer."""

    __tablename__ = "human_ratings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(Text)  # the tuned model: its wins are the win rate's
    against: Mapped[str] = mapped_column(Text)
    run_id: Mapped[str | None] = mapped_column(String(64))
    data_sha256: Mapped[str] = mapped_column(String(64))
    eval_dir: Mapped[str] = mapped_column(Text)
    sheet: Mapped[str] = mapped_column(Text)
    rated: Mapped[int] = mapped_column(Integer)
    wins: Mapped[int] = mapped_column(Integer)
    ties: Mapped[int] = mapped_column(Integer)
    losses: Mapped[int] = mapped_column(Integer)
    unrated: Mapped[int] = mapped_column(Integer)
    win_rate: Mapped[float] = mapped_column(Float)  # ties count half
    ci_low: Mapped[float] = mapped_column(Float)  # 95 % interval of the win rate
    ci_high: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


# -------------------------------------------------------------------------------- operations
def record_dataset(path: Path, sha256: str, kind: str | None, examples: int | None, manifest: dict | None) -> str:
    """The file's row, added unless a row for its hash is there. Several jobs on one upload record it
    at once: a read-then-add raced on PostgreSQL (four jobs, a UniqueViolation failing one), so the
    insert itself skips an existing row."""
    with session() as db, db.begin():
        insert = postgresql_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
        values = dict(sha256=sha256, path=str(path), kind=kind, examples=examples, manifest=manifest, created_at=now())
        db.execute(insert(Dataset).values(**values).on_conflict_do_nothing(index_elements=["sha256"]))
    return sha256


def create_run(
    run_id: str,
    config: dict,
    run_dir: Path,
    train_sha: str | None,
    validation_sha: str | None,
    project: str = "default",
) -> None:
    with session() as db, db.begin():
        db.add(
            Run(
                id=run_id,
                method=config["method"],
                base_model=config["model"],
                suffix=config.get("suffix"),
                run_dir=str(run_dir),
                project=project,
                config=json.loads(json.dumps(config, default=str)),
                train_dataset=train_sha,
                validation_dataset=validation_sha,
            )
        )


def update_run(run_id: str, **values) -> None:
    with session() as db, db.begin():
        run = db.get(Run, run_id)
        for key, value in values.items():
            setattr(run, key, value)
        if values.get("status") in ("succeeded", "failed", "interrupted"):
            run.finished_at = now()


def sync_checkpoints(run_id: str, checkpoints: list[dict]) -> None:
    """Make the checkpoint rows equal the checkpoints on disk (after saving or pruning)."""
    with session() as db, db.begin():
        run = db.get(Run, run_id)
        run.checkpoints = [
            Checkpoint(step=c["step"], epoch=c["epoch"], path=c["path"], metrics=c.get("metrics")) for c in checkpoints
        ]


def register_model(name: str, run_id: str, base_model: str, kind: str, path: Path) -> None:
    with session() as db, db.begin():
        db.merge(Model(name=name, run_id=run_id, base_model=base_model, kind=kind, path=str(path)))


def list_runs() -> list[Run]:
    with session() as db:
        return list(db.scalars(select(Run).order_by(Run.created_at.desc())))


def get_run(run_id: str) -> Run | None:
    with session() as db:
        run = db.get(Run, run_id)
        if run is not None:
            run.checkpoints, run.models  # load relationships before the session closes
        return run


def list_models(project: str | None = None) -> list[Model]:
    """Tuned models, newest first; with `project`, only that project's."""
    with session() as db:
        query = select(Model).order_by(Model.created_at.desc())
        if project is not None:
            query = query.join(Run, Run.id == Model.run_id).where(Run.project == project)
        return list(db.scalars(query))


def project_of_run(run_id: str) -> str | None:
    with session() as db:
        return db.scalar(select(Run.project).where(Run.id == run_id))


def find_model(name: str) -> Model | None:
    with session() as db:
        return db.get(Model, name)


def delete_run(run_id: str) -> bool:
    """Remove the run's row (with its checkpoints and models) and its directory, here and in the store."""
    with session() as db, db.begin():
        run = db.get(Run, run_id)
        if run is None:
            return False
        run_dir = Path(run.run_dir)
        db.delete(run)
    shutil.rmtree(run_dir, ignore_errors=True)
    if artifacts.storage_url() is not None:  # and its copy in the store (runs/stored.py)
        artifacts.remove_folder(artifacts.run_key(run_id))
    return True


def record_evaluation(
    model: str,
    against: str | None,
    run_id: str | None,
    data_sha256: str,
    task: str,
    metrics: dict,
    report_dir: Path,
    project: str = "default",
    evaluation_id: int | None = None,
) -> int:
    """A finished evaluation: a new row, or the row `start_evaluation` made (then `succeeded`)."""
    values = dict(
        model=model,
        against=against,
        run_id=run_id,
        data_sha256=data_sha256,
        task=task,
        metrics=json.loads(json.dumps(metrics)),
        report_dir=str(report_dir),
        project=project,
        status="succeeded",
    )
    with session() as db, db.begin():
        row = db.get(Evaluation, evaluation_id) if evaluation_id is not None else None
        if row is None:
            row = Evaluation(**values)
            db.add(row)
        else:
            for name, value in values.items():
                setattr(row, name, value)
        db.flush()
        return row.id


def start_evaluation(
    project: str, model: str, against: str | None, run_id: str | None, data_sha256: str, report_dir: Path
) -> int:
    """An evaluation that has begun (the dashboard's): `running` until recorded or failed."""
    with session() as db, db.begin():
        row = Evaluation(
            model=model,
            against=against,
            run_id=run_id,
            data_sha256=data_sha256,
            task="",
            metrics={},
            report_dir=str(report_dir),
            project=project,
            status="running",
        )
        db.add(row)
        db.flush()
        return row.id


def fail_evaluation(evaluation_id: int, error: str) -> None:
    with session() as db, db.begin():
        row = db.get(Evaluation, evaluation_id)
        if row is not None:
            row.status, row.error = "failed", error


def get_dataset(sha256: str) -> Dataset | None:
    with session() as db:
        return db.get(Dataset, sha256)


def get_evaluation(evaluation_id: int) -> Evaluation | None:
    with session() as db:
        return db.get(Evaluation, evaluation_id)


def list_evaluations(run_id: str | None = None, project: str | None = None) -> list[Evaluation]:
    with session() as db:
        query = select(Evaluation).order_by(Evaluation.created_at.desc(), Evaluation.id.desc())
        if run_id is not None:
            query = query.where(Evaluation.run_id == run_id)
        if project is not None:
            query = query.where(Evaluation.project == project)
        return list(db.scalars(query))


def run_for_model(name: str) -> Run | None:
    """The run behind a run id or tuned model name; None for a base model."""
    tuned = find_model(name)
    return get_run(tuned.run_id if tuned else name)


def record_human_ratings(**values) -> int:
    with session() as db, db.begin():
        row = HumanRating(**values)
        db.add(row)
        db.flush()
        return row.id


def list_human_ratings(model: str | None = None) -> list[HumanRating]:
    with session() as db:
        query = select(HumanRating).order_by(HumanRating.created_at.desc(), HumanRating.id.desc())
        if model is not None:
            query = query.where(HumanRating.model == model)
        return list(db.scalars(query))
