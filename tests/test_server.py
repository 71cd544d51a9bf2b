"""The OpenAI-compatible server, driven by the official `openai` client against a real `tuneforge
serve` on loopback, with a real worker process training a tiny random model.

Twice: with the embedded defaults (the server's worker, its home's folders), and with an object
store (a local S3-compatible server) and the worker on a home of its own, as on another machine:
the server then reads every upload, checkpoint, model and result file from the store."""

import csv
import io
import shutil
import time
from pathlib import Path

import openai
import pytest
from helpers import decoded, wandb_records, write_jsonl
from server_process import LABELS, TINY_LORA, ServerProcess, tickets, wait_for


@pytest.fixture(scope="module", params=["local", "s3"])
def server(request, tmp_path_factory, tiny_model_dir):
    home = tmp_path_factory.mktemp("serve-home")
    s3 = request.getfixturevalue("s3_store") if request.param == "s3" else None
    worker_home = tmp_path_factory.mktemp("worker-home") if s3 else None
    process = ServerProcess(home, "--allow-model-dir", str(tiny_model_dir), worker_home=worker_home)
    process.s3 = s3
    if s3:
        process.env.update(s3["env"])
    yield process.start()
    process.stop()


@pytest.fixture(scope="module")
def alpha(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=server.new_key("alpha"), max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def trained(alpha, tiny_model_dir, tmp_path_factory):
    """One whole fine-tuning job through the client: upload, wait, create, poll to succeeded."""
    data = write_jsonl(tmp_path_factory.mktemp("data") / "tickets.jsonl", tickets(40))
    uploaded = alpha.files.create(file=data.open("rb"), purpose="fine-tune")
    assert uploaded.id.startswith("file-") and uploaded.status in ("uploaded", "processed")
    processed = alpha.files.wait_for_processing(uploaded.id, poll_interval=0.2, max_wait_seconds=60)
    assert processed.status == "processed" and processed.bytes == data.stat().st_size
    job = alpha.fine_tuning.jobs.create(
        model=str(tiny_model_dir),
        training_file=uploaded.id,
        suffix="tickets",
        seed=7,
        metadata={"team": "support"},
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": 5}},
        },
        extra_body=TINY_LORA,
        integrations=[{"type": "wandb", "wandb": {"project": "tickets", "tags": ["nightly"]}}],
    )
    assert job.id.startswith("ftjob-") and job.status == "validating_files" and job.metadata == {"team": "support"}
    finished = wait_for(alpha, job.id, ("succeeded", "failed", "cancelled"))
    assert finished.status == "succeeded", finished.error
    return uploaded, finished


def test_a_job_trains_and_reports_like_openai(alpha, trained):
    uploaded, job = trained
    assert job.fine_tuned_model.startswith("ft:") and job.fine_tuned_model.split(":")[2:4] == ["alpha", "tickets"]
    assert job.trained_tokens > 0 and job.finished_at >= job.created_at
    assert job.hyperparameters.n_epochs == 3 and job.hyperparameters.batch_size == 8
    events = list(alpha.fine_tuning.jobs.list_events(job.id, limit=100))
    metrics = [e for e in events if e.type == "metrics" and "train_loss" in (e.data or {})]
    assert len(metrics) == 15  # 40 examples / batch 8 = 5 steps per epoch, 3 epochs
    assert {e.data["step"] for e in metrics} == set(range(1, 16))
    assert events[0].message == "The job has successfully completed"  # newest first
    checkpoints = list(alpha.fine_tuning.jobs.checkpoints.list(job.id))
    assert checkpoints and all(c.id.startswith("ftckpt_") for c in checkpoints)
    assert (
        checkpoints[0].fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-{checkpoints[0].step_number}"
    )
    assert checkpoints[0].metrics.train_loss is not None
    [results_file] = job.result_files
    rows = list(csv.DictReader(io.StringIO(alpha.files.content(results_file).text)))
    assert [int(r["step"]) for r in rows if r["train_loss"]] == list(range(1, 16))
    assert float(rows[-1]["train_loss"]) < float(rows[0 if rows[0]["train_loss"] else 1]["train_loss"])


