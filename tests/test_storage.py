"""Uploaded files in an object store (`TUNEFORGE_STORAGE_URL=s3://…`): a local S3-compatible server
(moto's server mode) and the real s3fs client. The server keeps an upload's bytes in the bucket,
streams them back from it, a job trains on them, and deleting the file deletes the object."""

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
