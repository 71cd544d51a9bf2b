"""Listing, paging and limits of the server, on a `tuneforge serve --no-worker` whose jobs stay queued;
against SQLite and PostgreSQL registries."""

import openai
import pytest
from helpers import filler, write_jsonl
from server_process import ServerProcess


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_model_dir, new_registry):
    server = ServerProcess(
        tmp_path_factory.mktemp("queue-home"),
        "--no-worker",
        "--max-file-mb",
        "1",
        "--allow-model-dir",
        str(tiny_model_dir),
        database_url=new_registry(),
    ).start()
    yield openai.OpenAI(base_url=server.base_url, api_key=server.new_key("paging"), max_retries=0)
    server.stop()


@pytest.fixture(scope="module")
def training_file(client, tmp_path_factory):
    data = write_jsonl(tmp_path_factory.mktemp("queue-data") / "train.jsonl", filler(12))
    uploaded = client.files.create(file=data.open("rb"), purpose="fine-tune")
    return client.files.wait_for_processing(uploaded.id, poll_interval=0.2, max_wait_seconds=60)


def test_jobs_page_newest_first_across_more_than_twenty(client, training_file, tiny_model_dir):
    created = [
        client.fine_tuning.jobs.create(
            model=str(tiny_model_dir),
            training_file=training_file.id,
            metadata={"batch": "even" if i % 2 == 0 else "odd"},
        ).id
        for i in range(23)
    ]
    first = client.fine_tuning.jobs.list(limit=10)
    assert [job.id for job in first.data] == created[::-1][:10] and first.has_more
    every = [job.id for job in client.fine_tuning.jobs.list(limit=10)]  # the client follows `after` page by page
    assert every == created[::-1]
    default_page = client.fine_tuning.jobs.list()
    assert len(default_page.data) == 20 and default_page.has_more
    odd = [job.id for job in client.fine_tuning.jobs.list(metadata={"batch": "odd"}, limit=100)]
    assert odd == [job_id for i, job_id in enumerate(created) if i % 2][::-1]
    for job_id in created:
        assert client.fine_tuning.jobs.cancel(job_id).status == "cancelled"
    with pytest.raises(openai.BadRequestError) as again:
        client.fine_tuning.jobs.cancel(created[0])
    assert again.value.body["code"] == "invalid_state"


def test_files_list_in_either_order_and_page(client, tmp_path):
    ids = [
        client.files.create(file=(f"part{i}.jsonl", b'{"text": "hello"}\n'), purpose="fine-tune").id for i in range(3)
    ]
    newest_first = [f.id for f in client.files.list(order="desc", limit=2)]
    assert newest_first[:3] == ids[::-1]
    oldest_first = [f.id for f in client.files.list(order="asc") if f.id in ids]
    assert oldest_first == ids
    assert all(f.purpose == "fine-tune" for f in client.files.list(purpose="fine-tune"))


def test_an_upload_over_the_size_limit_is_refused_with_413(client):
    with pytest.raises(openai.APIStatusError) as refused:
        client.files.create(file=("big.jsonl", b"x" * (1024 * 1024 + 10)), purpose="fine-tune")
    assert refused.value.status_code == 413 and refused.value.body["code"] == "file_too_large"
    with pytest.raises(openai.BadRequestError) as purpose:
        client.files.create(file=("a.jsonl", b"{}\n"), purpose="assistants")
    assert purpose.value.body["param"] == "purpose"


def test_unknown_paths_and_bad_bodies_answer_in_openai_shape(client):
    with pytest.raises(openai.NotFoundError) as missing:
        client.get("/no/such/thing", cast_to=object)
    assert missing.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as invalid:
        client.chat.completions.create(model="smollm2-135m-instruct", messages=[], max_tokens=2)
    assert invalid.value.body["param"] == "messages"


def test_no_auth_mode_serves_the_default_project_without_a_key(tmp_path):
    server = ServerProcess(tmp_path, "--no-auth", "--no-worker").start()
    try:
        anyone = openai.OpenAI(base_url=server.base_url, api_key="anything", max_retries=0)
        uploaded = anyone.files.create(file=("a.jsonl", b'{"text": "hello"}\n'), purpose="fine-tune")
        assert [f.id for f in anyone.files.list()] == [uploaded.id]
        assert "smollm2-135m-instruct" in [m.id for m in anyone.models.list()]
        server.cli("keys", "create", "--project", "other")  # keys exist, yet --no-auth ignores them
        assert anyone.files.retrieve(uploaded.id).id == uploaded.id
    finally:
        server.stop()
