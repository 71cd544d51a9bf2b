"""The worker: carries out queued fine-tuning jobs, one at a time, in its own process.

Run: `tuneforge worker` (`tuneforge serve` starts one and restarts it if it dies).

The server only writes rows; the worker polls the registry for them:
  validating_files -> (data check of the training/validation files) -> queued | failed
  queued           -> running -> succeeded | failed, or stopped by the server's cancelled | paused
A worker holds the job it validates or runs (`jobs.claim_next_job`) and renews a lease on it while
it does. A job held when its home's worker starts was cut off (a crash, kill -9, power loss), and so
is a job whose lease lapsed, wherever it ran (workers on several machines share a PostgreSQL
registry): it is queued again and continues from its run's newest complete checkpoint. A file lock
keeps a second worker on the same home from starting.
"""

import fcntl
import gc
import logging
import os
import socket
import threading
import time
from datetime import timedelta
from pathlib import Path

from tuneforge.errors import TuneforgeError
from tuneforge.jobs.reporter import JobReporter
from tuneforge.jobs.submit import job_config
from tuneforge.registry import artifacts, jobs, store
from tuneforge.registry.db import now
from tuneforge.registry.jobs import Job, WorkerId
from tuneforge.settings import tuneforge_home
from tuneforge.train.host_memory import release_free_memory
from tuneforge.train.inputs import TrainingDataError
from tuneforge.train.reporter import TrainingInterrupted

log = logging.getLogger("tuneforge.worker")


class WorkerBusy(TuneforgeError):
    pass


def lease_seconds() -> float:
    """How long a job stays held without a heartbeat: the time after which another machine's worker
    takes back a job whose worker died. Heartbeats come every sixth of it."""
    return float(os.environ.get("TUNEFORGE_WORKER_LEASE_SECONDS", "120"))


def this_worker() -> WorkerId:
    return WorkerId(os.getpid(), f"{socket.gethostname()}:{tuneforge_home()}")


class Lease:
    """Holds a claimed job while the block runs: a daemon thread renews its heartbeat (training
    runs in this thread, or in torchrun's processes), and leaving the block lets the job go."""

    def __init__(self, job_id: str, worker: WorkerId):
        self.job_id, self.worker = job_id, worker
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{job_id}", daemon=True)

    def _renew(self) -> None:
        while not self._stop.wait(lease_seconds() / 6):
            try:
                if not jobs.renew_leases([self.worker.host]):
                    log.warning("job %s: the lease was lost (another worker took the job back)", self.job_id)
                    return
            except Exception:  # noqa: BLE001 - a database hiccup: the next heartbeat tries again
                log.exception("job %s: renewing the lease failed", self.job_id)

    def __enter__(self) -> "Lease":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        jobs.release(self.job_id, self.worker.host)


# ------------------------------------------------------------------------------------ stages
def validate_files(job: Job) -> None:
    """The data stage's check of the job's files, with the job's base model's tokenizer."""
    from tuneforge.data.checks import check_with_model
    from tuneforge.runs.continuation import model_to_load

    for param in ("training_file", "validation_file"):
        file_id = getattr(job, param)
        if file_id is None:
            continue
        stored = jobs.get_file(job.project, file_id)
        if stored is None:
            return fail_job(job, "invalid_file", f"{param} {file_id} no longer exists", param)
        if not artifacts.exists(stored.path):  # the row outlived its bytes: fail the job, not the worker
            return fail_job(
                job, "invalid_file", f"{param} {file_id}'s content is missing from this server's storage", param
            )
        try:
            report = check_with_model(artifacts.local_copy(stored.path), model_to_load(job.model, job.project))
        except TuneforgeError as error:  # the model is gone since the job was created, say: the job fails
            return fail_job(job, "model_not_available", error.message, "model")
        if not report.ok:
            first = next(f for f in report.findings.findings() if f.severity == "error")
            where = f"line {first.line}" + (f", field {first.field}" if first.field else "")
            message = (
                f"{param} {file_id} ({stored.filename}) has {report.findings.errors} error(s); first: {where}: "
                f"{first.message}" + (f" Fix: {first.fix}" if first.fix else "")
            )
            return fail_job(
                job, "invalid_training_file" if param == "training_file" else "invalid_validation_file", message, param
            )
    if jobs.transition(job.id, ("validating_files",), "queued"):
        jobs.add_event(job.id, "Files validated; job queued")


