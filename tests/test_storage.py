"""Uploaded files and run directories in an object store (`TUNEFORGE_STORAGE_URL=s3://…`): a local
S3-compatible server (moto's server mode) and the real s3fs client. The server keeps an upload's
bytes in the bucket, streams them back from it, a job trains on them, and deleting the file deletes
the object; a run's checkpoints go up as saved and another home resumes and serves from them; a
store that is down answers 503 to an upload and does not end a run at a checkpoint."""

from pathlib import Path

import openai
import pytest
from helpers import write_jsonl
from server_process import TINY_LORA, ServerProcess, tickets, wait_for

from tuneforge.registry import artifacts


def test_a_location_round_trips_through_the_store(s3_store, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_HOME", str(tmp_path / "home"))
    for name, value in s3_store["env"].items():
        monkeypatch.setenv(name, value)
    local, content = tmp_path / "upload.jsonl", b'{"text": "hello"}\n'
    local.write_bytes(content)
    location = artifacts.publish(local, "files/file-abc.jsonl")
    assert location == "s3://tuneforge-artifacts/team/files/file-abc.jsonl"
    assert s3_store["client"].cat_file("tuneforge-artifacts/team/files/file-abc.jsonl") == content
    assert artifacts.exists(location)
    with artifacts.open_bytes(location) as stream:
        assert stream.read() == content
    copy = artifacts.local_copy(location)  # the uploaded file became this machine's copy: nothing fetched
    assert not local.exists() and copy.read_bytes() == content and copy.is_relative_to(tmp_path / "home" / "cache")
    copy.unlink()
    assert artifacts.local_copy(location).read_bytes() == content  # fetched from the store
    artifacts.delete(location)
    assert not artifacts.exists(location) and not copy.exists()
    artifacts.delete(location)  # already gone: nothing to do

    monkeypatch.delenv("TUNEFORGE_STORAGE_URL")  # without a store, a location is the local path itself
    local.write_bytes(content)
    assert artifacts.publish(local, "files/file-abc.jsonl") == str(local)
    assert artifacts.local_copy(str(local)) == local


def test_monkeypatched_bad_options_are_a_usage_error(monkeypatch):
    monkeypatch.setenv("TUNEFORGE_STORAGE_OPTIONS", "{endpoint")
    with pytest.raises(artifacts.UsageError, match="TUNEFORGE_STORAGE_OPTIONS"):
        artifacts.exists("s3://bucket/key")


def test_uploads_live_in_the_bucket_and_a_job_trains_on_them(s3_store, tmp_path, tiny_model_dir):
    (tmp_path / "home").mkdir()
    server = ServerProcess(tmp_path / "home", "--allow-model-dir", str(tiny_model_dir))
    server.env.update(s3_store["env"])
    server.start()
    try:
        client = openai.OpenAI(base_url=server.base_url, api_key=server.new_key("team"), max_retries=0, timeout=120)
        data = write_jsonl(tmp_path / "tickets.jsonl", tickets(24))
        uploaded = client.files.create(file=data.open("rb"), purpose="fine-tune")
        assert client.files.wait_for_processing(uploaded.id, poll_interval=0.2, max_wait_seconds=60).status == (
            "processed"
        )
        key = f"tuneforge-artifacts/team/files/{uploaded.id}.jsonl"
        assert s3_store["client"].cat_file(key) == data.read_bytes()
        (path,) = server.registry_row("select path from files where id = :id", id=uploaded.id)
        assert path == f"s3://{key}"
        assert client.files.content(uploaded.id).read() == data.read_bytes()

        job = client.fine_tuning.jobs.create(
            model=str(tiny_model_dir),
            training_file=uploaded.id,
            hyperparameters={"n_epochs": 1, "batch_size": 8},
            extra_body=TINY_LORA,
        )
        finished = wait_for(client, job.id, ("succeeded", "failed", "cancelled"), timeout=120)
        assert finished.status == "succeeded", finished.error
        (results,) = finished.result_files
        s3_store["client"].invalidate_cache()
        assert s3_store["client"].exists(f"tuneforge-artifacts/team/files/{results}.csv")
        assert client.files.content(results).read().startswith(b"step,")

        s3_store["client"].rm_file(key)  # lost outside Tuneforge: 410, as for a local file
        with pytest.raises(openai.APIStatusError) as gone:
            client.files.content(uploaded.id)
        assert gone.value.status_code == 410 and gone.value.body["code"] == "file_content_missing"
        assert client.files.delete(results).deleted
        s3_store["client"].invalidate_cache()
        assert not s3_store["client"].exists(f"tuneforge-artifacts/team/files/{results}.csv")
    finally:
        server.stop()


def _checkpoint(run_dir, step: int, complete: bool = True):
    folder = run_dir / "checkpoints" / f"step-{step}"
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(bytes([step]) * 64)
    (folder / "trainer_state.json").write_text(f'{{"step": {step}}}')
    if complete:
        (folder / "COMPLETE").write_text("")
    return {"step": step, "epoch": 1.0, "path": str(folder)}


def test_a_run_directory_goes_to_the_store_and_resumes_on_another_home(s3_store, tmp_path, monkeypatch):
    """What a training machine uploads (runs/stored.py), and what another machine, with its own home,
    fetches to resume the run and to serve its model."""
    from types import SimpleNamespace

    from tuneforge.runs import stored
    from tuneforge.train import loop

    for name, value in s3_store["env"].items():
        monkeypatch.setenv(name, value)
    bucket = s3_store["client"]
    trainer = tmp_path / "trainer" / "runs" / "run-stored"
    (trainer / "checkpoints").mkdir(parents=True)
    (trainer / "config.json").write_text("{}")
    (trainer / "metrics.csv").write_text("step,train_loss\n1,2.0\n2,1.5\n")
    first = _checkpoint(trainer, 2)
    stored.upload_checkpoints(trainer, [first])
    root = "tuneforge-artifacts/team/runs/run-stored"
    bucket.invalidate_cache()
    assert bucket.cat_file(f"{root}/checkpoints/step-2/adapter_model.safetensors") == bytes([2]) * 64
    assert bucket.exists(f"{root}/checkpoints/step-2/COMPLETE") and bucket.exists(f"{root}/metrics.csv")

    # The next checkpoint; step 2 pruned on disk is removed from the store. A step 6 whose upload was
    # cut off (no marker in the store) is not what a resume takes.
    second = _checkpoint(trainer, 4)
    (trainer / "metrics.csv").write_text("step,train_loss\n1,2.0\n2,1.5\n3,1.2\n4,1.0\n")
    stored.upload_checkpoints(trainer, [second])
    bucket.invalidate_cache()
    assert not bucket.exists(f"{root}/checkpoints/step-2") and bucket.exists(f"{root}/checkpoints/step-4/COMPLETE")
    bucket.pipe(f"{root}/checkpoints/step-6/adapter_model.safetensors", b"half")
    assert stored.newest_stored_checkpoint("run-stored") == 4

    # Another machine: a home of its own, where the recorded directory does not exist.
    monkeypatch.setenv("TUNEFORGE_HOME", str(tmp_path / "elsewhere"))
    run = SimpleNamespace(id="run-stored", run_dir="/nowhere/runs/run-stored", status="running")
    assert stored.has_checkpoint(run)
    directory = stored.stage_resume(run)
    assert directory == tmp_path / "elsewhere" / "runs" / "run-stored"
    assert (directory / "checkpoints" / "step-4" / "COMPLETE").exists()
    assert (directory / "checkpoints" / "step-4" / "adapter_model.safetensors").read_bytes() == bytes([4]) * 64
    assert (directory / "metrics.csv").read_text().endswith("4,1.0\n") and (directory / "config.json").exists()
    assert loop.newest_complete_checkpoint(directory / "checkpoints").name == "step-4"

    # The finished run: its weights and card go up, and a server elsewhere loads them from there.
    adapter = trainer / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"final")
    (trainer / "README.md").write_text("# card")
    stored.upload_run(trainer, adapter)
    monkeypatch.setenv("TUNEFORGE_HOME", str(tmp_path / "server"))
    run.status = "succeeded"
    model = SimpleNamespace(path=str(tmp_path / "gone" / "adapter"))
    weights = stored.weights(run, model)
    assert weights == tmp_path / "server" / "runs" / "run-stored" / "adapter"
    assert (weights / "adapter_model.safetensors").read_bytes() == b"final"
    assert (stored.run_folder(run) / "README.md").read_text() == "# card"

    monkeypatch.delenv("TUNEFORGE_STORAGE_URL")  # without a store: the recorded directory, nothing fetched
    assert stored.local_dir(run) == Path("/nowhere/runs/run-stored") and not stored.has_checkpoint(run)


