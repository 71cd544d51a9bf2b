"""DPO (objective dpo): its loss and rewards are TRL's DPOTrainer's on the same batch; a tiny model
learns a tiny preference; the run is recorded, validated and resumed like an SFT run; bad data and
contradictory options are refused naming what is wrong."""

import copy
import csv
import json

import pytest
import torch
from helpers import chat, write_jsonl

from tuneforge.data.tokenize import TokenizedExample
from tuneforge.runs.training import train_run
from tuneforge.train.config import TrainConfig
from tuneforge.train.dpo import PreferenceLoss, TokenizedPair, pair_batch, reference_log_probs
from tuneforge.train.inputs import TrainingDataError

pytestmark = pytest.mark.usefixtures("one_thread")
ANIMALS = ["cat", "dog", "owl", "fox", "bee", "elk", "ant", "bat", "cod", "eel", "yak", "emu"]
WITH_HEAD = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,lm_head"  # see test_train.py


def pair(prompt: str, chosen: str, rejected: str) -> dict:
    """OpenAI's DPO format."""
    return {
        "input": {"messages": [{"role": "user", "content": prompt}]},
        "preferred_output": [{"role": "assistant", "content": chosen}],
        "non_preferred_output": [{"role": "assistant", "content": rejected}],
    }


def polite_pairs(animals=ANIMALS) -> list[dict]:
    return [pair(f"Greet the {a}", "hello there friend", "go away now") for a in animals]


def config(model_dir, data, **overrides) -> TrainConfig:
    values = dict(
        model=str(model_dir),
        data=data,
        objective="dpo",
        n_epochs=2,
        batch_size=4,
        seed=3,
        precision="fp32",
        lora_dropout=0.0,
        forgetting_guard=False,
    )
    return TrainConfig(**{**values, **overrides})


