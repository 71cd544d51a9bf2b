"""Training on from a tuned model (`--model ft:...` or a run id): a LoRA parent's adapter is where the
child starts, a full parent's weights are the model it loads; the child records its parent; what
cannot be continued as asked is refused naming the option."""

import csv
import json

import pytest
from helpers import chat, write_jsonl

from tuneforge.errors import InvalidOption, UsageError
from tuneforge.runs.training import train_run
from tuneforge.train.config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")
ANIMALS = ["cat", "dog", "owl", "fox", "bee", "elk", "ant", "bat", "cod", "eel", "yak", "emu"]
WITH_HEAD = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,lm_head"


def config(model, data, validation, **overrides) -> TrainConfig:
    values = dict(
        model=str(model),
        data=data,
        validation_data=validation,
        n_epochs=3,
        batch_size=4,
        seed=3,
        precision="fp32",
        lora_dropout=0.0,
        learning_rate_multiplier=5,
        lora_target_modules=WITH_HEAD,
        forgetting_guard=False,
        early_stopping_patience=0,
    )
    return TrainConfig(**{**values, **overrides})


def valid_losses(run_dir) -> list[float]:
    with (run_dir / "metrics.csv").open() as handle:
        return [float(r["valid_loss"]) for r in csv.DictReader(handle) if r["valid_loss"]]


@pytest.fixture()
def files(tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", [chat(f"Say hi as the {a}", "hello there friend") for a in ANIMALS])
    validation = write_jsonl(
        tmp_path / "valid.jsonl", [chat(f"Say hi as the {a}", "hello there friend") for a in "xy"]
    )
    return data, validation


@pytest.mark.parametrize("method", ["lora", "full"])
def test_a_child_starts_where_its_parent_ended_and_records_it(files, tiny_model_dir, method):
    data, validation = files
    options = {"method": method, "learning_rate_multiplier": 20} if method == "full" else {}
    if method == "full":
        options["lora_target_modules"] = TrainConfig.model_fields["lora_target_modules"].default
    parent = train_run(config(tiny_model_dir, data, validation, **options), run_id=f"run-parent-{method}")
    child = train_run(
        config(parent.model_name, data, validation, n_epochs=1, suffix="child"), run_id=f"run-child-{method}"
    )
    # Step 0 of the child scores the parent's result: the same validation loss the parent ended on.
    assert valid_losses(child.run_dir)[0] == pytest.approx(valid_losses(parent.run_dir)[-1], abs=1e-4)
    assert valid_losses(child.run_dir)[0] < valid_losses(parent.run_dir)[0] - 0.5  # not the base's
    recorded = json.loads((child.run_dir / "config.json").read_text())
    assert recorded["continued_from"] == parent.run_id
    if method == "lora":  # the parent's adapter trained further, on the parent's base
        assert recorded["model"] == str(tiny_model_dir) and recorded["lora_target_modules"] == WITH_HEAD
    else:  # the parent's weights are the model; the child's name still shows the original base
        assert recorded["model"] == str(parent.run_dir / "model")
    assert child.model_name.startswith(f"ft:{tiny_model_dir.name}:tuneforge:child:")
    by_run_id = train_run(config(parent.run_id, data, validation, n_epochs=1, max_steps=1))
    assert json.loads((by_run_id.run_dir / "config.json").read_text())["continued_from"] == parent.run_id


def test_what_cannot_be_continued_is_refused_naming_the_option(files, tiny_model_dir):
    data, validation = files
    parent = train_run(config(tiny_model_dir, data, validation, n_epochs=1, max_steps=1), run_id="run-parent-refusals")
    with pytest.raises(InvalidOption) as rank:
        train_run(config(parent.model_name, data, validation, lora_rank=4))
    assert rank.value.param == "lora_rank" and "merge" in rank.value.fix
    with pytest.raises(InvalidOption) as full:
        train_run(
            config(
                parent.model_name,
                data,
                validation,
                method="full",
                lora_target_modules=TrainConfig.model_fields["lora_target_modules"].default,
            )
        )
    assert full.value.param == "method"
    with pytest.raises(UsageError, match="no tuned model or run named 'run-nope'"):
        train_run(config("run-nope", data, validation))
