"""Experiment trackers (`report_to`): TensorBoard's writer, W&B offline and MLflow (SQLite store) each
receive a run's metrics, read back here with the trackers' own readers; the run ids link both ways."""

import csv
import json

import pytest
from helpers import chat, decoded, wandb_records, write_jsonl

from tuneforge.registry import store
from tuneforge.runs.training import train_run
from tuneforge.train.config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")
ANIMALS = ["cat", "dog", "owl", "fox", "bee", "elk", "ant", "bat", "cod", "eel", "yak", "emu"]


def test_tensorboard_wandb_and_mlflow_receive_the_runs_metrics(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tmp_path / "wandb-dir").mkdir()
    data = write_jsonl(tmp_path / "train.jsonl", [chat(f"Say hi as the {a}", "hello there friend") for a in ANIMALS])
    validation = write_jsonl(tmp_path / "valid.jsonl", [chat("Say hi as the rat", "hello there friend")])
    run = train_run(
        TrainConfig(
            model=str(tiny_model_dir),
            data=data,
            validation_data=validation,
            n_epochs=2,
            batch_size=4,
            precision="fp32",
            forgetting_guard=False,
            report_to="tensorboard, wandb,mlflow",
            tracking_project="animals",
            tracking_tags="nightly",
        ),
        run_id="run-tracked",
    )
    with (run.run_dir / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    train = {int(r["step"]): float(r["train_loss"]) for r in rows if r["train_loss"]}
    valid = {int(r["step"]): float(r["valid_loss"]) for r in rows if r["valid_loss"]}
    assert len(train) == 6 and 0 in valid  # 12 examples / 4 a step x 2 epochs; the base's loss at step 0
    links = json.loads((run.run_dir / "tracking.json").read_text())
    assert store.get_run("run-tracked").metrics["tracking"] == links  # Tuneforge -> tracker runs

    # TensorBoard: the event file, through TensorBoard's own reader.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(links["tensorboard"]["log_dir"])
    events.Reload()
    assert {e.step: e.value for e in events.Scalars("train_loss")} == pytest.approx(train)
    assert {e.step: e.value for e in events.Scalars("valid_loss")} == pytest.approx(valid)

    # MLflow: its SQLite store, through MLflow's client; the tracker run -> the Tuneforge run.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow_run = client.get_run(links["mlflow"]["run_id"])
    assert mlflow_run.info.status == "FINISHED" and mlflow_run.data.tags["tuneforge.run_id"] == "run-tracked"
    assert mlflow_run.data.params["n_epochs"] == "2" and "tag.nightly" in mlflow_run.data.tags
    history = client.get_metric_history(mlflow_run.info.run_id, "train_loss")
    assert {m.step: m.value for m in history} == pytest.approx(train)
    assert client.get_experiment(mlflow_run.info.experiment_id).name == "animals"

    # W&B offline: the run's transaction log, as wandb wrote it, its protobuf records decoded.
    assert links["wandb"]["run_id"] == "run-tracked" and links["wandb"]["project"] == "animals"
    [log] = (tmp_path / "wandb-dir" / "wandb").glob("offline-run-*-run-tracked/run-run-tracked.wandb")
    history, config = {}, {}
    for record in wandb_records(log):
        if record.HasField("history"):
            history.setdefault(record.history.step.num, {}).update(decoded(record.history.item))
        elif record.HasField("run"):  # the run's config comes with the run record
            config.update(decoded(record.run.config.update))
        elif record.HasField("config"):
            config.update(decoded(record.config.update))
    assert {step: row["train_loss"] for step, row in history.items() if "train_loss" in row} == pytest.approx(train)
    assert {step: row["valid_loss"] for step, row in history.items() if "valid_loss" in row} == pytest.approx(valid)
    assert config["tuneforge_run_id"] == "run-tracked" and config["n_epochs"] == 2


def test_an_unknown_tracker_is_refused_naming_the_field():
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as error:
        TrainConfig(data="x.jsonl", report_to="tensorboard,comet")
    assert error.value.errors()[0]["loc"] == ("report_to",) and "comet" in str(error.value)
    assert TrainConfig(data="x.jsonl", report_to="none").report_to == ""