def test_a_jobs_wandb_integration_receives_its_metrics(server, trained):
    import json

    _, job = trained
    assert job.integrations[0].type == "wandb" and job.integrations[0].wandb.project == "tickets"
    run = json.loads(server.cli("runs", "show", job.tuneforge["run_id"]))
    [log] = Path(run["run_dir"]).glob(f"wandb/offline-run-*-{job.tuneforge['run_id']}/*.wandb")
    steps = {r.history.step.num: decoded(r.history.item) for r in wandb_records(log) if r.HasField("history")}
    assert sorted(s for s, row in steps.items() if "train_loss" in row) == list(range(1, 16))
    assert run["metrics"]["tracking"]["wandb"]["project"] == "tickets"


def test_chat_with_the_tuned_model_plain_and_streamed(server, alpha, trained):
    _, job = trained
    if server.s3:  # the training home's copy goes (another machine's, or lost): the server has only the store
        shutil.rmtree(server.worker_home / "runs" / job.tuneforge["run_id"])
    messages = [{"role": "user", "content": "Ticket 3: my invoice problem"}]
    answer = alpha.chat.completions.create(model=job.fine_tuned_model, messages=messages, temperature=0, max_tokens=8)
    text = answer.choices[0].message.content
    assert answer.object == "chat.completion" and answer.choices[0].finish_reason in ("stop", "length")
    assert answer.usage.prompt_tokens > 5 and answer.usage.completion_tokens >= 1
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    stream = alpha.chat.completions.create(
        model=job.fine_tuned_model,
        messages=messages,
        temperature=0,
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].usage.completion_tokens == answer.usage.completion_tokens
    [newest, *_] = alpha.fine_tuning.jobs.checkpoints.list(job.id)
    from_checkpoint = alpha.chat.completions.create(
        model=newest.fine_tuned_model_checkpoint, messages=messages, temperature=0, max_tokens=8
    )
    assert from_checkpoint.choices[0].message.content == text  # the newest checkpoint is the final model
    if server.s3:  # trained in the worker's home: the server fetched what it served from the store
        run_id, bucket = job.tuneforge["run_id"], server.s3["client"]
        bucket.invalidate_cache()
        assert bucket.exists(f"tuneforge-artifacts/team/runs/{run_id}/adapter/adapter_model.safetensors")
        fetched = server.home / "runs" / run_id
        assert (fetched / "adapter" / "adapter_model.safetensors").is_file()
        assert (fetched / "checkpoints" / f"step-{newest.step_number}" / "COMPLETE").is_file()
    completion = alpha.completions.create(model=job.fine_tuned_model, prompt="Ticket 3:", max_tokens=4, temperature=0)
    assert completion.object == "text_completion" and completion.usage.completion_tokens >= 1
    assert job.fine_tuned_model in [m.id for m in alpha.models.list()]


