"""Jobs on Ray (`tuneforge serve --backend ray --ray-address --node-home`): a Ray cluster of a head
and two worker nodes on loopback, each node's tasks on a home of their own, a PostgreSQL registry,
files and runs in a local S3-compatible store, the official `openai` client. Several jobs train at
once and a second server serves them from the store; a job whose Ray worker process is killed (-9)
with its node resumes on the other node from the checkpoint it uploaded, every step reported once."""

import contextlib
import os
import shutil
import signal
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
from helpers import write_jsonl
from server_process import TINY_LORA, ServerProcess, tickets, wait_for

pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster():
    """A Ray cluster on loopback: a head without CPUs for tasks and two worker nodes of 1 CPU each,
    as `ray start --head` and `ray start --address` would make on three machines."""
    from ray.cluster_utils import Cluster

    # The cluster's sockets and logs: a short path (a Unix socket's path must fit in 107 bytes).
    directory = tempfile.mkdtemp(prefix="tf-ray-", dir="/tmp")
    previous = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = directory
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0}, shutdown_at_exit=True)
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()
    if previous is None:
        os.environ.pop("RAY_TMPDIR", None)
    else:
        os.environ["RAY_TMPDIR"] = previous
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def servers(tmp_path_factory, tiny_model_dir, postgres, s3_store, ray_cluster):
    """The first server dispatches jobs to the Ray cluster; the second (`--no-worker`, another port)
    shares its PostgreSQL registry, object store and home."""
    home = tmp_path_factory.mktemp("ray-home")
    nodes = tmp_path_factory.mktemp("ray-nodes")
    registry = postgres.create_database("ray_jobs")
    started = []
    dispatch = ("--backend", "ray", "--ray-address", ray_cluster.address, "--node-home", f"{nodes}/{{node}}")
    for extra in (dispatch, ("--no-worker",)):
        process = ServerProcess(home, *extra, "--allow-model-dir", str(tiny_model_dir), database_url=registry)
        process.env.update(s3_store["env"])
        started.append(process.start())
    started[0].nodes = nodes
    yield started
    for process in reversed(started):
        process.stop()


@pytest.fixture(scope="module")
def server(servers):
    return servers[0]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key=server.new_key("team"), max_retries=0, timeout=120)


def upload(client, path, n: int):
    uploaded = client.files.create(file=write_jsonl(path, tickets(n)).open("rb"), purpose="fine-tune")
    return client.files.wait_for_processing(uploaded.id, poll_interval=0.2, max_wait_seconds=60)


def steps(client, job_id: str) -> list[int]:
    """The steps the job reported, in order (a step reported twice shows twice)."""
    events = client.fine_tuning.jobs.list_events(job_id, limit=1000).data
    return sorted(e.data["step"] for e in events if e.type == "metrics" and "train_loss" in (e.data or {}))


def test_four_jobs_at_once_all_succeed_and_train_side_by_side(servers, server, client, tiny_model_dir, tmp_path):
    training = upload(client, tmp_path / "train.jsonl", 48)
    (path,) = server.registry_row("select path from files where id = :id", id=training.id)
    assert path.startswith("s3://tuneforge-artifacts/team/files/")  # the upload is in the object store

    def create(i: int):
        return client.fine_tuning.jobs.create(
            model=str(tiny_model_dir),
            training_file=training.id,
            seed=i,
            hyperparameters={"n_epochs": 3, "batch_size": 4},
            extra_body=TINY_LORA,
        )

    with ThreadPoolExecutor(4) as pool:
        created = list(pool.map(create, range(4)))
    most_running, deadline = 0, time.monotonic() + 150
    while time.monotonic() < deadline:  # how many train at once, read off the registry
        statuses = [client.fine_tuning.jobs.retrieve(job.id).status for job in created]
        most_running = max(most_running, statuses.count("running"))
        if all(status in ("succeeded", "failed", "cancelled") for status in statuses):
            break
        time.sleep(0.2)
    finished = [client.fine_tuning.jobs.retrieve(job.id) for job in created]
    assert [job.status for job in finished] == ["succeeded"] * 4, [job.error for job in finished]
    spans = []
    for job in finished:
        messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
        assert any(m.startswith("Sent to Ray (0 GPU, 1 CPU)") for m in messages)
        reported = steps(client, job.id)
        assert reported == list(range(1, len(reported) + 1)) and len(reported) >= 10
        # When its first and last step were reported, to the microsecond (the API rounds to seconds).
        spans.append(
            server.registry_row(
                "select min(created_at), max(created_at) from job_events where job_id = :id and type = 'metrics'",
                id=job.id,
            )
        )
    overlapping = [
        (a, b) for a in range(4) for b in range(a + 1, 4) if spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]
    ]
    shown = [f"{start:%H:%M:%S.%f}-{end:%H:%M:%S.%f}" for start, end in spans]
    assert overlapping and most_running >= 2, (most_running, shown)  # two jobs took steps at the same time

    # The second server (another port, no worker of its own) sees the same jobs and serves their models,
    # which trained in the nodes' homes: it fetches them from the store.
    other = openai.OpenAI(base_url=servers[1].base_url, api_key=client.api_key, max_retries=0, timeout=120)
    assert {job.id for job in other.fine_tuning.jobs.list(limit=100)} >= {job.id for job in created}
    first = other.fine_tuning.jobs.retrieve(created[0].id)
    (run_dir,) = server.registry_row("select run_dir from runs where id = :id", id=first.tuneforge["run_id"])
    assert run_dir.startswith(str(server.nodes))
    shutil.rmtree(run_dir)  # as if on another machine: the server has only the store
    answer = other.chat.completions.create(
        model=first.fine_tuned_model,
        messages=[{"role": "user", "content": "Ticket 1: my invoice problem"}],
        max_tokens=4,
    )
    assert answer.model == first.fine_tuned_model and answer.choices[0].message.content is not None
    assert (servers[1].home / "runs" / first.tuneforge["run_id"] / "adapter" / "adapter_config.json").is_file()


