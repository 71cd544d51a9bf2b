"""`tuneforge eval`: a tuned tiny model against its base on classification-like data."""

import json

import pytest
from helpers import chat, write_jsonl

from tuneforge.runs.evaluation import run_eval
from tuneforge.runs.training import train_run
from tuneforge.train.config import TrainConfig

LABELS = ["billing", "bug"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, tiny_model_dir):
    directory = tmp_path_factory.mktemp("eval")
    records = [chat(f"Ticket {i}: my {'invoice' if i % 2 else 'screen'} problem", LABELS[i % 2]) for i in range(40)]
    data = write_jsonl(directory / "tickets.jsonl", records)
    run = train_run(
        TrainConfig(
            model=str(tiny_model_dir),
            data=data,
            n_epochs=3,
            batch_size=8,
            precision="fp32",
            learning_rate_multiplier=5,
            lora_target_modules="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,lm_head",
        )
    )
    return directory, data, run


def test_eval_compares_tuned_and_base_with_classification_metrics(classifier, tiny_model_dir):
    directory, data, run = classifier
    results = run_eval(run.run_id, data, str(tiny_model_dir), None, directory / "out", max_new_tokens=4)
    assert results["task"] == "classification" and results["metrics"] == ["accuracy", "exact_match"]
    tuned, base = results["scores"]["model"], results["scores"]["against"]
    assert (results["model"], results["against"]) == (run.run_id, str(tiny_model_dir))
    assert tuned["classification"]["accuracy"] == pytest.approx(tuned["means"]["accuracy"])
    assert set(tuned["classification"]["confusion"]) == set(LABELS)
    comparison = results["comparison"]["accuracy"]
    assert comparison["delta"] == pytest.approx(tuned["means"]["accuracy"] - base["means"]["accuracy"])
    assert comparison["wins"] + comparison["ties"] + comparison["losses"] == 40
    assert tuned["loss"] < base["loss"]  # the references are what the run trained on
    rows = [json.loads(line) for line in (directory / "out" / "examples.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and set(rows[0]) == {"line", "prompt", "messages", "reference", "model", "against"}
    assert rows[0]["messages"][-1] == {"role": "user", "content": rows[0]["prompt"]}
    assert "| accuracy |" in (directory / "out" / "report.md").read_text()


def test_eval_is_recorded_and_linked_from_the_model_card(classifier, tiny_model_dir):
    from tuneforge.registry import store
    from tuneforge.train.card import split_card

    directory, data, run = classifier
    for attempt in ("first", "second"):
        run_eval(run.run_id, data, str(tiny_model_dir), ["exact_match"], directory / attempt, max_new_tokens=2)
    [latest, _] = store.list_evaluations(run.run_id)[:2]
    assert latest.report_dir.endswith("second") and latest.task == "classification"
    assert "exact_match" in latest.metrics["comparison"]
    card = (run.run_dir / "README.md").read_text()
    assert card.count("## Latest evaluation") == 1 and "`second/report.md`" in card
    assert str(directory) not in card  # no local absolute path: the card travels to the Hub
    meta, _ = split_card(card)
    [result] = meta["model-index"][0]["results"]
    assert meta["model-index"][0]["name"] == run.run_id and result["dataset"]["revision"] == latest.data_sha256
    assert {m["type"] for m in result["metrics"]} >= {"exact_match", "perplexity"}
    assert split_card((run.run_dir / "adapter" / "README.md").read_text())[0]["model-index"] == meta["model-index"]


def test_eval_rejects_unknown_metrics(classifier):
    from tuneforge.errors import UsageError

    directory, data, run = classifier
    with pytest.raises(UsageError, match="unknown metric"):
        run_eval(run.run_id, data, None, ["perplexity_of_doom"], directory / "bad", max_new_tokens=2)


def test_a_small_test_set_is_enough_for_evaluation(classifier, tiny_model_dir, tmp_path):
    _, _, run = classifier
    small = write_jsonl(
        tmp_path / "five.jsonl", [chat(f"Ticket {i}: my invoice problem", "billing") for i in range(5)]
    )
    results = run_eval(run.run_id, small, None, ["exact_match"], tmp_path / "out", max_new_tokens=2)
    assert results["examples"] == 5 and "comparison" not in results