def test_dpo_on_a_tuned_model_and_a_tuned_model_trained_further(server, alpha, trained, tmp_path):
    """The SFT -> DPO flow through the client: a DPO job on an `ft:` model, and an SFT job that
    trains a tuned model on; both succeed, and each run records the run it continued."""
    import json

    uploaded, parent = trained
    pairs = [  # prefer the right label over the wrong one
        {
            "input": {"messages": ticket["messages"][:1]},
            "preferred_output": ticket["messages"][1:],
            "non_preferred_output": [{"role": "assistant", "content": LABELS[i % 2 - 1]}],
        }
        for i, ticket in enumerate(tickets(60))  # 50 or more: a share is held out to validate on
    ]
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    pairs_file = alpha.files.create(file=data.open("rb"), purpose="fine-tune")
    alpha.files.wait_for_processing(pairs_file.id, poll_interval=0.2, max_wait_seconds=60)
    dpo = alpha.fine_tuning.jobs.create(
        model=parent.fine_tuned_model,
        training_file=pairs_file.id,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 2, "batch_size": 4}}},
        extra_body={"precision": "fp32"},
    )
    further = alpha.fine_tuning.jobs.create(
        model=parent.fine_tuned_model,
        training_file=uploaded.id,
        suffix="further",
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 8}}},
        extra_body=TINY_LORA,  # the parent's own LoRA shape: accepted
    )
    assert (
        dpo.method.type == "dpo"
        and dpo.method.dpo.hyperparameters.beta == 0.2
        and dpo.model == parent.fine_tuned_model
    )
    for job in (dpo, further):
        finished = wait_for(alpha, job.id, ("succeeded", "failed", "cancelled"))
        assert finished.status == "succeeded", finished.error
        assert finished.fine_tuned_model.startswith(f"ft:{parent.fine_tuned_model.split(':')[1]}:alpha:")
        run = json.loads(server.cli("runs", "show", finished.tuneforge["run_id"]))
        assert run["config"]["continued_from"] == parent.tuneforge["run_id"]
    events = [e.data for e in alpha.fine_tuning.jobs.list_events(dpo.id, limit=100) if e.type == "metrics"]
    assert any("rewards_margin" in e for e in events) and any("valid_reward_accuracy" in e for e in events)
    run = json.loads(server.cli("runs", "show", finished.tuneforge["run_id"]))
    assert run["config"]["objective"] == "sft"
    dpo_run = json.loads(server.cli("runs", "show", wait_for(alpha, dpo.id, ("succeeded",)).tuneforge["run_id"]))
    assert (dpo_run["config"]["objective"], dpo_run["config"]["dpo_beta"]) == ("dpo", 0.2)
    with pytest.raises(openai.BadRequestError) as other_shape:  # an adapter is trained further as it is
        alpha.fine_tuning.jobs.create(
            model=parent.fine_tuned_model, training_file=uploaded.id, extra_body={"lora_rank": 4}
        )
    assert other_shape.value.body["param"] == "lora_rank"


def test_feedback_becomes_training_data(server, alpha, trained, tmp_path):
    _, job = trained
    answer = alpha.chat.completions.create(
        model=job.fine_tuned_model,
        messages=[{"role": "user", "content": "Ticket 9: screen"}],
        temperature=0,
        max_tokens=4,
    )
    alpha.post(
        "/tuneforge/feedback", cast_to=object, body={"completion_id": answer.id, "rating": -1, "correction": "bug"}
    )
    with pytest.raises(openai.NotFoundError):
        alpha.post("/tuneforge/feedback", cast_to=object, body={"completion_id": "chatcmpl-nope", "rating": 1})
    server.cli("feedback", "export", "--out", str(tmp_path / "dpo.jsonl"), "--format", "dpo")
    exported = (tmp_path / "dpo.jsonl").read_text()
    assert '"preferred_output": [{"role": "assistant", "content": "bug"}]' in exported
    summary = alpha.get("/tuneforge/metrics", cast_to=object)["data"]
    chat_rows = [row for row in summary if row["route"] == "/v1/chat/completions"]
    assert sum(row["requests"] for row in chat_rows) >= 2 and all(row["latency_ms"]["p50"] > 0 for row in chat_rows)


