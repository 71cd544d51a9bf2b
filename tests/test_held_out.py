"""Validation by default: without a validation file, a run holds out a seeded share of its training file
(stratified by reply for classification-like data), validates and stops early on it, and says so."""

import json

import pytest
from helpers import chat, metric_rows, write_jsonl
from pydantic import ValidationError

from tuneforge.data.tokenize import ChatTokenizer
from tuneforge.registry import store
from tuneforge.runs.training import train_run
from tuneforge.train.config import TrainConfig
from tuneforge.train.inputs import HELD_OUT_CAP, HELD_OUT_FLOOR, hold_out

LABELS = ["billing", "billing", "billing", "bug", "bug", "feature"]  # 3:2:1


def tickets(n: int) -> list[dict]:
    return [chat(f"Ticket {i}: the customer writes about case {i * 7 % 13}", LABELS[i % 6]) for i in range(n)]


@pytest.fixture(scope="module")
def encoded(smol_tokenizer):
    from tuneforge.data.formats import parse_record

    examples = [parse_record(record, 1)[1].example for record in tickets(120)]
    return ChatTokenizer(smol_tokenizer, 0.0).encode(examples)


def reply(example) -> str:
    return "".join(map(str, (t for t, w in zip(example.input_ids, example.loss_weights) if w >= 1.0)))


def test_the_share_is_seeded_stratified_and_bounded(encoded):
    training, validation, held = hold_out(encoded, 0.1, seed=3)
    assert held.examples == len(validation) == 12 and len(training) == 108 and held.stratified
    assert {id(e) for e in training}.isdisjoint(id(e) for e in validation)
    counts = {}
    for example in validation:
        counts[reply(example)] = counts.get(reply(example), 0) + 1
    assert sorted(counts.values()) == [2, 4, 6]  # each label in proportion: 3:2:1 of 12
    again = hold_out(encoded, 0.1, seed=3)[1]
    assert [e.input_ids for e in again] == [e.input_ids for e in validation]  # same seed, same examples
    other = hold_out(encoded, 0.1, seed=4)[1]
    assert [e.input_ids for e in other] != [e.input_ids for e in validation]
    assert hold_out(encoded, 0.01, seed=3)[2].examples == HELD_OUT_FLOOR  # 1 % of 120 is under the floor
    assert hold_out(encoded * 30, 0.5, seed=3)[2].examples == HELD_OUT_CAP
    assert hold_out(encoded, 0.0, seed=3)[1:] == ([], None)  # the off switch
    assert hold_out(encoded[:49], 0.1, seed=3)[1:] == ([], None)  # too few to spare any


def test_free_text_replies_are_not_stratified(encoded, smol_tokenizer):
    from tuneforge.data.formats import parse_record

    examples = [
        parse_record(chat(f"Question {i}", f"A different answer, number {i}"), 1)[1].example for i in range(60)
    ]
    _, validation, held = hold_out(ChatTokenizer(smol_tokenizer, 0.0).encode(examples), 0.1, seed=3)
    assert not held.stratified and len(validation) == HELD_OUT_FLOOR


def test_a_run_without_validation_data_validates_and_stops_early_on_the_held_out_share(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "tickets.jsonl", tickets(60))
    config = TrainConfig(
        model=str(tiny_model_dir),
        data=data,
        n_epochs=30,
        batch_size=8,
        precision="fp32",
        learning_rate_multiplier=5,
        eval_every_steps=2,
        early_stopping_patience=2,
    )
    result = train_run(config)
    rows = metric_rows(result.run_dir)
    assert rows[0]["step"] == "0" and rows[0]["valid_loss"]  # validated before the first step
    assert result.stopped_early and result.metrics["step"] < 30 * 8  # stopped on the held-out loss
    # 60 - 8 held out (10 % is 6, under the floor of 8), + 10 replay examples (20 % of 52) in batches
    # of their own -> 7 + 2 steps
    steps_per_epoch = -(-52 // 8) + -(-10 // 8)
    assert float(rows[1]["epoch"]) == pytest.approx(1 / steps_per_epoch, abs=1e-3)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    held = manifest["data"]["validation"]["held_out"]
    assert held["examples"] == 8 and held["seed"] == 42 and held["stratified"]
    assert (
        "8 examples (13% of the training file, seed 42, stratified by reply) held out"
        in (result.run_dir / "README.md").read_text()
    )
    run = store.get_run(result.run_id)
    assert run.config["validation_split"] == 0.1


def test_validation_split_0_trains_on_every_example(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "tickets.jsonl", tickets(60))
    result = train_run(
        TrainConfig(
            model=str(tiny_model_dir), data=data, n_epochs=1, batch_size=10, validation_split=0, precision="fp32"
        )
    )
    rows = metric_rows(result.run_dir)
    # every example trains: (60 + 12 replay examples) / 10 -> 8 steps, and no validation
    assert len(rows) == 8 and not any(row["valid_loss"] for row in rows)


def test_validation_split_beside_a_validation_file_is_a_contradiction(tmp_path):
    with pytest.raises(ValidationError) as error:
        TrainConfig(data="train.jsonl", validation_data="validation.jsonl", validation_split=0.2)
    assert error.value.errors()[0]["loc"] == ("validation_split",)
