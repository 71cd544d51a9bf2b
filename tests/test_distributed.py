"""One recipe on several processes (torchrun, gloo on CPU): DDP for LoRA, FSDP2 for full fine-tuning.

Each test compares a 2-process run with the 1-process run of the same config: the global batch is the
same, split between the ranks, so the losses must agree to float rounding (measured: ~2e-6). An odd
batch size (5) gives the ranks shares of 3 and 2 examples, and a step with gradient accumulation gives
one rank a filler micro-batch: the cases where a wrong split or a wrong loss scale shows.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import chat, metric_rows, write_jsonl
from pydantic import ValidationError
from safetensors.torch import load_file

from tuneforge.registry import store
from tuneforge.runs.continuation import resume_config
from tuneforge.runs.training import train_run
from tuneforge.settings import runs_dir
from tuneforge.train.config import TrainConfig
from tuneforge.train.reporter import TrainingInterrupted

ANIMALS = ["cat", "dog", "owl", "fox", "bee", "elk", "ant", "bat", "cod", "eel", "yak", "emu"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("distributed-data")
    train = write_jsonl(
        folder / "train.jsonl",
        [
            chat(f"Say hi as the {a}, number {i}", f"hello there {a} friend " * (1 + i % 3))
            for i, a in enumerate(ANIMALS * 2)
        ],
    )
    validation = write_jsonl(
        folder / "validation.jsonl", [chat(f"Greet as the {a}", f"hello there {a}") for a in ANIMALS[:5]]
    )
    return train, validation


def config(model_dir, data, **overrides) -> TrainConfig:
    train, validation = data
    values = dict(
        model=str(model_dir),
        data=train,
        validation_data=validation,
        n_epochs=2,
        batch_size=5,
        precision="fp32",
        learning_rate_multiplier=5,
        # A random model's loss creeps down from ln V by less than early stopping's threshold: these
        # tests compare whole curves, so they run every step (the two-machine test stops early).
        early_stopping_patience=0,
    )
    return TrainConfig(**{**values, **overrides})


def column(rows: list[dict], name: str) -> list[float]:
    return [float(row[name]) for row in rows if row[name]]


def assert_same_curves(many: Path, one: Path) -> None:
    a, b = metric_rows(many), metric_rows(one)
    assert [row["step"] for row in a] == [row["step"] for row in b]
    for name in ("train_loss", "valid_loss", "trained_tokens"):
        assert column(a, name) == pytest.approx(column(b, name), abs=1e-4), name
    # Accuracy counts argmax hits: float rounding can flip a near-tie, one token in a step's ~30-60.
    for name in ("train_accuracy", "valid_mean_token_accuracy"):
        assert column(a, name) == pytest.approx(column(b, name), abs=0.04), name
    assert column(a, "train_loss")[-1] < column(a, "train_loss")[0] - 0.05  # it trained: the curve moved


def test_cli_lora_on_two_processes_matches_one_process(tiny_model_dir, data):
    """`tuneforge train --nproc 2` through the real CLI and torchrun; gradient accumulation included."""
    train, validation = data
    common = [
        "train", "--model", str(tiny_model_dir), "--data", str(train), "--validation-data", str(validation),
        "--n-epochs", "2", "--batch-size", "5", "--gradient-accumulation-steps", "2", "--precision", "fp32",
        "--learning-rate-multiplier", "5",
    ]  # fmt: skip
    environment = {**os.environ, "COLUMNS": "200"}
    for nproc in ("2", "1"):
        finished = subprocess.run(
            [sys.executable, "-m", "tuneforge", *common, "--nproc", nproc],
            capture_output=True,
            text=True,
            env=environment,
            timeout=300,
        )
        assert finished.returncode == 0, finished.stderr[-3000:] + finished.stdout[-2000:]
    two, one = sorted(
        (r for r in store.list_runs() if r.config.get("gradient_accumulation_steps") == 2), key=lambda r: r.created_at
    )[-2:]
    assert two.config["nproc"] == 2 and one.config["nproc"] == 1
    assert two.metrics["processes"] == 2 and one.metrics["processes"] == 1
    assert_same_curves(Path(two.run_dir), Path(one.run_dir))
    adapters = [load_file(Path(run.run_dir, "adapter", "adapter_model.safetensors")) for run in (two, one)]
    for name, weight in adapters[1].items():
        torch.testing.assert_close(adapters[0][name], weight, atol=1e-5, rtol=1e-4)


def test_two_machines_meet_at_the_first_ones_address(tiny_model_dir, data):
    """`--nnodes 2 --node-rank K --master-addr A --master-port P` on each machine (here both on
    loopback): torchrun's static rendezvous; the first machine records the run, the second says so."""
    import socket

    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    train, validation = data
    common = [sys.executable, "-m", "tuneforge", "train", "--model", str(tiny_model_dir), "--data", str(train),
              "--validation-data", str(validation), "--n-epochs", "2", "--batch-size", "5", "--precision", "fp32",
              "--learning-rate-multiplier", "5", "--suffix", "two-machines", "--nnodes", "2",
              "--master-addr", "127.0.0.1", "--master-port", str(port)]  # fmt: skip
    environment = {**os.environ, "COLUMNS": "200"}
    second = subprocess.Popen(
        [*common, "--node-rank", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment
    )
    first = subprocess.run([*common, "--node-rank", "0"], capture_output=True, text=True, env=environment, timeout=300)
    out, err = second.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, first.stderr[-2000:] + err[-2000:]
    assert "node 1" in out and "finished" in out
    [run] = [r for r in store.list_runs() if r.config.get("suffix") == "two-machines"]
    assert run.metrics["processes"] == 2 and run.status == "succeeded"
    alone = train_run(config(tiny_model_dir, data, early_stopping_patience="auto"))  # the CLI's default
    assert_same_curves(Path(run.run_dir), alone.run_dir)


def test_fsdp2_full_fine_tuning_on_two_processes_matches_one_process(tiny_model_dir, data):
    """Full fine-tuning shards the model with FSDP2 (fully_shard); its checkpoints and final weights
    are gathered into a plain model directory that loads like a one-process run's."""
    two = train_run(config(tiny_model_dir, data, method="full", nproc=2, learning_rate_multiplier=50))
    one = train_run(config(tiny_model_dir, data, method="full", learning_rate_multiplier=50))
    assert two.metrics["processes"] == 2
    assert_same_curves(two.run_dir, one.run_dir)
    weights = [load_file(run.run_dir / "model" / "model.safetensors") for run in (two, one)]
    assert weights[0].keys() == weights[1].keys()
    for name, weight in weights[1].items():
        torch.testing.assert_close(weights[0][name], weight, atol=1e-5, rtol=1e-4)
    checkpoint = json.loads((two.run_dir / "checkpoints" / "step-10" / "trainer_state.json").read_text())
    assert checkpoint["step"] == 10


def test_a_two_process_run_resumes_on_one_process(tiny_model_dir, data):
    """Stopped the way the worker stops a job (SIGTERM to torchrun, which passes it on), a 2-process
    run saves a checkpoint; resumed with one process, it ends where an uninterrupted run ends. Full
    fine-tuning (FSDP2's sharded optimiser state gathered by name); LoRA's DDP checkpoints are the
    one-process format already (test_cli_lora_on_two_processes_matches_one_process)."""
    method = "full"
    settings = dict(method=method, n_epochs=6, learning_rate_multiplier=50)
    run_id = f"run-split-{method}"
    marker = runs_dir() / run_id / "checkpoints" / "step-5" / "COMPLETE"
    with pytest.raises(TrainingInterrupted):
        train_run(config(tiny_model_dir, data, nproc=2, **settings), run_id=run_id, should_stop=marker.exists)
    stopped = store.get_run(run_id)
    assert stopped.status == "interrupted"
    stopped_at = len(metric_rows(Path(stopped.run_dir)))
    assert stopped_at < 31  # it stopped before the end (30 steps and the step-0 validation)
    carried_on = resume_config(run_id).model_copy(update={"nproc": 1})  # as `--resume RUN --nproc 1` does
    resumed = train_run(carried_on, run_id=run_id, resume=True)
    whole = train_run(config(tiny_model_dir, data, **settings))
    assert len(metric_rows(resumed.run_dir)) == 31
    assert_same_curves(resumed.run_dir, whole.run_dir)


def test_a_job_with_nproc_2_runs_on_two_processes_and_cancels(tmp_path_factory, tiny_model_dir):
    """The jobs API takes `nproc` as an extra; the worker launches the job through torchrun, rank 0
    writes its events, and a cancel reaches the processes (rank 0 sees it, every rank stops). That
    two processes train as one does is the CLI test's (test_cli_lora_on_two_processes_matches_one_process)."""
    import time

    import openai
    from server_process import TINY_LORA, ServerProcess, tickets, wait_for

    server = ServerProcess(tmp_path_factory.mktemp("nproc-home"), "--allow-model-dir", str(tiny_model_dir)).start()
    try:
        client = openai.OpenAI(base_url=server.base_url, api_key=server.new_key("split"), max_retries=0, timeout=120)
        data = write_jsonl(tmp_path_factory.mktemp("nproc-data") / "tickets.jsonl", tickets(20))
        uploaded = client.files.create(file=data.open("rb"), purpose="fine-tune")
        client.files.wait_for_processing(uploaded.id, poll_interval=0.2, max_wait_seconds=60)
        long = client.fine_tuning.jobs.create(
            model=str(tiny_model_dir),
            training_file=uploaded.id,
            hyperparameters={"n_epochs": 50, "batch_size": 2},
            extra_body={**TINY_LORA, "nproc": 2},
        )
        wait_for(client, long.id, ("running",), timeout=120)

        def steps() -> list[int]:
            events = client.fine_tuning.jobs.list_events(long.id, limit=1000)
            return sorted(e.data["step"] for e in events if e.type == "metrics" and "train_loss" in e.data)

        while len(reported := steps()) < 8:
            time.sleep(0.2)
        # rank 0 reports each step, once (one listing: a second one, while the job runs, may hold one more)
        assert reported == list(range(1, len(reported) + 1))
        (run_id,) = server.registry_row("select run_id from jobs where id = :id", id=long.id)
        run = json.loads(server.cli("runs", "show", run_id))
        assert run["status"] == "running" and run["config"]["nproc"] == 2
        assert client.fine_tuning.jobs.cancel(long.id).status == "cancelled"
        asked = time.monotonic()
        while "Job cancelled" not in [e.message for e in client.fine_tuning.jobs.list_events(long.id, limit=5)]:
            assert time.monotonic() - asked < 60, "the job's processes did not stop within 60 s"
            time.sleep(0.2)
    finally:
        server.stop()


def test_a_gpu_run_needs_a_gpu_per_process_before_anything_starts(monkeypatch, tiny_model_dir, data):
    """Checked before torchrun starts (here: a machine that would have one GPU)."""
    from tuneforge.errors import UsageError
    from tuneforge.runs import training

    monkeypatch.setattr(training, "resolve_device", lambda requested: "cuda")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(training, "launch", lambda *args, **kwargs: pytest.fail("torchrun was started"))
    with pytest.raises(UsageError, match="nproc 2 needs 2 GPUs on this machine; PyTorch sees 1"):
        train_run(config(tiny_model_dir, data, nproc=2))
    with pytest.raises(ValidationError) as error:
        config(tiny_model_dir, data, nproc=2, device="cuda:1")
    assert error.value.errors()[0]["loc"] == ("device",) and "CUDA_VISIBLE_DEVICES" in str(error.value)
