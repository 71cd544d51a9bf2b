"""Jobs on a Ray cluster: `tuneforge worker --backend ray [--address ADDR]` (or `serve --backend ray`).

This process, the dispatcher, runs beside the registry in place of the local worker. It checks
uploaded files as the local worker does, and sends each queued job to Ray as a task that asks for
what the job needs: `nproc` GPUs for a job on CUDA, `nproc` x `--cpus-per-process` CPUs otherwise.
Ray runs as many at once as the cluster has room for and queues the rest. A task trains through the
local worker's own `run_job` (torchrun inside the task when `nproc` > 1) and writes its events,
metrics and checkpoints to the registry as the local worker does; a cancel or a pause stops it at
the next step boundary, as there.

Who holds a job: the dispatcher claims it under a name of its own, `host:home#ray:<job>:<nonce>`,
and renews that lease while the task is in flight, so a job waiting in Ray's queue is not taken
back. Each attempt of the task adopts the job under that name with its pid. When the process that
runs a task dies (kill -9, out of memory, a lost node), Ray runs the task again (`max_retries`); the
new attempt finds the job `running`, queues it to resume, and continues from the newest checkpoint
(the step reports after it are discarded and logged again). If the dispatcher dies, Ray stops its
tasks and the lease lapses; the next worker on this home, or any worker after the lease, takes the
jobs back.

Every node needs Tuneforge installed and must reach the registry (`TUNEFORGE_DATABASE_URL`). Its
tasks work in a Tuneforge home: by default the dispatcher's own, which every node must then see at
the same path (a shared file system); with an object store (`TUNEFORGE_STORAGE_URL`), `--node-home`
gives them a local one on each node instead: a task fetches the job's files and, on a resume, the
run's newest checkpoint from the store, and uploads each checkpoint as it is saved (runs/stored.py),
so a job whose node is lost goes on from there on another. The dispatcher passes its `TUNEFORGE_*`,
`HF_*`, `WANDB_*`, `MLFLOW_*` and `AWS_*` variables to the tasks (the object store's credentials
among them: where the nodes have their own, through an instance role, leave them unset here).
"""

import logging
import os
import secrets
import signal
import threading
import time

from tuneforge.errors import UsageError
from tuneforge.jobs.submit import job_config
from tuneforge.jobs.worker import (
    PARENT,
    check_files,
    fail_job,
    lease_seconds,
    recover_interrupted_jobs,
    release_memory,
    run_job,
    take_back_lapsed_jobs,
    take_home_lock,
    this_worker,
)
from tuneforge.registry import artifacts, jobs
from tuneforge.registry.db import database_url
from tuneforge.registry.jobs import Job, WorkerId
from tuneforge.settings import tuneforge_home

log = logging.getLogger("tuneforge.worker.ray")

# A task's process on another node has that node's environment, not the dispatcher's: what a job needs
# (the registry, the store and its credentials, the hub's cache settings, the trackers) goes with each task.
PASSED_ON = ("TUNEFORGE_", "HF_", "WANDB_", "MLFLOW_", "TOKENIZERS_", "AWS_")
MAX_IN_FLIGHT = 256  # jobs handed to Ray at once; the rest wait in the registry's queue
RETRIES = 3  # attempts after the first when a task's process or node is lost


def task_environment(node_home: str | None = None) -> dict[str, str]:
    environment = {name: value for name, value in os.environ.items() if name.startswith(PASSED_ON)}
    environment["TUNEFORGE_HOME"] = node_home or str(tuneforge_home())
    environment["TUNEFORGE_DATABASE_URL"] = database_url()  # spelled out: a node's own home has no registry
    return environment


def job_resources(job: Job, cpus_per_process: int, cluster_gpus: float) -> tuple[int, dict]:
    """The job's processes, and what its task asks Ray for: a GPU per process for a CUDA job (`auto`
    is CUDA when the cluster has the GPUs), else CPUs."""
    config = job_config(job)
    on_gpu = config.device.startswith("cuda") or (config.device == "auto" and cluster_gpus >= config.nproc)
    if on_gpu:
        return config.nproc, {"num_gpus": config.nproc, "num_cpus": config.nproc}
    return config.nproc, {"num_gpus": 0, "num_cpus": config.nproc * cpus_per_process}


def train_on_node(job_id: str, holder: str, environment: dict[str, str], threads: int) -> str:
    """One attempt of a job's Ray task, on whichever node Ray chose. Returns the job's status after."""
    if "{node}" in environment["TUNEFORGE_HOME"]:  # several Ray nodes on one machine: a home each
        import ray

        node = ray.get_runtime_context().get_node_id()[:12]
        environment = {**environment, "TUNEFORGE_HOME": environment["TUNEFORGE_HOME"].replace("{node}", node)}
    os.environ.update(environment)
    import torch

    torch.set_num_threads(max(1, threads))
    job = jobs.adopt(job_id, WorkerId(os.getpid(), holder))
    if job is None:
        return "released"  # taken back after a lapsed lease: another worker has it now
    if job.status == "running":  # an earlier attempt's process died mid-run
        if jobs.transition(job.id, ("running",), "queued", resume=True):
            jobs.add_event(
                job.id,
                "The process running the job was lost; Ray runs it again, from the newest checkpoint",
                level="warn",
            )
        job = jobs.get_job(None, job_id)
    if job.status == "queued":
        run_job(job)
    return jobs.get_job(None, job_id).status


