"""Jobs survive their worker: kill -9 mid-training resumes from the checkpoint; pause and resume too."""

import os
import signal
import time

import openai
import pytest
from helpers import write_jsonl
from server_process import TINY_LORA, ServerProcess, tickets, wait_for


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir, new_registry):
    home = tmp_path_factory.mktemp("restart-home")
    process = ServerProcess(home, "--allow-model-dir", str(tiny_model_dir), database_url=new_registry()).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key=server.new_key("ops"), max_retries=0, timeout=120)


def start_long_job(client, tiny_model_dir, path, epochs: int):
    uploaded = client.files.create(file=write_jsonl(path, tickets(40)).open("rb"), purpose="fine-tune")
    client.files.wait_for_processing(uploaded.id, poll_interval=0.2, max_wait_seconds=60)
    return client.fine_tuning.jobs.create(
        model=str(tiny_model_dir),
        training_file=uploaded.id,
        seed=3,
        hyperparameters={"n_epochs": epochs, "batch_size": 8},
        extra_body=TINY_LORA,
    )


def wait_for_event(client, job_id: str, text: str, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        messages = [e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=100)]
        if any(text in m for m in messages):
            return messages
        time.sleep(0.2)
    raise TimeoutError(f"no event containing '{text}' for {job_id}")


def worker_pid(server, job_id: str) -> int:
    return server.registry_row("select worker_pid from jobs where id = :id", id=job_id)[0]


def test_a_job_resumes_from_its_checkpoint_after_kill_9_of_the_worker(server, client, tiny_model_dir, tmp_path):
    job = start_long_job(client, tiny_model_dir, tmp_path / "train.jsonl", epochs=8)
    wait_for_event(client, job.id, "Checkpoint created at step 10")  # two epochs done, both checkpointed
    first_pid = worker_pid(server, job.id)
    os.kill(first_pid, signal.SIGKILL)
    messages = wait_for_event(client, job.id, "Resumed from step")  # the server restarted the worker
    resumed_at = int(next(m for m in messages if m.startswith("Resumed from step")).split()[3])
    assert resumed_at >= 10 and resumed_at % 5 == 0  # an epoch boundary checkpoint, not step 0
    finished = wait_for(client, job.id, ("succeeded", "failed", "cancelled"))
    assert finished.status == "succeeded", finished.error
    assert worker_pid(server, job.id) != first_pid
    steps = [
        e.data["step"]
        for e in client.fine_tuning.jobs.list_events(job.id, limit=1000)
        if e.type == "metrics" and "train_loss" in (e.data or {})
    ]
    assert sorted(steps) == list(range(1, 41))  # each step once: the reports of steps trained again are not repeated


def test_pause_keeps_the_place_and_resume_continues(server, client, tiny_model_dir, tmp_path):
    job = start_long_job(client, tiny_model_dir, tmp_path / "train.jsonl", epochs=30)
    wait_for_event(client, job.id, "Step 3/")
    assert client.fine_tuning.jobs.pause(job.id).status == "paused"
    wait_for_event(client, job.id, "Job paused")
    assert client.fine_tuning.jobs.retrieve(job.id).status == "paused"
    assert client.fine_tuning.jobs.resume(job.id).status == "queued"
    wait_for_event(client, job.id, "Resumed from step")
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    wait_for_event(client, job.id, "Job cancelled")


def test_a_pause_and_an_immediate_resume_are_not_lost(server, client, tiny_model_dir, tmp_path):
    job = start_long_job(client, tiny_model_dir, tmp_path / "train.jsonl", epochs=30)
    wait_for_event(client, job.id, "Step 3/")
    client.fine_tuning.jobs.pause(job.id)
    assert client.fine_tuning.jobs.resume(job.id).status == "queued"  # before the worker saw the pause
    wait_for_event(client, job.id, "Resumed from step")
    running = wait_for(client, job.id, ("running",), timeout=60)
    before = max(e.data["step"] for e in client.fine_tuning.jobs.list_events(job.id, limit=100) if e.type == "metrics")
    wait_for_event(client, job.id, f"Step {before + 2}/")  # it trains on, under a status that says so
    assert running.status == "running" and client.fine_tuning.jobs.retrieve(job.id).status == "running"
    client.fine_tuning.jobs.cancel(job.id)
    wait_for_event(client, job.id, "Job cancelled")


def test_a_worker_whose_server_was_killed_stops_and_a_new_server_takes_over(tmp_path, tiny_model_dir, new_registry):
    registry = new_registry()
    if registry:  # the worker-kill test above and tests/test_worker_lease.py cover recovery on PostgreSQL
        pytest.skip("SQLite only: ~30 s of CI, no PostgreSQL-specific path")
    first = ServerProcess(tmp_path, "--allow-model-dir", str(tiny_model_dir), database_url=registry).start()
    client = openai.OpenAI(base_url=first.base_url, api_key=first.new_key("ops"), max_retries=0, timeout=120)
    job = start_long_job(client, tiny_model_dir, tmp_path / "train.jsonl", epochs=30)
    wait_for_event(client, job.id, "Checkpoint created at step 5")
    orphan = worker_pid(first, job.id)
    os.kill(first.process.pid, signal.SIGKILL)  # the server only: its worker is orphaned
    first.process.wait(timeout=30)
    deadline = time.monotonic() + 60
    while _alive(orphan):
        assert time.monotonic() < deadline, "the orphaned worker is still running a minute after its server died"
        time.sleep(0.2)
    assert first.registry_row("select status, resume from jobs where id = :id", id=job.id) == ("queued", True)
    second = ServerProcess(tmp_path, "--allow-model-dir", str(tiny_model_dir), database_url=registry)
    second.port = first.port
    second.start()
    try:
        messages = wait_for_event(client, job.id, "Resumed from step")
        assert int(next(m for m in messages if m.startswith("Resumed from step")).split()[3]) >= 5
        client.fine_tuning.jobs.cancel(job.id)
        wait_for_event(client, job.id, "Job cancelled")
        assert "restarting it" not in second.log.read_text()  # no worker restart loop on the new server
    finally:
        second.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its new parent) counts as gone.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


def test_recovery_finds_jobs_a_dead_worker_held_whatever_their_status(tmp_path, monkeypatch, new_registry):
    from tuneforge.jobs.worker import recover_interrupted_jobs, this_worker
    from tuneforge.registry import jobs

    monkeypatch.setenv("TUNEFORGE_HOME", str(tmp_path))
    if registry := new_registry():
        monkeypatch.setenv("TUNEFORGE_DATABASE_URL", registry)
    held = {
        status: jobs.create_job("ops", model="m", training_file="file-x", seed=1, method={"type": "supervised"})
        for status in ("running", "paused", "queued", "cancelled")
    }
    for status, job in held.items():
        jobs.update_job(job.id, status=status, worker_pid=999_999, run_id="run-x")
    recover_interrupted_jobs(this_worker())
    after = {status: jobs.get_job(None, job.id) for status, job in held.items()}
    assert {status: (job.status, job.worker_pid, job.resume) for status, job in after.items()} == {
        "running": ("queued", None, True),
        "paused": ("paused", None, True),
        "queued": ("queued", None, True),
        "cancelled": ("cancelled", None, False),
    }