def test_a_store_outage_at_a_checkpoint_does_not_end_the_run(s3_store, tmp_path, monkeypatch, caplog):
    """The run goes on with its checkpoint on disk; the next checkpoint uploads what the store lacks."""
    from tuneforge.registry import store
    from tuneforge.runs.training import RecordingReporter
    from tuneforge.train.reporter import Reporter

    monkeypatch.setenv("TUNEFORGE_HOME", str(tmp_path / "home"))
    run_dir = tmp_path / "home" / "runs" / "run-outage"
    (run_dir / "checkpoints").mkdir(parents=True)
    store.create_run("run-outage", {"method": "lora", "model": "m"}, run_dir, None, None)
    reporter = RecordingReporter(Reporter(), "default", run_dir)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv("TUNEFORGE_STORAGE_URL", f"file://{blocked}/store")  # every put fails
    first = _checkpoint(run_dir, 2)
    reporter.checkpoints_kept("run-outage", [first])
    assert "uploading its checkpoints failed" in caplog.text
    assert [c.step for c in store.get_run("run-outage").checkpoints] == [2]

    for name, value in s3_store["env"].items():  # the store is back
        monkeypatch.setenv(name, value)
    reporter.checkpoints_kept("run-outage", [first, _checkpoint(run_dir, 4)])
    bucket = s3_store["client"]
    bucket.invalidate_cache()
    for step in (2, 4):
        assert bucket.exists(f"tuneforge-artifacts/team/runs/run-outage/checkpoints/step-{step}/COMPLETE")

    assert store.delete_run("run-outage")  # the run goes, here and in the store
    bucket.invalidate_cache()
    assert not run_dir.exists() and not bucket.exists("tuneforge-artifacts/team/runs/run-outage")


