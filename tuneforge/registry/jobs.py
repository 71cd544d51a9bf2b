"""Files, fine-tuning jobs and their events: what the server queues and the worker carries out.

The rows mirror OpenAI's objects (`file-…`, `ftjob-…`, `ftevent-…`) so the routes only render them.
Every row belongs to a project; a lookup with another project's name finds nothing (the server then
answers 404, as if the object did not exist). Lists are newest first and page with `after` = the id
of the last object seen; an integer `seq` column keeps that order stable within one second.
"""

import secrets
import string
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, String, Text, select, update
from sqlalchemy.orm import Mapped, mapped_column

from tuneforge.registry import artifacts
from tuneforge.registry.db import Base, now, session
from tuneforge.settings import tuneforge_home

ALPHABET = string.ascii_letters + string.digits
TERMINAL = ("succeeded", "failed", "cancelled")


class WorkerId(NamedTuple):
    """Who holds a job: the worker's pid and its `host:home`, the holder's name (two homes on one
    machine are two workers; a pid alone is not unique across machines). A job sent to Ray is held
    under `host:home#ray:…`, a name of its own that each attempt of its task adopts with its pid."""

    pid: int
    host: str


def new_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(ALPHABET) for _ in range(24))


def unix(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment else None


class StoredFile(Base):
    __tablename__ = "files"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True, index=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    filename: Mapped[str] = mapped_column(Text)
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="uploaded")  # uploaded | processed | error
    status_details: Mapped[str | None] = mapped_column(Text)
    report: Mapped[dict | None] = mapped_column(JSON)  # the data check's findings and statistics
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class Job(Base):
    __tablename__ = "jobs"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True, index=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    model: Mapped[str] = mapped_column(Text)
    training_file: Mapped[str] = mapped_column(String(40))
    validation_file: Mapped[str | None] = mapped_column(String(40))
    suffix: Mapped[str | None] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(Integer)
    method: Mapped[dict] = mapped_column(JSON)  # OpenAI's {"type": ..., "<type>": {"hyperparameters": ...}}
    extra: Mapped[dict] = mapped_column(JSON, default=dict)  # our TrainConfig fields beyond OpenAI's
    meta: Mapped[dict | None] = mapped_column("metadata", JSON)
    status: Mapped[str] = mapped_column(String(20), default="validating_files", index=True)
    error: Mapped[dict | None] = mapped_column(JSON)
    resolved: Mapped[dict | None] = mapped_column(JSON)  # hyperparameters with "auto" filled in
    run_id: Mapped[str | None] = mapped_column(String(64))
    fine_tuned_model: Mapped[str | None] = mapped_column(Text)
    trained_tokens: Mapped[int | None] = mapped_column(Integer)
    result_files: Mapped[list] = mapped_column(JSON, default=list)
    estimated_finish: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The worker holding the job (validating or running it): its pid, its "host:home", and when it
    # last said it still holds it (migration 0004: a lapsed heartbeat frees the job for any worker).
    worker_pid: Mapped[int | None] = mapped_column(Integer)
    worker_host: Mapped[str | None] = mapped_column(Text)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resume: Mapped[bool] = mapped_column(Boolean, default=False)  # continue run_id from its newest checkpoint
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class JobEvent(Base):
    __tablename__ = "job_events"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    level: Mapped[str] = mapped_column(String(8), default="info")
    type: Mapped[str] = mapped_column(String(16), default="message")  # message | metrics
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