def test_a_second_project_sees_nothing_of_the_first(server, alpha, trained):
    uploaded, job = trained
    beta = openai.OpenAI(base_url=server.base_url, api_key=server.new_key("beta"), max_retries=0)
    assert list(beta.files.list()) == [] and list(beta.fine_tuning.jobs.list()) == []
    assert job.fine_tuned_model not in [m.id for m in beta.models.list()]
    for call in (
        lambda: beta.files.retrieve(uploaded.id),
        lambda: beta.fine_tuning.jobs.retrieve(job.id),
        lambda: beta.fine_tuning.jobs.cancel(job.id),
        lambda: beta.models.retrieve(job.fine_tuned_model),
        lambda: beta.models.delete(job.fine_tuned_model),  # alpha deletes it, below
        lambda: beta.chat.completions.create(model=job.fine_tuned_model, messages=[{"role": "user", "content": "hi"}]),
        lambda: beta.chat.completions.create(
            model=f"{job.fine_tuned_model}:ckpt-step-15", messages=[{"role": "user", "content": "hi"}]
        ),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    with pytest.raises(openai.BadRequestError) as continued:  # nor can it train alpha's model on
        beta.fine_tuning.jobs.create(model=job.fine_tuned_model, training_file="file-x")
    assert continued.value.body["param"] == "model" and continued.value.body["code"] == "model_not_available"
    anonymous = openai.OpenAI(base_url=server.base_url, api_key="tf-not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        anonymous.models.list()
    assert refused.value.body["code"] == "invalid_api_key"


def test_a_bad_training_file_fails_the_job_with_its_line(alpha, tiny_model_dir, tmp_path):
    bad = write_jsonl(
        tmp_path / "bad.jsonl",
        tickets(12)[:5] + [{"messages": [{"role": "user", "content": "no reply"}]}] + tickets(12)[5:],
    )
    uploaded = alpha.files.create(file=bad.open("rb"), purpose="fine-tune")
    processed = alpha.files.wait_for_processing(uploaded.id, poll_interval=0.2, max_wait_seconds=60)
    assert processed.status == "error" and "line 6" in processed.status_details
    job = alpha.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=uploaded.id)
    failed = wait_for(alpha, job.id, ("failed", "succeeded"), timeout=120)
    assert failed.status == "failed"
    assert (failed.error.code, failed.error.param) == ("invalid_training_file", "training_file")
    assert "line 6" in failed.error.message


def test_an_evaluation_from_the_dashboard_keeps_its_report_with_the_files(server, alpha, trained):
    """Started on the model's page (an HTTP form post with the project's key); its report is served
    through the page's signed link, from the store when there is one."""
    import re

    import httpx

    uploaded, job = trained
    headers = {"Authorization": f"Bearer {alpha.api_key}"}
    base = server.base_url.removesuffix("/v1")
    started = httpx.post(
        f"{base}/ui/actions/evaluations",
        data={"model": job.fine_tuned_model, "file_id": uploaded.id, "max_examples": "2"},
        headers=headers,
    )
    assert started.status_code == 204, started.text
    evaluation_id = started.headers["HX-Redirect"].rsplit("/", 1)[1]
    deadline = time.monotonic() + 120
    while 'id="evaluation-status">succeeded' not in (
        fragment := httpx.get(f"{base}/ui/fragments/evaluations/{evaluation_id}", headers=headers).text
    ):
        assert "status-failed" not in fragment and time.monotonic() < deadline, fragment
        time.sleep(0.5)
    (report_dir,) = server.registry_row("select report_dir from evaluations where id = :id", id=int(evaluation_id))
    if server.s3:
        assert report_dir.startswith("s3://tuneforge-artifacts/team/evaluations/")
        server.s3["client"].invalidate_cache()
        assert server.s3["client"].exists(f"{report_dir.removeprefix('s3://')}/report.html")
    link = re.search(r'class="evaluation-report" href="([^"]+)"', fragment).group(1).replace("&amp;", "&")
    report = httpx.get(f"{base}{link}")
    assert report.status_code == 200 and "<html" in report.text.lower()


def test_a_job_on_a_file_whose_bytes_are_gone_fails_and_the_worker_carries_on(server, alpha, tiny_model_dir, tmp_path):
    """The worker checks a job's files before training: a row whose bytes were removed from disk fails
    that job with `invalid_file` (the data check would have raised and taken the worker down with it),
    and the next job still trains."""
    data = write_jsonl(tmp_path / "tickets.jsonl", tickets(12))
    gone = alpha.files.wait_for_processing(
        alpha.files.create(file=data.open("rb"), purpose="fine-tune").id, poll_interval=0.2, max_wait_seconds=60
    )
    (path,) = server.registry_row("select path from files where id = :id", id=gone.id)
    if server.s3:
        server.s3["client"].rm_file(path.removeprefix("s3://"))
    else:
        Path(path).unlink()
    job = alpha.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=gone.id)
    failed = wait_for(alpha, job.id, ("failed", "succeeded"), timeout=120)
    assert (failed.status, failed.error.code, failed.error.param) == ("failed", "invalid_file", "training_file")
    assert "content is missing" in failed.error.message
    kept = alpha.files.wait_for_processing(
        alpha.files.create(file=data.open("rb"), purpose="fine-tune").id, poll_interval=0.2, max_wait_seconds=60
    )
    after = alpha.fine_tuning.jobs.create(
        model=str(tiny_model_dir), training_file=kept.id, hyperparameters={"n_epochs": 1}, extra_body=TINY_LORA
    )
    assert wait_for(alpha, after.id, ("failed", "succeeded"), timeout=120).status == "succeeded"


