"""Jobs survive their worker: kill -9 mid-training resumes from the checkpoint; pause and resume too."""

import os
import signal
import sqlite3
import time

import openai
import pytest
from helpers import write_jsonl
from server_process import TINY_LORA, ServerProcess, tickets, wait_for


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = ServerProcess(tmp_path_factory.mktemp("restart-home")).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key=server.new_key("ops"), max_retries=0, timeout=120)


def start_long_job(client, tiny_model_dir, path, epochs: int):
    uploaded = client.files.create(file=write_jsonl(path, tickets(40)).open("rb"), purpose="fine-tune")
    client.files.wait_for_processing(uploaded.id, poll_interval=0.2, max_wait_seconds=60)
    return client.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=uploaded.id, seed=3,
                                          hyperparameters={"n_epochs": epochs, "batch_size": 8}, extra_body=TINY_LORA)


def wait_for_event(client, job_id: str, text: str, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        messages = [e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=100)]
        if any(text in m for m in messages):
            return messages
        time.sleep(0.2)
    raise TimeoutError(f"no event containing '{text}' for {job_id}")


def worker_pid(server, job_id: str) -> int:
    with sqlite3.connect(server.home / "registry.db") as db:
        return db.execute("select worker_pid from jobs where id = ?", (job_id,)).fetchone()[0]


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
    steps = [e.data["step"] for e in client.fine_tuning.jobs.list_events(job.id, limit=1000)
             if e.type == "metrics" and "train_loss" in (e.data or {})]
    assert max(steps) == 40 and set(range(1, 41)) <= set(steps)


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
