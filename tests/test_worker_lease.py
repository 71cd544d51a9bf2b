"""Workers sharing one registry: each queued job is claimed by exactly one worker, a worker's
heartbeat keeps its job, and a job whose heartbeat lapsed is taken back once, whichever machine
held it. Against the home's SQLite file and a real PostgreSQL (conftest's `new_registry`)."""

import threading
import time
from datetime import timedelta

import pytest

from tuneforge.jobs.worker import Lease, recover_interrupted_jobs, take_back_lapsed_jobs, this_worker
from tuneforge.registry import jobs
from tuneforge.registry.db import now
from tuneforge.registry.jobs import WorkerId

ELSEWHERE = WorkerId(4242, "gpu-node-7:/srv/tuneforge")


@pytest.fixture
def registry(tmp_path, monkeypatch, new_registry):
    monkeypatch.setenv("TUNEFORGE_HOME", str(tmp_path))
    if url := new_registry():
        monkeypatch.setenv("TUNEFORGE_DATABASE_URL", url)
    else:
        monkeypatch.delenv("TUNEFORGE_DATABASE_URL", raising=False)
    return url or "sqlite"


def queued_jobs(n: int, status: str = "queued") -> list[str]:
    ids = []
    for _ in range(n):
        job = jobs.create_job("ops", model="m", training_file="file-x", seed=1, method={"type": "supervised"})
        jobs.update_job(job.id, status=status)
        ids.append(job.id)
    return ids


def test_concurrent_workers_claim_each_job_exactly_once(registry):
    created = queued_jobs(12)
    claimed: dict[int, list[str]] = {pid: [] for pid in range(6)}

    def claim_all(pid: int) -> None:
        worker = WorkerId(pid, f"node-{pid}:/home")
        while (job := jobs.claim_next_job(("queued",), worker)) is not None:
            claimed[pid].append(job.id)

    threads = [threading.Thread(target=claim_all, args=(pid,)) for pid in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [job_id for ids in claimed.values() for job_id in ids]
    assert sorted(every) == sorted(created)  # all claimed, none twice
    for pid, ids in claimed.items():
        for job_id in ids:
            job = jobs.get_job(None, job_id)
            assert (job.worker_pid, job.worker_host) == (pid, f"node-{pid}:/home") and job.heartbeat_at is not None
    assert jobs.claim_next_job(("queued",), ELSEWHERE) is None  # held jobs are not claimed again
    assert [job.id for job in jobs.take_back_lapsed(now() - timedelta(seconds=60))] == []  # fresh heartbeats


def test_the_oldest_job_is_claimed_first_and_release_frees_it(registry):
    first, second = queued_jobs(2)
    worker = this_worker()
    assert jobs.claim_next_job(("queued",), worker).id == first
    jobs.release(first, ELSEWHERE.host)  # only the holder can let go
    assert jobs.get_job(None, first).worker_pid == worker.pid
    jobs.release(first, worker.host)
    assert jobs.get_job(None, first).worker_pid is None
    assert jobs.claim_next_job(("queued",), ELSEWHERE).id == first


def test_a_lapsed_lease_is_taken_back_once_and_a_live_one_is_left_alone(registry, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_WORKER_LEASE_SECONDS", "30")
    lapsed_running, lapsed_paused, live = queued_jobs(3)
    for job_id in (lapsed_running, lapsed_paused, live):
        jobs.claim_next_job(("queued",), ELSEWHERE)
    jobs.update_job(lapsed_running, status="running", run_id="run-a", heartbeat_at=now() - timedelta(seconds=90))
    jobs.update_job(lapsed_paused, status="paused", run_id="run-b", heartbeat_at=now() - timedelta(seconds=90))
    jobs.update_job(live, status="running", run_id="run-c")

    recover_interrupted_jobs(this_worker())  # this home's startup: other machines' jobs are not its own
    assert all(jobs.get_job(None, job_id).worker_pid == ELSEWHERE.pid for job_id in (lapsed_running, live))

    takers = [threading.Thread(target=take_back_lapsed_jobs) for _ in range(4)]
    for taker in takers:
        taker.start()
    for taker in takers:
        taker.join()
    running, paused, kept = (jobs.get_job(None, job_id) for job_id in (lapsed_running, lapsed_paused, live))
    assert (running.status, running.resume, running.worker_pid, running.heartbeat_at) == ("queued", True, None, None)
    assert (paused.status, paused.resume, paused.worker_pid) == ("paused", True, None)
    assert (kept.status, kept.worker_pid, kept.worker_host) == ("running", ELSEWHERE.pid, ELSEWHERE.host)
    warnings = [e.message for e in jobs.list_events(lapsed_running, None, 10)[0] if e.level == "warn"]
    assert len(warnings) == 1 and "gpu-node-7" in warnings[0]  # four takers, one take-back


def test_the_lease_is_renewed_while_held_and_let_go_after(registry, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_WORKER_LEASE_SECONDS", "0.6")  # a heartbeat every 0.1 s
    (job_id,) = queued_jobs(1)
    worker = this_worker()
    jobs.claim_next_job(("queued",), worker)
    claimed_at = jobs.get_job(None, job_id).heartbeat_at
    with Lease(job_id, worker):
        time.sleep(0.5)
        renewed_at = jobs.get_job(None, job_id).heartbeat_at
        assert renewed_at > claimed_at
        assert jobs.take_back_lapsed(now() - timedelta(seconds=0.6)) == []
    job = jobs.get_job(None, job_id)
    assert (job.status, job.worker_pid, job.worker_host, job.heartbeat_at) == ("queued", None, None, None)
