"""The server's response models (serve/protocol.py) are OpenAI's objects: each one, built from real
registry rows, parses as the official client's own type and keeps its values, OpenAI's nulls
included; /openapi.json names them.

    .venv/bin/python -m pytest tests/test_protocol.py
"""

from datetime import datetime, timezone
from types import SimpleNamespace

import openai.types as oai
import pytest
from openai.types.chat import ChatCompletion as OpenAIChatCompletion
from openai.types.chat import ChatCompletionChunk as OpenAIChatCompletionChunk
from openai.types.fine_tuning import FineTuningJob as OpenAIFineTuningJob
from openai.types.fine_tuning import FineTuningJobEvent as OpenAIFineTuningJobEvent
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint as OpenAIFineTuningJobCheckpoint
from openai.types.shared import ErrorObject

from tuneforge.serve import protocol
from tuneforge.serve.protocol import (
    APIError,
    ChatCompletion,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionChunkChoice,
    ChatCompletionMessage,
    ChoiceDelta,
    ChoiceLogprobs,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    FileObject,
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobEvent,
    ListPage,
    Model,
    Usage,
)


@pytest.fixture
def registry(tmp_path, monkeypatch):
    from tuneforge.registry import jobs

    monkeypatch.setenv("TUNEFORGE_HOME", str(tmp_path))
    return jobs


def same_values(ours, theirs) -> None:
    """The official type parsed every field we sent (extras included) to the same value."""
    sent = ours.model_dump(mode="json")
    assert theirs.model_dump(mode="json", exclude_unset=True) == sent


def uploaded_file(registry, tmp_path, file_id="file-abc"):
    path = tmp_path / "train.jsonl"
    path.write_text("{}\n")
    registry.create_file("ops", "train.jsonl", "fine-tune", path, 3, "ab" * 32, file_id)
    return registry.get_file(None, file_id)


def test_a_file_parses_as_openais_file_object(registry, tmp_path):
    row = uploaded_file(registry, tmp_path)
    registry.set_file_status(row.id, "error", "1 error(s). line 1, field messages: missing")
    ours = FileObject.from_row(registry.get_file(None, row.id))
    theirs = oai.FileObject.model_validate(ours.model_dump(mode="json"))
    same_values(ours, theirs)
    assert theirs.status == "error" and theirs.status_details.startswith("1 error(s)") and theirs.expires_at is None
    assert "expires_at" in ours.model_dump(mode="json")  # OpenAI's null is sent, not dropped