def run_job(job: Job) -> None:
    from tuneforge.runs.naming import new_run_id
    from tuneforge.runs.training import resumable

    resume = bool(job.resume) and resumable(job.run_id)
    if job.run_id and not resume and store.get_run(job.run_id):
        store.delete_run(job.run_id)  # cut off before its first checkpoint: start over
    run_id = job.run_id if resume else new_run_id()
    job = jobs.transition(job.id, ("queued",), "running", run_id=run_id, resume=False)
    if job is None:
        return  # cancelled between the claim and now
    _train(job, run_id, resume)


def _train(job: Job, run_id: str, resume: bool) -> None:
    from tuneforge.runs.training import train_run

    try:
        result = train_run(
            job_config(job),
            JobReporter(job, PARENT.gone),
            run_id=run_id,
            resume=resume,
            project=job.project,
            org=job.project,
            # nproc > 1: the job's processes run jobs/rank_main.py under torchrun, and stop (with a
            # checkpoint) when the server that started this worker is gone.
            entry=("tuneforge.jobs.rank_main",),
            launch_extra={"job_id": job.id},
            should_stop=PARENT.gone,
        )
    except TrainingInterrupted:
        status = jobs.get_job(None, job.id).status
        if status == "paused":
            jobs.update_job(job.id, resume=True)
            jobs.add_event(job.id, "Job paused; resume continues from the saved checkpoint")
        elif status == "cancelled":
            jobs.add_event(job.id, "Job cancelled", level="warn")
        elif status == "queued":  # paused and resumed before this worker saw the pause
            jobs.update_job(job.id, resume=True)
            jobs.add_event(job.id, "Job paused and resumed; it continues from the saved checkpoint")
        elif jobs.transition(job.id, ("running",), "queued", resume=True):  # SIGTERM, or the server is gone
            jobs.add_event(
                job.id, "The worker stopped; the job continues from its checkpoint when a worker starts", level="warn"
            )
        return
    except TrainingDataError as error:  # what the upload check cannot see, e.g. a reply longer than the context
        return fail_job(job, error.code, error.message + (f" Fix: {error.fix}" if error.fix else ""), "training_file")
    except TuneforgeError as error:
        return fail_job(job, "invalid_request", error.message + (f" Fix: {error.fix}" if error.fix else ""), None)
    except Exception as error:  # a bug of ours: the job fails with the reason rather than the worker dying
        log.exception("job %s failed", job.id)
        return fail_job(job, "internal_error", f"{type(error).__name__}: {error}", None)
    results = _store_results_file(job, result.run_dir / "metrics.csv")
    if jobs.transition(
        job.id,
        ("running",),
        "succeeded",
        fine_tuned_model=result.model_name,
        trained_tokens=result.metrics["trained_tokens"],
        result_files=[results],
        estimated_finish=None,
    ):
        jobs.add_event(job.id, f"New fine-tuned model created: {result.model_name}")
        jobs.add_event(job.id, "The job has successfully completed")


def _store_results_file(job: Job, metrics_csv: Path) -> str:
    """The metrics CSV as a `fine-tune-results` file the client can download."""
    import hashlib

    file_id = jobs.new_id("file-")
    target = jobs.files_dir() / f"{file_id}.csv"
    data = metrics_csv.read_bytes()
    target.write_bytes(data)
    jobs.create_file(
        job.project,
        "step_metrics.csv",
        "fine-tune-results",
        artifacts.publish(target, f"files/{target.name}"),
        len(data),
        hashlib.sha256(data).hexdigest(),
        file_id,
    )
    jobs.set_file_status(file_id, "processed")
    return file_id