def test_requests_the_server_cannot_take_get_openai_errors(alpha, tiny_model_dir, trained):
    uploaded, _ = trained
    with pytest.raises(openai.BadRequestError) as unknown:
        alpha.fine_tuning.jobs.create(
            model=str(tiny_model_dir), training_file=uploaded.id, extra_body={"lora_rnak": 8}
        )
    assert unknown.value.body["param"] == "lora_rnak"
    with pytest.raises(openai.BadRequestError) as negative:
        alpha.fine_tuning.jobs.create(
            model=str(tiny_model_dir), training_file=uploaded.id, hyperparameters={"n_epochs": 0}
        )
    assert negative.value.body["param"] == "n_epochs"
    with pytest.raises(openai.BadRequestError) as missing:
        alpha.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file="file-doesnotexist")
    assert missing.value.body["param"] == "training_file"
    with pytest.raises(openai.NotFoundError) as no_model:
        alpha.chat.completions.create(model="ft:nothing:alpha::run-0", messages=[{"role": "user", "content": "hi"}])
    assert no_model.value.body["code"] == "model_not_found"


def test_cancel_stops_a_running_job_within_seconds(alpha, tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "long.jsonl", tickets(40))
    uploaded = alpha.files.create(file=data.open("rb"), purpose="fine-tune")
    alpha.files.wait_for_processing(uploaded.id, poll_interval=0.2, max_wait_seconds=60)
    job = alpha.fine_tuning.jobs.create(
        model=str(tiny_model_dir),
        training_file=uploaded.id,
        hyperparameters={"n_epochs": 50, "batch_size": 2},
        extra_body=TINY_LORA,
    )
    wait_for(alpha, job.id, ("running",), timeout=120)
    while not any(e.type == "metrics" for e in alpha.fine_tuning.jobs.list_events(job.id, limit=5)):
        time.sleep(0.2)
    cancelled = alpha.fine_tuning.jobs.cancel(job.id)
    asked = time.monotonic()
    assert cancelled.status == "cancelled"
    while "Job cancelled" not in [e.message for e in alpha.fine_tuning.jobs.list_events(job.id, limit=5)]:
        assert time.monotonic() - asked < 30, "the worker did not stop within 30 s"
        time.sleep(0.2)
    assert alpha.fine_tuning.jobs.retrieve(job.id).status == "cancelled"


def test_the_trained_model_is_deleted_with_its_run(alpha, trained):
    _, job = trained
    deleted = alpha.models.delete(job.fine_tuned_model)
    assert deleted.deleted and deleted.id == job.fine_tuned_model
    with pytest.raises(openai.NotFoundError):
        alpha.chat.completions.create(model=job.fine_tuned_model, messages=[{"role": "user", "content": "hi"}])
    uploaded, _ = trained
    assert alpha.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        alpha.files.retrieve(uploaded.id)