def test_loss_and_rewards_match_trls_dpo_trainer_on_a_batch(tmp_path, tiny_model_dir):
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    policy = copy.deepcopy(reference)
    torch.manual_seed(1)
    with torch.no_grad():  # a policy that has moved away from its reference: non-zero rewards
        for parameter in policy.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    rows = [
        {"prompt": [{"role": "user", "content": f"Greet the {a}"}]}
        | {"chosen": [{"role": "assistant", "content": f"hello {a}, nice day"}]}
        | {"rejected": [{"role": "assistant", "content": "go away"}]}
        for a in ANIMALS[:4]
    ]
    trainer = DPOTrainer(
        model=policy,
        ref_model=reference,
        args=DPOConfig(
            output_dir=str(tmp_path / "trl"), beta=0.1, per_device_train_batch_size=4, report_to=[], use_cpu=True
        ),
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    features = [trainer.train_dataset[i] for i in range(len(rows))]
    inputs = trainer.data_collator(features)
    trainer.model.eval()  # as our loss module is, below: no dropout either side
    with torch.no_grad():
        trl_loss = float(trainer.compute_loss(trainer.model, inputs))
    trl = {name: trainer._metrics["eval"][name][-1] for name in ("rewards/chosen", "rewards/rejected")}

    # The same token ids, with TRL's completion tokens as the scored ones.
    def side(prompt_ids, completion_ids):
        weights = torch.tensor([0.0] * len(prompt_ids) + [1.0] * len(completion_ids)).numpy()
        return TokenizedExample(prompt_ids + completion_ids, weights, len(prompt_ids) + len(completion_ids))

    pairs = [
        TokenizedPair(side(f["prompt_ids"], f["chosen_ids"]), side(f["prompt_ids"], f["rejected_ids"]))
        for f in features
    ]
    resolved = TrainConfig(data="x.jsonl", objective="dpo", precision="fp32").resolve(4, 512)
    for padding_free in (True, False):
        resolved = resolved.model_copy(update={"padding_free": padding_free})
        references = reference_log_probs(reference, pairs, resolved, tokenizer.pad_token_id, "cpu")
        with torch.no_grad():
            loss, chosen, rejected = PreferenceLoss(policy, resolved)(
                pair_batch(pairs, tokenizer.pad_token_id, padding_free), references
            )
        assert float(loss) / len(pairs) == pytest.approx(trl_loss, abs=1e-4)
        assert float(chosen.mean()) == pytest.approx(trl["rewards/chosen"], abs=1e-4)
        assert float(rejected.mean()) == pytest.approx(trl["rewards/rejected"], abs=1e-4)
    assert abs(trl["rewards/chosen"]) > 1e-3  # the batch tests something: the policy did move


def metric_rows(run_dir):
    with (run_dir / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_dpo_learns_a_tiny_preference_and_records_the_run(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "train.jsonl", polite_pairs())
    validation = write_jsonl(
        tmp_path / "validation.jsonl", [pair(f"Greet the {a}", "hello there friend", "go away now") for a in "xyz"]
    )
    run = train_run(
        config(
            tiny_model_dir,
            data,
            validation_data=validation,
            n_epochs=8,
            learning_rate_multiplier=5,
            lora_target_modules=WITH_HEAD,
            early_stopping_patience=0,
        ),
        run_id="run-dpo",
    )
    rows = metric_rows(run.run_dir)
    validations = [r for r in rows if r["valid_loss"]]
    assert validations[0]["step"] == "0" and float(validations[0]["valid_loss"]) == pytest.approx(0.6931, abs=1e-3)
    assert float(validations[-1]["valid_reward_accuracy"]) == 1.0  # unseen prompts: the preference generalised
    assert float(validations[-1]["valid_loss"]) < 0.3 and float(validations[-1]["valid_rewards_margin"]) > 0
    trained = [r for r in rows if r["train_loss"]]
    assert float(trained[-1]["train_accuracy"]) == 1.0 and float(trained[-1]["rewards_margin"]) > 0
    recorded = json.loads((run.run_dir / "config.json").read_text())
    assert (recorded["objective"], recorded["dpo_beta"]) == ("dpo", 0.1)
    assert (run.run_dir / "adapter" / "adapter_model.safetensors").exists()
    assert run.metrics["valid_reward_accuracy"] == 1.0
    # `tuneforge eval` on held-out pairs: the preference accuracy beside the usual A/B against the base.
    from tuneforge.runs.evaluation import run_eval

    results = run_eval(
        run.run_id, validation, str(tiny_model_dir), None, tmp_path / "eval", max_new_tokens=4, probes=False
    )
    assert results["task"] == "preference" and results["metrics"] == ["rouge_l", "bleu", "preference_accuracy"]
    assert results["scores"]["model"]["means"]["preference_accuracy"] == 1.0
    assert "preference_accuracy" in results["comparison"]


def test_dpo_resumes_to_the_uninterrupted_result(tmp_path, tiny_model_dir):
    from tuneforge.train.reporter import Reporter, TrainingInterrupted

    class StopAt(Reporter):
        def __init__(self, step):
            self.at = step
            self.last = 0

        def step(self, row):
            self.last = row["step"]

        def should_stop(self):
            return self.last >= self.at

    data = write_jsonl(tmp_path / "train.jsonl", polite_pairs())
    options = dict(n_epochs=2, learning_rate_multiplier=2, validation_split=0)
    whole = train_run(config(tiny_model_dir, data, **options), run_id="run-dpo-whole")
    with pytest.raises(TrainingInterrupted):
        train_run(config(tiny_model_dir, data, **options), StopAt(3), run_id="run-dpo-cut")
    resumed = train_run(config(tiny_model_dir, data, **options), run_id="run-dpo-cut", resume=True)
    losses = [[float(r["train_loss"]) for r in metric_rows(run.run_dir)] for run in (whole, resumed)]
    assert losses[1] == pytest.approx(losses[0], abs=1e-5) and len(losses[0]) == 6


def test_dpo_refuses_chat_examples_and_sft_refuses_pairs_naming_the_line(tmp_path, tiny_model_dir):
    chats = write_jsonl(tmp_path / "chats.jsonl", [chat(f"Greet the {a}", "hello") for a in ANIMALS])
    with pytest.raises(TrainingDataError) as caught:
        train_run(config(tiny_model_dir, chats))
    assert (caught.value.code, caught.value.line) == ("wrong_method", 1)
    assert "DPO learns from preference pairs" in str(caught.value)
    mixed = write_jsonl(tmp_path / "mixed.jsonl", polite_pairs()[:11] + [chat("hi", "hello")])
    with pytest.raises(TrainingDataError) as caught:  # the data check's own finding, naming the line
        train_run(config(tiny_model_dir, mixed))
    assert (caught.value.code, caught.value.line) == ("mixed_formats", 12)
    long = write_jsonl(tmp_path / "long.jsonl", polite_pairs()[:11] + [pair("word " * 100, "yes", "no")])
    with pytest.raises(TrainingDataError) as caught:
        train_run(config(tiny_model_dir, long, max_seq_length=64))
    assert (caught.value.code, caught.value.line, caught.value.field) == ("too_long", 12, "preferred_output")
    pairs = write_jsonl(tmp_path / "pairs.jsonl", polite_pairs())
    with pytest.raises(TrainingDataError, match="objective dpo"):
        train_run(config(tiny_model_dir, pairs, objective="sft"))


@pytest.mark.parametrize(
    "options, field",
    [
        ({"objective": "sft", "dpo_beta": 0.5}, "dpo_beta"),
        ({"objective": "dpo", "prompt_loss_weight": 0.1}, "prompt_loss_weight"),
        ({"objective": "dpo", "replay_share": 0.2}, "replay_share"),
        ({"objective": "dpo", "nproc": 2}, "nproc"),
        ({"objective": "dpo", "dpo_beta": 0}, "dpo_beta"),
    ],
)
def test_contradictory_dpo_options_are_refused_naming_the_field(options, field):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as error:
        TrainConfig(data="x.jsonl", **options)
    assert error.value.errors()[0]["loc"] == (field,)


def test_dpo_autos_resolve():
    resolved = TrainConfig(data="x.jsonl", objective="dpo").resolve(200, 512)
    assert (resolved.dpo_beta, resolved.replay_share) == (0.1, 0.0)
    assert resolved.learning_rate_multiplier == pytest.approx(0.01)  # a tenth of SFT's at batch 4
    assert TrainConfig(data="x.jsonl").resolve(200, 512).dpo_beta == "auto"  # not a DPO run: nothing resolved