def test_jobs_new_and_finished_parse_as_openais_fine_tuning_job(registry, tmp_path):
    fresh = registry.create_job(
        "ops",
        model="smollm2-135m-instruct",
        training_file="file-abc",
        seed=42,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
    )
    bare = registry.create_job("ops", model="m", training_file="file-abc", seed=1, method={"type": "supervised"})
    done = registry.create_job(
        "ops",
        model="m",
        training_file="file-abc",
        validation_file="file-v",
        suffix="support",
        seed=7,
        method={"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 4}}},
        extra={"lora_rank": 8, "method": "full"},
        meta={"team": "a"},
    )
    registry.update_job(
        done.id,
        resolved={"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 0.1},
        run_id="run-1",
        trained_tokens=1234,
        result_files=["file-r"],
        estimated_finish=datetime(2030, 1, 1, tzinfo=timezone.utc),
    )
    failed = registry.transition(
        done.id,
        ("validating_files",),
        "failed",
        error={"code": "invalid_file", "message": "line 3: no messages", "param": "training_file"},
    )

    for row in (fresh, bare, failed):
        ours = FineTuningJob.from_row(row)
        theirs = OpenAIFineTuningJob.model_validate(ours.model_dump(mode="json"))
        same_values(ours, theirs)

    new = FineTuningJob.from_row(fresh).model_dump(mode="json")
    assert {
        key: new[key] for key in ("finished_at", "error", "fine_tuned_model", "estimated_finish", "metadata")
    } == dict.fromkeys(("finished_at", "error", "fine_tuned_model", "estimated_finish", "metadata"))
    assert new["hyperparameters"] == {"n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": "auto"}
    assert new["method"] == {"type": "supervised", "supervised": {"hyperparameters": new["hyperparameters"]}}
    assert new["tuneforge"] == {"run_id": None} and new["user_provided_suffix"] is None

    theirs = OpenAIFineTuningJob.model_validate(FineTuningJob.from_row(failed).model_dump(mode="json"))
    assert theirs.status == "failed" and theirs.error.code == "invalid_file" and theirs.error.param == "training_file"
    resolved = theirs.hyperparameters
    assert (resolved.n_epochs, resolved.batch_size, resolved.learning_rate_multiplier) == (3, 4, 0.1)
    assert theirs.method.supervised.hyperparameters.n_epochs == 3 and theirs.finished_at is not None
    assert theirs.model_extra["tuneforge"] == {"run_id": "run-1", "lora_rank": 8, "method": "full"}
    assert theirs.model_extra["user_provided_suffix"] == "support" and theirs.metadata == {"team": "a"}


def test_events_parse_as_openais_job_events(registry):
    job = registry.create_job("ops", model="m", training_file="file-abc", seed=1, method={"type": "supervised"})
    registry.add_event(job.id, "Step 1/2: training loss=1.5000", type="metrics", data={"step": 1, "train_loss": 1.5})
    registry.add_event(job.id, "Job failed: out of memory", level="error")
    rows, has_more = registry.list_events(job.id, None, 10)
    page = ListPage[FineTuningJobEvent](data=[FineTuningJobEvent.from_row(e) for e in rows], has_more=has_more)
    wire = page.model_dump(mode="json")
    assert set(wire) == {"object", "data", "has_more"} and wire["object"] == "list" and wire["has_more"] is False
    for ours in page.data:
        same_values(ours, OpenAIFineTuningJobEvent.model_validate(ours.model_dump(mode="json")))
    assert [(e["level"], e["type"], e["data"]) for e in wire["data"]] == [
        ("error", "message", None),
        ("info", "metrics", {"step": 1, "train_loss": 1.5}),
        ("info", "message", None),
    ]


def test_checkpoints_parse_as_openais_job_checkpoints(registry, tmp_path):
    from tuneforge.registry import store

    job = registry.create_job("ops", model="m", training_file="file-abc", seed=1, method={"type": "supervised"})
    store.create_run("run-1", {"method": "lora", "model": "m"}, tmp_path, None, None)
    store.sync_checkpoints(
        "run-1",
        [
            {
                "step": 4,
                "epoch": 1.0,
                "path": str(tmp_path),
                "metrics": {"valid_loss": 2.25, "valid_mean_token_accuracy": 0.5},
            }
        ],
    )
    checkpoint = store.get_run("run-1").checkpoints[0]
    ours = FineTuningJobCheckpoint.from_row(checkpoint, job.id, "ft:m:ops::run-1", {"train_loss": 2.5})
    theirs = OpenAIFineTuningJobCheckpoint.model_validate(ours.model_dump(mode="json"))
    same_values(ours, theirs)
    assert theirs.fine_tuned_model_checkpoint == "ft:m:ops::run-1:ckpt-step-4" and theirs.step_number == 4
    assert (theirs.metrics.train_loss, theirs.metrics.valid_loss, theirs.metrics.full_valid_mean_token_accuracy) == (
        2.5,
        2.25,
        0.5,
    )
    assert (
        ours.model_dump(mode="json")["metrics"]["train_mean_token_accuracy"] is None
    )  # not measured: null, as OpenAI's


def test_base_and_tuned_models_parse_as_openais_model(registry, tmp_path):
    from tuneforge.registry import store

    store.create_run("run-1", {"method": "lora", "model": "smollm2-135m-instruct"}, tmp_path, None, None)
    store.register_model("ft:smollm2-135m-instruct:ops::run-1", "run-1", "smollm2-135m-instruct", "adapter", tmp_path)
    tuned = Model.from_row(store.find_model("ft:smollm2-135m-instruct:ops::run-1"), owned_by="ops")
    base = Model.base("smollm2-135m-instruct", "bundled")
    for ours in (tuned, base):
        same_values(ours, oai.Model.model_validate(ours.model_dump(mode="json")))
    # A base model has no root or parent: the keys are left out, as before, not sent as null.
    assert base.model_dump(mode="json") == {
        "id": "smollm2-135m-instruct",
        "object": "model",
        "created": 0,
        "owned_by": "tuneforge",
        "tuneforge": {"source": "bundled"},
    }
    assert tuned.model_dump(mode="json")["root"] == "smollm2-135m-instruct"
    assert tuned.model_dump(mode="json")["tuneforge"] == {"run_id": "run-1", "kind": "adapter"}
    assert (
        Model.base("Qwen/Qwen2.5-0.5B", "hub").owned_by == "huggingface"
        and Model.base("/models/x", "local").owned_by == "local"
    )


def token(text: str, logprob: float, alternatives=()):
    """The engine's TokenLogprob, without importing the engine (and torch)."""
    return SimpleNamespace(
        token=text,
        bytes=list(text.encode()),
        logprob=logprob,
        top_logprobs=[token(a, logprob - 1) for a in alternatives],
    )


def test_chat_completions_and_their_chunks_parse_as_openais():
    logprobs = [token("Hi", -0.25, ["Hello"]), token("!", -0.5)]
    answer = ChatCompletion(
        id="chatcmpl-1",
        created=1,
        model="m",
        usage=Usage.of(7, 2),
        choices=[
            ChatCompletionChoice(
                index=0,
                message=ChatCompletionMessage(content="Hi!"),
                logprobs=ChoiceLogprobs.of(logprobs),
                finish_reason="stop",
            ),
            ChatCompletionChoice(index=1, message=ChatCompletionMessage(content="Yo"), finish_reason="length"),
        ],
    )
    theirs = OpenAIChatCompletion.model_validate(answer.model_dump(mode="json"))
    same_values(answer, theirs)
    assert theirs.usage.total_tokens == 9 and theirs.choices[0].logprobs.content[0].top_logprobs[0].token == "Hello"
    wire = answer.model_dump(mode="json")
    assert wire["system_fingerprint"] is None and wire["choices"][1]["logprobs"] is None
    assert wire["choices"][0]["message"] == {"role": "assistant", "content": "Hi!", "refusal": None}
    assert wire["choices"][0]["logprobs"]["refusal"] is None

    def chunk(choices, usage=None):
        return ChatCompletionChunk(id="chatcmpl-1", created=1, model="m", choices=choices, usage=usage)

    stream = [
        chunk([ChatCompletionChunkChoice(index=0, delta=ChoiceDelta(role="assistant", content=""))]),
        chunk(
            [
                ChatCompletionChunkChoice(
                    index=0, delta=ChoiceDelta(content="Hi"), logprobs=ChoiceLogprobs.of(logprobs[:1])
                )
            ]
        ),
        chunk([ChatCompletionChunkChoice(index=0, delta=ChoiceDelta(), finish_reason="stop")]),
        chunk([], Usage.of(7, 2)),
    ]
    for ours in stream:
        same_values(ours, OpenAIChatCompletionChunk.model_validate_json(ours.model_dump_json()))
    deltas = [c.model_dump(mode="json")["choices"][0]["delta"] for c in stream[:3]]
    assert deltas == [{"role": "assistant", "content": ""}, {"content": "Hi"}, {}]  # only what the chunk carries
    assert (
        "usage" not in stream[0].model_dump(mode="json")
        and stream[3].model_dump(mode="json")["usage"]["total_tokens"] == 9
    )
    assert stream[0].model_dump(mode="json")["choices"][0]["logprobs"] is None


def test_text_completions_parse_as_openais():
    logprobs = CompletionLogprobs(
        tokens=["a", "b"],
        token_logprobs=[-0.5, -1.0],
        top_logprobs=[{"a": -0.5}, {"c": -0.75, "b": -1.0}],
        text_offset=[3, 4],
    )
    answer = Completion(
        id="cmpl-1",
        created=1,
        model="m",
        usage=Usage.of(3, 2),
        choices=[CompletionChoice(text="ab", index=0, logprobs=logprobs, finish_reason="length")],
    )
    last = Completion(
        id="cmpl-1", created=1, model="m", choices=[CompletionChoice(text="", index=0, finish_reason="stop")]
    )
    for ours in (answer, last):
        same_values(ours, oai.Completion.model_validate(ours.model_dump(mode="json")))
    assert oai.Completion.model_validate(answer.model_dump(mode="json")).choices[0].logprobs.top_logprobs[1] == {
        "c": -0.75,
        "b": -1.0,
    }
    # A streamed chunk before the last has finish_reason null, as OpenAI's own streams do; the
    # official type requires one, so its stream builds chunks without validating (`construct`).
    streamed = Completion(id="cmpl-1", created=1, model="m", choices=[CompletionChoice(text="a", index=0)])
    chunk = streamed.model_dump(mode="json")
    assert "usage" not in chunk and chunk["choices"][0] == {
        "text": "a",
        "index": 0,
        "logprobs": None,
        "finish_reason": None,
    }
    assert oai.Completion.construct(**chunk).choices[0].text == "a"


def test_errors_keep_openais_envelope():
    error = APIError(404, "No file found with id 'file-x'.", param="file_id", code="not_found")
    assert error.envelope() == {
        "error": {
            "message": "No file found with id 'file-x'.",
            "type": "invalid_request_error",
            "param": "file_id",
            "code": "not_found",
        }
    }
    same_values(error.response().error, ErrorObject.model_validate(error.envelope()["error"]))
    assert APIError(500, "boom", type="server_error").envelope()["error"] == {
        "message": "boom",
        "type": "server_error",
        "param": None,
        "code": None,
    }


def test_openapi_names_the_response_models(tmp_path, monkeypatch):
    from tuneforge.serve.app import ServerOptions, create_app

    monkeypatch.setenv("TUNEFORGE_HOME", str(tmp_path))
    schema = create_app(ServerOptions(auth=False, start_worker=False)).openapi()

    def answer(path: str, method: str, status: str = "200") -> str:
        return schema["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"][
            "$ref"
        ].split("/")[-1]

    assert answer("/v1/fine_tuning/jobs/{job_id}", "get") == "FineTuningJob"
    assert answer("/v1/fine_tuning/jobs/{job_id}", "get", "4XX") == "ErrorResponse"
    assert answer("/v1/fine_tuning/jobs", "post") == "FineTuningJob"
    assert answer("/v1/fine_tuning/jobs", "get") == "ListPage_FineTuningJob_"
    assert answer("/v1/fine_tuning/jobs/{job_id}/checkpoints", "get") == "ListPage_FineTuningJobCheckpoint_"
    assert answer("/v1/files/{file_id}", "get") == "FileObject"
    assert answer("/v1/models/{name}", "get") == "Model"
    assert answer("/v1/chat/completions", "post") == "ChatCompletion"
    assert answer("/v1/completions", "post") == "Completion"
    assert answer("/v1/tuneforge/feedback", "post") == "Feedback"
    job = schema["components"]["schemas"]["FineTuningJob"]
    assert {"finished_at", "error", "hyperparameters", "method", "tuneforge"} <= set(job["properties"])
    assert protocol.ErrorResponse.__name__ in schema["components"]["schemas"]