def files_dir() -> Path:
    path = tuneforge_home() / "files"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _page(db, model, query, after: str | None, limit: int, newest_first: bool = True):
    """One page of `query` after the object with id `after`: (rows, has_more)."""
    order = model.seq.desc() if newest_first else model.seq.asc()
    if after:
        anchor = db.scalar(select(model.seq).where(model.id == after))
        if anchor is not None:
            query = query.where(model.seq < anchor if newest_first else model.seq > anchor)
    rows = list(db.scalars(query.order_by(order).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


# ------------------------------------------------------------------------------------- files
def create_file(
    project: str, filename: str, purpose: str, path: Path | str, size: int, sha256: str, file_id: str
) -> StoredFile:
    """`path`: where the bytes are, a local path or a storage URL (registry/artifacts.py)."""
    with session() as db, db.begin():
        row = StoredFile(
            id=file_id, project=project, filename=filename, purpose=purpose, bytes=size, path=str(path), sha256=sha256
        )
        db.add(row)
    return row


def get_file(project: str | None, file_id: str) -> StoredFile | None:
    with session() as db:
        row = db.scalar(select(StoredFile).where(StoredFile.id == file_id))
        return row if row is not None and (project is None or row.project == project) else None


def list_files(project: str, purpose: str | None, after: str | None, limit: int, newest_first: bool):
    with session() as db:
        query = select(StoredFile).where(StoredFile.project == project)
        if purpose:
            query = query.where(StoredFile.purpose == purpose)
        return _page(db, StoredFile, query, after, limit, newest_first)


def set_file_status(file_id: str, status: str, details: str | None = None, report: dict | None = None) -> None:
    with session() as db, db.begin():
        row = db.scalar(select(StoredFile).where(StoredFile.id == file_id))
        row.status, row.status_details, row.report = status, details, report


class FileInUse(Exception):
    def __init__(self, job_ids: list[str]):
        super().__init__(", ".join(job_ids))
        self.job_ids = job_ids


def delete_file(project: str, file_id: str) -> bool:
    """Remove a file's row and bytes; False if the project has no such file. A file that a job not yet
    finished trains on raises FileInUse: deleting it would fail that job (or its resume) later."""
    with session() as db, db.begin():
        row = db.scalar(select(StoredFile).where(StoredFile.id == file_id, StoredFile.project == project))
        if row is None:
            return False
        users = list(
            db.scalars(
                select(Job.id).where(
                    (Job.training_file == file_id) | (Job.validation_file == file_id), Job.status.not_in(TERMINAL)
                )
            )
        )
        if users:
            raise FileInUse(users)
        artifacts.delete(row.path)
        db.delete(row)
    return True


# -------------------------------------------------------------------------------------- jobs
def create_job(project: str, **fields) -> Job:
    with session() as db, db.begin():
        job = Job(id=new_id("ftjob-"), project=project, **fields)
        db.add(job)
        db.flush()
        db.add(JobEvent(id=new_id("ftevent-"), job_id=job.id, message=f"Created fine-tuning job: {job.id}"))
    return job


def get_job(project: str | None, job_id: str) -> Job | None:
    with session() as db:
        job = db.scalar(select(Job).where(Job.id == job_id))
        return job if job is not None and (project is None or job.project == project) else None


def list_jobs(project: str, after: str | None, limit: int, metadata: dict[str, str] | None = None):
    with session() as db:
        query = select(Job).where(Job.project == project)
        if not metadata:
            return _page(db, Job, query, after, limit)
        # JSON filtering differs between SQLite and PostgreSQL; a project's jobs are few enough to filter here.
        rows = [
            job
            for job in db.scalars(query.order_by(Job.seq.desc()))
            if all((job.meta or {}).get(key) == value for key, value in metadata.items())
        ]
        if after:
            ids = [job.id for job in rows]
            rows = rows[ids.index(after) + 1 :] if after in ids else rows
        return rows[:limit], len(rows) > limit


def update_job(job_id: str, **values) -> Job:
    with session() as db, db.begin():
        job = db.scalar(select(Job).where(Job.id == job_id))
        for key, value in values.items():
            setattr(job, key, value)
        if values.get("status") in TERMINAL and job.finished_at is None:
            job.finished_at = now()
    return job


def transition(job_id: str, allowed_from: tuple[str, ...], status: str, **values) -> Job | None:
    """Move a job to `status` only if it is in one of `allowed_from`: one UPDATE ... WHERE, so the
    server's cancel and the worker's progress never overwrite each other. None when it was not."""
    if status in TERMINAL:
        values["finished_at"] = now()
    with session() as db, db.begin():
        changed = db.execute(
            update(Job).where(Job.id == job_id, Job.status.in_(allowed_from)).values(status=status, **values)
        ).rowcount
    return get_job(None, job_id) if changed else None


RELEASED = dict(worker_pid=None, worker_host=None, heartbeat_at=None)  # a job no worker holds


def cut_off(job: Job) -> dict:
    """What a job whose holder is gone becomes (the values to write): let go of, a running one
    queued again, and a running, paused or queued one set to continue from its newest checkpoint."""
    values = dict(RELEASED)
    if job.status == "running":
        values.update(status="queued", resume=True)
    elif job.status in ("paused", "queued"):  # paused (or paused and resumed) while held
        values.update(resume=True)
    return values


def claim_next_job(statuses: tuple[str, ...], worker: WorkerId) -> Job | None:
    """The oldest job in one of `statuses` that no worker holds, now held by `worker` (first in,
    first out). On PostgreSQL the row is read `FOR UPDATE SKIP LOCKED`: workers sharing the registry
    each take a different job at once instead of queueing on one row. The UPDATE is guarded as well,
    which is what keeps SQLite (no row locks; one worker per home) correct."""
    with session() as db, db.begin():
        job_id = db.scalar(
            select(Job.id)
            .where(Job.status.in_(statuses), Job.worker_pid.is_(None))
            .order_by(Job.seq.asc())
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        if job_id is None:
            return None
        claimed = db.execute(
            update(Job)
            .where(Job.id == job_id, Job.status.in_(statuses), Job.worker_pid.is_(None))
            .values(worker_pid=worker.pid, worker_host=worker.host, heartbeat_at=now())
        ).rowcount
    return get_job(None, job_id) if claimed else None


def renew_leases(holders: list[str]) -> int:
    """The holders' heartbeat on every job they hold; how many they hold. A worker that holds none
    of the jobs it thinks it does lost them (their lease lapsed, another worker took them back)."""
    if not holders:
        return 0
    with session() as db, db.begin():
        return db.execute(update(Job).where(Job.worker_host.in_(holders)).values(heartbeat_at=now())).rowcount


def adopt(job_id: str, worker: WorkerId) -> Job | None:
    """The process `worker.pid` takes on a job held under `worker.host`: each attempt of a Ray task
    adopts the job its dispatcher claimed for it (an earlier attempt's pid may be gone). None when
    the job is no longer held under that name."""
    with session() as db, db.begin():
        adopted = db.execute(
            update(Job).where(Job.id == job_id, Job.worker_host == worker.host).values(worker_pid=worker.pid)
        ).rowcount
    return get_job(None, job_id) if adopted else None


def release(job_id: str, holder: str) -> None:
    """The holder lets go of the job (finished, failed, paused, or handed back to the queue)."""
    with session() as db, db.begin():
        db.execute(update(Job).where(Job.id == job_id, Job.worker_host == holder).values(**RELEASED))


def jobs_held_on(host: str) -> list[Job]:
    """Jobs held by this host and home's worker, or by Ray tasks it sent (`host#ray:…`), or by a
    worker before leases existed (no host): once this home's worker lock is ours, they were cut off."""
    with session() as db:
        sent_to_ray = Job.worker_host.startswith(f"{host}#", autoescape=True)
        mine = (Job.worker_host == host) | sent_to_ray | Job.worker_host.is_(None)
        return list(db.scalars(select(Job).where(Job.worker_pid.is_not(None), mine).order_by(Job.seq.asc())))


def take_back_lapsed(cutoff: datetime) -> list[Job]:
    """Jobs whose holder's heartbeat is older than `cutoff`, wherever it ran, let go of: a running
    one is queued again to resume from its newest checkpoint. One guarded UPDATE each, so when
    several workers notice the same lapse only one takes the job back. Returns the jobs taken back."""
    with session() as db:
        lapsed = list(db.scalars(select(Job).where(Job.worker_pid.is_not(None), Job.heartbeat_at < cutoff)))
    taken = []
    for job in lapsed:
        values = cut_off(job)
        guard = (Job.id == job.id) & (Job.worker_pid == job.worker_pid) & (Job.heartbeat_at < cutoff)
        with session() as db, db.begin():
            if db.execute(update(Job).where(guard, Job.status == job.status).values(**values)).rowcount:
                taken.append(job)
    return taken


def delete_metric_events_after(job_id: str, step: int) -> int:
    """Remove the step and validation reports of steps after `step` (a resumed run trains them again)."""
    with session() as db, db.begin():
        stale = [
            event
            for event in db.scalars(select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.type == "metrics"))
            if (event.data or {}).get("step", 0) > step
        ]
        for event in stale:
            db.delete(event)
        return len(stale)


def add_event(job_id: str, message: str, level: str = "info", type: str = "message", data: dict | None = None) -> None:
    with session() as db, db.begin():
        db.add(JobEvent(id=new_id("ftevent-"), job_id=job_id, message=message, level=level, type=type, data=data))


def list_events(job_id: str, after: str | None, limit: int):
    with session() as db:
        return _page(db, JobEvent, select(JobEvent).where(JobEvent.job_id == job_id), after, limit)


def job_for_run(run_id: str) -> Job | None:
    with session() as db:
        return db.scalar(select(Job).where(Job.run_id == run_id))


def metric_events(job_id: str, after_seq: int = 0) -> list[tuple[int, dict]]:
    """(sequence number, data) of a job's metrics events in the order they were written, after
    `after_seq`: what a live curve needs, in one indexed query (a dashboard polls it)."""
    with session() as db:
        rows = db.execute(
            select(JobEvent.seq, JobEvent.data)
            .where(JobEvent.job_id == job_id, JobEvent.type == "metrics", JobEvent.seq > after_seq)
            .order_by(JobEvent.seq)
        )
        return [(seq, data or {}) for seq, data in rows]


def recent_messages(job_id: str, limit: int) -> list[JobEvent]:
    """A job's newest `limit` message events (not its step reports), newest first."""
    with session() as db:
        return list(
            db.scalars(
                select(JobEvent)
                .where(JobEvent.job_id == job_id, JobEvent.type == "message")
                .order_by(JobEvent.seq.desc())
                .limit(limit)
            )
        )
