"""Two `tuneforge serve` processes and one worker on one PostgreSQL registry: no state lives in a
server process, so either server answers for every job, and concurrent requests through both
never answer 5xx nor leave a job in two final states."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from helpers import write_jsonl
from server_process import TINY_LORA, ServerProcess, tickets, wait_for

FINAL_EVENTS = {
    "succeeded": "The job has successfully completed",
    "cancelled": "Job cancellation requested",
    "failed": "Job failed:",
}


@pytest.fixture(scope="module")
def servers(tmp_path_factory, tiny_model_dir, postgres):
    """The first server runs the worker; the second (`--no-worker`) shares its home and registry."""
    home = tmp_path_factory.mktemp("shared-home")
    registry = postgres.create_database("shared_registry")
    first = ServerProcess(home, "--allow-model-dir", str(tiny_model_dir), database_url=registry).start()
    second = ServerProcess(home, "--no-worker", "--allow-model-dir", str(tiny_model_dir), database_url=registry)
    second.start()
    yield first, second
    second.stop()
    first.stop()


def test_fifty_concurrent_creations_and_cancels_through_two_servers(servers, tiny_model_dir, tmp_path):
    first, second = servers
    key = first.new_key("team")
    clients = [openai.OpenAI(base_url=s.base_url, api_key=key, max_retries=0, timeout=120) for s in servers]
    data = write_jsonl(tmp_path / "t.jsonl", tickets(16))
    uploaded = clients[0].files.create(file=data.open("rb"), purpose="fine-tune")
    seen = clients[1].files.wait_for_processing(uploaded.id, poll_interval=0.2, max_wait_seconds=60)
    assert seen.status == "processed"

    server_errors, refusals, lock = [], [], threading.Lock()

    def create_and_maybe_cancel(i: int) -> str:
        """Created through one server; four in five cancelled at once through the other."""
        here, there = clients[i % 2], clients[1 - i % 2]
        job = here.fine_tuning.jobs.create(
            model=str(tiny_model_dir),
            training_file=uploaded.id,
            hyperparameters={"n_epochs": 1, "batch_size": 8},
            extra_body=TINY_LORA,
        )
        if i % 5:
            try:
                there.fine_tuning.jobs.cancel(job.id)
            except openai.APIStatusError as error:
                with lock:
                    (server_errors if error.status_code >= 500 else refusals).append((job.id, error.body))
        return job.id

    def guarded(i: int) -> str | None:
        try:
            return create_and_maybe_cancel(i)
        except openai.APIStatusError as error:
            with lock:
                server_errors.append((i, error.status_code, error.body))
            return None

    with ThreadPoolExecutor(max_workers=16) as pool:
        created = list(pool.map(guarded, range(50)))
    assert server_errors == [] and None not in created
    # A cancel can only be refused because its job had already finished (4xx, `invalid_state`).
    assert all(body["code"] == "invalid_state" for _, body in refusals)

    final = {job_id: wait_for(clients[i % 2], job_id, tuple(FINAL_EVENTS), 300) for i, job_id in enumerate(created)}
    time.sleep(2)  # anything a worker would still write about these jobs lands now
    for i, job_id in enumerate(created):
        job = clients[1].fine_tuning.jobs.retrieve(job_id)
        assert job.status == final[job_id].status and job.finished_at is not None
        messages = [event.message for event in clients[0].fine_tuning.jobs.list_events(job_id, limit=100)]
        endings = [status for status, text in FINAL_EVENTS.items() if any(m.startswith(text) for m in messages)]
        assert endings == [job.status], (job_id, job.status, messages)
        if i % 5 == 0:
            assert job.status == "succeeded", job.error
    cancelled = sum(final[job_id].status == "cancelled" for job_id in created)
    assert cancelled == 40 - len(refusals)
    listed = [{job.id for job in client.fine_tuning.jobs.list(limit=100)} for client in clients]
    assert listed[0] == listed[1] == set(created)

    tuned = final[created[0]].fine_tuned_model  # trained by the first server's worker, served by the second
    assert tuned in [model.id for model in clients[1].models.list()]
    answer = clients[1].chat.completions.create(
        model=tuned, messages=[{"role": "user", "content": "Ticket 3: my invoice problem"}], max_tokens=4
    )
    assert answer.model == tuned and answer.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_jobs_recording_one_data_file_at_once_keep_one_row(backend, postgres, tmp_path, monkeypatch):
    """Four jobs on one upload record its dataset row together; a read-then-add once failed one of
    them with a UniqueViolation on PostgreSQL (test_ray_backend's four jobs at once)."""
    from tuneforge.registry import store

    url = postgres.create_database("datasets_race") if backend == "postgresql" else f"sqlite:///{tmp_path}/r.db"
    monkeypatch.setenv("TUNEFORGE_DATABASE_URL", url)
    hashes = [f"{n:064x}" for n in range(20)]  # 20 rounds: one round races only now and then
    for sha in hashes:
        start = threading.Barrier(8)

        def record(i: int, sha=sha, start=start) -> str:
            start.wait()
            return store.record_dataset(tmp_path / f"copy-{i}.jsonl", sha, "conversation", 48, None)

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(record, range(8))) == [sha] * 8
    with store.session() as db:
        rows = db.query(store.Dataset).all()
    assert sorted(row.sha256 for row in rows) == hashes and {row.examples for row in rows} == {48}