class Dispatcher:
    """Sends queued jobs to Ray and follows their tasks; see the module's docstring."""

    def __init__(self, cpus_per_process: int, node_home: str | None = None):
        import ray

        self.ray = ray
        self.cpus_per_process, self.node_home = cpus_per_process, node_home
        self.worker = this_worker()
        self.in_flight: dict = {}  # Ray ObjectRef -> (job id, holder name)
        self.lock = threading.Lock()
        self.remote = ray.remote(max_retries=RETRIES, retry_exceptions=False, max_calls=1)(train_on_node)
        self._stop = threading.Event()
        threading.Thread(target=self._renew, name="ray-leases", daemon=True).start()

    def _renew(self) -> None:
        while not self._stop.wait(lease_seconds() / 6):
            with self.lock:
                holders = [holder for _, holder in self.in_flight.values()]
            try:
                jobs.renew_leases(holders)
            except Exception:  # noqa: BLE001 - a database hiccup: the next heartbeat tries again
                log.exception("renewing the leases of the jobs sent to Ray failed")

    def submit_queued(self) -> int:
        submitted = 0
        cluster_gpus = self.ray.cluster_resources().get("GPU", 0)
        while len(self.in_flight) < MAX_IN_FLIGHT:
            holder = f"{self.worker.host}#ray:{secrets.token_hex(6)}"
            job = jobs.claim_next_job(("queued",), WorkerId(self.worker.pid, holder))
            if job is None:
                return submitted
            try:
                nproc, resources = job_resources(job, self.cpus_per_process, cluster_gpus)
            except Exception as error:  # noqa: BLE001 - a job whose settings no longer resolve fails alone
                fail_job(job, "invalid_request", f"{type(error).__name__}: {error}", None)
                jobs.release(job.id, holder)
                continue
            threads = resources["num_cpus"] // nproc
            reference = self.remote.options(**resources, name=f"tuneforge-{job.id}").remote(
                job.id, holder, task_environment(self.node_home), threads
            )
            with self.lock:
                self.in_flight[reference] = (job.id, holder)
            jobs.add_event(job.id, f"Sent to Ray ({resources['num_gpus']} GPU, {resources['num_cpus']} CPU)")
            submitted += 1
        return submitted

    def collect(self, timeout: float) -> int:
        """Wait up to `timeout` s for tasks to end; settle each: its job is released, or failed when
        its task failed for good (an error of ours, or every retry lost)."""
        if not self.in_flight:
            return 0
        done, _ = self.ray.wait(list(self.in_flight), num_returns=len(self.in_flight), timeout=timeout)
        for reference in done:
            with self.lock:
                job_id, holder = self.in_flight.pop(reference)
            try:
                status = self.ray.get(reference)
                log.info("job %s: its Ray task ended (%s)", job_id, status)
            except self.ray.exceptions.TaskCancelledError:
                pass
            except Exception as error:  # noqa: BLE001 - the job fails with the reason; the dispatcher goes on
                log.exception("job %s: its Ray task failed", job_id)
                job = jobs.get_job(None, job_id)
                fail_job(job, "internal_error", f"the job's Ray task failed: {type(error).__name__}: {error}", None)
            jobs.release(job_id, holder)
        return len(done)

    def cancel_waiting(self) -> None:
        """Tasks still in Ray's queue for jobs cancelled or paused meanwhile: taken out of it."""
        with self.lock:
            waiting = dict(self.in_flight)
        for reference, (job_id, _) in waiting.items():
            job = jobs.get_job(None, job_id)
            if job.status in ("cancelled", "paused") and job.worker_pid == self.worker.pid:  # no attempt began
                self.ray.cancel(reference)

    def stop(self) -> None:
        self._stop.set()


def _exit_on_sigterm(signum, frame):
    raise SystemExit(0)


def run_ray_dispatcher(
    address: str | None,
    cpus_per_process: int = 1,
    poll_seconds: float = 1.0,
    once: bool = False,
    parent_pid: int | None = None,
    node_home: str | None = None,
) -> None:
    """`address`: a running cluster (`auto`, or `ray://HOST:10001`); None starts one on this machine.
    `node_home`: the tasks' home on each node (see the module's docstring); it needs an object store."""
    import ray

    if node_home and artifacts.storage_url() is None:
        raise UsageError(
            "--node-home needs an object store: without one, what a task trains in a node's own home "
            "is out of the server's reach",
            fix="Set TUNEFORGE_STORAGE_URL (e.g. s3://bucket/prefix), or leave --node-home out and share this home.",
        )
    PARENT.parent_pid = parent_pid
    lock = take_home_lock(wait=parent_pid is not None)  # noqa: F841  (held while this process lives)
    worker = this_worker()
    recover_interrupted_jobs(worker)
    ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    # SIGTERM (the server stopping it): leave through `finally`, which stops the tasks with Ray; their
    # jobs are taken back by the next worker of this home (or any worker, after the lease).
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    log.info("Ray dispatcher %s ready (cluster %s, home %s)", os.getpid(), ray.cluster_resources(), tuneforge_home())
    dispatcher = Dispatcher(cpus_per_process, node_home)
    try:
        while not PARENT.gone():
            take_back_lapsed_jobs()
            job = jobs.claim_next_job(("validating_files",), worker)
            if job is not None:  # a data check is seconds: here, one at a time
                check_files(job, worker)
                release_memory()
                continue
            dispatcher.submit_queued()
            if not dispatcher.in_flight:
                if once:
                    return
                time.sleep(poll_seconds)
                continue
            dispatcher.cancel_waiting()
            dispatcher.collect(timeout=poll_seconds)
    finally:
        dispatcher.stop()
        ray.shutdown()