def test_pause_resume_and_cancel_reach_the_ray_task(server, client, tiny_model_dir, tmp_path):
    """A pause ends the job's task at a step boundary with a checkpoint; a resume sends a new task,
    which continues from it; a cancel ends that one."""
    training = upload(client, tmp_path / "long.jsonl", 40)
    job = client.fine_tuning.jobs.create(
        model=str(tiny_model_dir),
        training_file=training.id,
        hyperparameters={"n_epochs": 30, "batch_size": 8},
        extra_body=TINY_LORA,
    )

    def messages() -> list[str]:
        return [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=1000)]

    def wait_for_message(text: str) -> None:
        deadline = time.monotonic() + 120
        while not any(text in m for m in messages()):
            assert time.monotonic() < deadline, (text, messages())
            time.sleep(0.2)

    wait_for_message("Step 3/")
    assert client.fine_tuning.jobs.pause(job.id).status == "paused"
    wait_for_message("Job paused")
    assert client.fine_tuning.jobs.resume(job.id).status == "queued"
    wait_for_message("Resumed from step")
    assert sum(m.startswith("Sent to Ray") for m in messages()) == 2
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    wait_for_message("Job cancelled")
    deadline = time.monotonic() + 30
    while server.registry_row("select worker_pid from jobs where id = :id", id=job.id)[0] is not None:
        assert time.monotonic() < deadline, "the dispatcher kept the cancelled job"
        time.sleep(0.2)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"


RUN_DIR_OF_JOB = "select r.run_dir from runs r join jobs j on j.run_id = r.id where j.id = :id"


def node_running(cluster, pid: int):
    """The cluster's node whose raylet started the worker process `pid`."""
    parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    for node in cluster.list_all_nodes():
        if any(info.process.pid == parent for info in node.all_processes.get("raylet", [])):
            return node
    raise AssertionError(f"no node of the cluster started process {pid} (its parent: {parent})")


def test_a_job_whose_node_is_lost_resumes_on_another_from_its_uploaded_checkpoint(
    server, client, ray_cluster, tiny_model_dir, tmp_path
):
    training = upload(client, tmp_path / "long.jsonl", 40)
    job = client.fine_tuning.jobs.create(
        model=str(tiny_model_dir),
        training_file=training.id,
        seed=5,
        hyperparameters={"n_epochs": 6, "batch_size": 8},
        extra_body=TINY_LORA,
    )
    deadline = time.monotonic() + 180
    while not any("Checkpoint created at step 10" in e.message for e in client.fine_tuning.jobs.list_events(job.id)):
        assert time.monotonic() < deadline, "no checkpoint at step 10"
        time.sleep(0.2)
    (pid,) = server.registry_row("select worker_pid from jobs where id = :id", id=job.id)
    assert pid != server.process.pid
    (first_home,) = server.registry_row(RUN_DIR_OF_JOB, id=job.id)
    # The node goes (its raylet killed), and with it the Ray worker process that runs the task (kill -9).
    ray_cluster.remove_node(node_running(ray_cluster, pid), allow_graceful=False)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(Path(first_home).parents[1])  # and its disk: the node's home (Ray takes seconds to retry)

    finished = wait_for(client, job.id, ("succeeded", "failed", "cancelled"), timeout=300)
    assert finished.status == "succeeded", finished.error
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=1000)]
    assert any("The process running the job was lost" in m for m in messages)
    [resumed] = [m.split() for m in messages if m.startswith("Resumed from step")]
    first_step, total = int(resumed[3]), int(resumed[4].lstrip("("))
    assert first_step >= 10
    assert steps(client, job.id) == list(range(1, total + 1))  # none lost, none reported twice
    (holder,) = server.registry_row("select worker_pid from jobs where id = :id", id=job.id)
    assert holder is None  # the dispatcher let go of it
    # It went on in the other node's home, which had none of it: the checkpoint came from the store.
    (second_home,) = server.registry_row(RUN_DIR_OF_JOB, id=job.id)
    assert Path(second_home).parents[1] != Path(first_home).parents[1]
    assert Path(second_home).is_relative_to(server.nodes)