def test_an_upload_while_the_store_is_down_answers_503_and_keeps_nothing(s3_store, tmp_path, tiny_model_dir):
    import json

    from server_process import free_port

    home = tmp_path / "home"
    home.mkdir()
    server = ServerProcess(home)
    # Nothing listens there; one attempt (botocore's retries would take ~15 s to give up).
    options = {"endpoint_url": f"http://127.0.0.1:{free_port()}", "config_kwargs": {"retries": {"max_attempts": 1}}}
    server.env.update({**s3_store["env"], "TUNEFORGE_STORAGE_OPTIONS": json.dumps(options)})
    server.start()
    try:
        client = openai.OpenAI(base_url=server.base_url, api_key=server.new_key("team"), max_retries=0, timeout=60)
        data = write_jsonl(tmp_path / "tickets.jsonl", tickets(4))
        with pytest.raises(openai.APIStatusError) as down:
            client.files.create(file=data.open("rb"), purpose="fine-tune")
        assert down.value.status_code == 503 and down.value.body["code"] == "storage_unavailable"
        assert "127.0.0.1" not in down.value.body["message"]  # where the store is stays with the operator
        assert client.files.list().data == [] and not any((home / "files").glob("*"))
    finally:
        server.stop()
    assert "upload of tickets.jsonl refused" in server.log.read_text()