def fail_job(job: Job, code: str, message: str, param: str | None = None) -> None:
    if jobs.transition(
        job.id,
        ("validating_files", "queued", "running"),
        "failed",
        error={"code": code, "message": message, "param": param},
        estimated_finish=None,
    ):
        jobs.add_event(job.id, f"Job failed: {message}", level="error")


def check_files(job: Job, worker: WorkerId) -> None:
    """`validate_files` of a claimed job, held on a lease; a check that breaks fails the job, not the worker."""
    with Lease(job.id, worker):
        try:
            validate_files(job)
        except Exception as error:  # noqa: BLE001 - a job that breaks the check fails; the worker goes on
            log.exception("job %s: the data check failed", job.id)
            fail_job(job, "internal_error", f"the data check failed: {type(error).__name__}: {error}")


# ------------------------------------------------------------------------------------ the loop
def recover_interrupted_jobs(worker: WorkerId) -> None:
    """Jobs a dead worker of this home held (crash, kill -9, power loss), whatever their status says: a
    running one is queued again, and every one keeps its place, so it continues from its newest checkpoint."""
    for job in jobs.jobs_held_on(worker.host):
        values = jobs.cut_off(job)
        if job.status == "running":
            jobs.transition(job.id, ("running",), values.pop("status"), **values)
            jobs.add_event(job.id, "The worker restarted; the job continues from its newest checkpoint", level="warn")
        else:  # paused, queued again by a resume, or cancelled while the worker ran it
            jobs.update_job(job.id, **values)


def take_back_lapsed_jobs() -> None:
    """Jobs whose worker stopped renewing its lease, on any machine: back to the queue."""
    for job in jobs.take_back_lapsed(now() - timedelta(seconds=lease_seconds())):
        if job.status == "running":
            jobs.add_event(
                job.id,
                f"Worker {job.worker_pid} on {job.worker_host} stopped answering; the job continues from its "
                "newest checkpoint",
                level="warn",
            )


def release_memory() -> None:
    gc.collect()
    release_free_memory()  # glibc keeps freed pages mapped; hand them back so an idle worker is small again


class ParentWatch:
    """Whether the server that started this worker is gone (`--parent-pid`): after a kill -9 of the
    server this process is adopted by another, and `os.getppid()` changes. Checked between steps and
    between jobs, so an orphaned worker checkpoints its job and exits instead of holding the lock."""

    def __init__(self):
        self.parent_pid: int | None = None

    def gone(self) -> bool:
        return self.parent_pid is not None and os.getppid() != self.parent_pid


PARENT = ParentWatch()


def take_home_lock(wait: bool):
    """The home's worker lock. A worker started by a server waits for the previous one (an orphan
    finishing its step) rather than failing, so a restarted server takes over without restart loops."""
    lock = open(tuneforge_home() / "worker.lock", "w")
    waiting_since = None
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock
        except BlockingIOError:
            if not wait:
                raise WorkerBusy(f"another worker is running on {tuneforge_home()}") from None
            if waiting_since is None:
                waiting_since = time.monotonic()
                log.info("another worker holds %s; waiting for it to stop", tuneforge_home() / "worker.lock")
            if PARENT.gone():
                raise SystemExit(0)
            time.sleep(0.5)


def run_worker(poll_seconds: float = 1.0, once: bool = False, parent_pid: int | None = None) -> None:
    PARENT.parent_pid = parent_pid
    lock = take_home_lock(wait=parent_pid is not None)  # noqa: F841  (held while this process lives)
    worker = this_worker()
    recover_interrupted_jobs(worker)
    log.info("worker %s ready (home %s)", os.getpid(), tuneforge_home())
    while not PARENT.gone():
        take_back_lapsed_jobs()
        job = jobs.claim_next_job(("validating_files", "queued"), worker)
        if job is not None:
            log.info("job %s: %s", job.id, job.status)
            if job.status == "validating_files":
                check_files(job, worker)
            else:
                with Lease(job.id, worker):
                    run_job(job)
            release_memory()
            continue
        if once:
            return
        time.sleep(poll_seconds)
    log.warning("the server that started this worker (pid %s) is gone; stopping", parent_pid)
