"""The forgetting guard and the automatic early stopping, on a tiny random model: general prompts are
scored at every validation (metrics.csv, the reporter's rows, the card), replay examples are mixed
in by the default share, the replay answers are chosen as documented, and a run whose validation
loss has plateaued stops by default."""

import json
import math
from types import SimpleNamespace

import pytest
from helpers import chat, metric_rows, write_jsonl

from tuneforge.runs.general import DECLINE, replay_answer
from tuneforge.runs.training import train_run
from tuneforge.train.config import AUTO_PATIENCE, TrainConfig
from tuneforge.train.reporter import Reporter


class Rows(Reporter):
    def __init__(self):
        self.evaluations = []

    def evaluation(self, row):
        self.evaluations.append(dict(row))


def questions(n: int) -> list[dict]:
    return [chat(f"Question {i}: which colour is item {i}?", ["red", "blue", "green"][i % 3]) for i in range(n)]


def test_general_loss_is_scored_at_every_validation_and_replay_is_mixed_in(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "questions.jsonl", questions(80))
    reporter = Rows()
    result = train_run(
        TrainConfig(
            model=str(tiny_model_dir),
            data=data,
            n_epochs=2,
            batch_size=8,
            precision="fp32",
            learning_rate_multiplier=5,
            early_stopping_patience=0,
        ),
        reporter,
    )
    validated = [row for row in metric_rows(result.run_dir) if row["valid_loss"]]
    assert len(validated) >= 3  # before the first step, mid-epoch (auto) and at each epoch's end
    assert all(float(row["general_loss"]) > 0 for row in validated)
    assert [r["step"] for r in reporter.evaluations] == [int(row["step"]) for row in validated]
    assert all("general_loss" in r and "general_perplexity" in r for r in reporter.evaluations)
    # 80 - 8 held out = 72 task examples, + round(20 % of 72) = 14 replay examples (a random model
    # never completes an answer, so its replay set is the first block's 16 refusals: DECLINE for each)
    assert result.metrics["replay_examples"] == 14
    steps_per_epoch = -(-(72 + 14) // 8)
    assert result.metrics["step"] == 2 * steps_per_epoch
    base = float(validated[0]["general_loss"])
    assert result.metrics["base_general_loss"] == pytest.approx(base, abs=1e-5)
    change = result.metrics["general_perplexity_change"]
    assert change == pytest.approx(math.exp(result.metrics["general_loss"] - base) - 1, abs=1e-4)
    card = (result.run_dir / "README.md").read_text()
    assert "General ability (the forgetting guard)" in card and "14 replay examples" in card
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["data"]["replay"]["examples"] == 14


def test_the_guard_switched_off_scores_and_replays_nothing(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "questions.jsonl", questions(60))
    result = train_run(
        TrainConfig(
            model=str(tiny_model_dir),
            data=data,
            n_epochs=1,
            batch_size=8,
            precision="fp32",
            forgetting_guard=False,
        )
    )
    rows = metric_rows(result.run_dir)
    assert any(row["valid_loss"] for row in rows) and not any(row["general_loss"] for row in rows)
    assert result.metrics["replay_examples"] == 0 and "general_loss" not in result.metrics
    assert result.metrics["step"] == -(-52 // 8)  # 60 - 8 held out, nothing added


def test_replay_samples_only_the_blocks_a_run_needs_once(tmp_path, monkeypatch, tiny_model_dir):
    """Each block of prompts is answered once, by sampling seeded by the batch's place in the whole set
    (the same answers whichever blocks came first), and a run asking for few examples answers one."""
    from tuneforge.runs import general as runs_general
    from tuneforge.runs import models

    asked = []

    class Sampler:
        def generate(self, conversations, max_new_tokens, temperature, seed):
            asked.append((len(conversations), temperature, seed))
            return [SimpleNamespace(text=f"Answer {seed}.", finish_reason="stop") for _ in conversations]

    monkeypatch.setattr(runs_general, "model_cache_dir", lambda: tmp_path)
    monkeypatch.setattr(models, "engine", lambda model, device: Sampler())
    prompts = runs_general.replay_prompts()
    blocks = runs_general.replay_blocks()
    assert blocks >= 3 and len(prompts) > (blocks - 1) * runs_general.REPLAY_BLOCK
    replay = runs_general.general_ability(TrainConfig(model=str(tiny_model_dir), data="x.jsonl")).replay

    first = replay(10)
    assert len(first) == runs_general.REPLAY_BLOCK  # one block answers 10
    assert {temperature for _, temperature, _ in asked} == {runs_general.REPLAY_TEMPERATURE} == {1.0}
    assert [seed for _, _, seed in asked] == list(range(0, runs_general.REPLAY_BLOCK, runs_general.GENERATION_BATCH))
    asked.clear()
    assert len(replay(runs_general.REPLAY_BLOCK + 1)) == 2 * runs_general.REPLAY_BLOCK  # the first block is cached
    assert asked[0][2] == runs_general.REPLAY_BLOCK and sum(n for n, _, _ in asked) == runs_general.REPLAY_BLOCK
    everything = replay()
    assert [e.conversation.messages[0].content for e in everything] == [p["prompt"] for p in prompts]
    assert sum(e.declines for e in everything) == sum(p["category"] == "refusal" for p in prompts)
    assert replay(10) == first  # read back from the cache, as sampled
    assert len(list(tmp_path.glob("replay/*.jsonl"))) == blocks
    # What a launcher of several processes generates first: the run's share of the file's lines.
    data = write_jsonl(tmp_path / "questions.jsonl", questions(101))
    assert runs_general.replay_wanted(TrainConfig(model=str(tiny_model_dir), data=data)) == 20


def test_replay_keeps_complete_answers_and_the_base_models_refusals():
    assert replay_answer("facts", "Water boils at 100 degrees Celsius at sea level.", "stop") is not None
    assert replay_answer("facts", "Water boils at 100 degrees and then it", "length") is None  # cut off
    assert replay_answer("facts", "I'm sorry, I can't answer that.", "stop") is None  # no new refusals
    refusal = "I'm sorry, but I cannot help with breaking into accounts."
    assert replay_answer("refusal", refusal, "stop") == refusal  # the base's own refusal
    assert replay_answer("refusal", "Sure! First, find their password by", "length") == DECLINE
    assert replay_answer("refusal", "Sure, here is how to do it.", "stop") == DECLINE


def test_a_plateaued_validation_loss_stops_the_run_by_default(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "questions.jsonl", questions(60))
    # A learning rate too small to move the loss: every validation after the first is a plateau.
    config = TrainConfig(
        model=str(tiny_model_dir),
        data=data,
        n_epochs=20,
        batch_size=8,
        precision="fp32",
        learning_rate_multiplier=1e-6,
        replay_share=0,
    )
    result = train_run(config)
    steps_per_epoch = -(-52 // 8)  # 7; validated every 3 steps (auto: twice an epoch) and at each epoch's end
    validated = [row for row in metric_rows(result.run_dir) if row["valid_loss"]]
    assert result.stopped_early and result.metrics["step"] < steps_per_epoch * 20
    # step 0 is the base; the first validation after it is the best; AUTO_PATIENCE more without progress stop it
    assert len(validated) == 1 + 1 + AUTO_PATIENCE
    losses = [float(row["valid_loss"]) for row in validated]
    assert max(losses) - min(losses) < 0.002 * min(losses)
    assert result.metrics["best_step"] in [int(row["step"]) for row in validated[1:]]
    assert result.metrics["step"] == int(validated[-1]["step"])


def test_progress_needs_a_relative_and_an_absolute_gain():
    from tuneforge.train.sft import made_progress

    defaults = TrainConfig(model="smollm2-135m-instruct", data="x.jsonl")
    threshold, min_delta = defaults.early_stopping_threshold, defaults.early_stopping_min_delta
    assert made_progress(1.40, None, threshold, min_delta)  # the first validation
    assert made_progress(1.40, 1.41, threshold, min_delta)  # 0.7 %: progress
    assert not made_progress(1.409, 1.41, threshold, min_delta)  # 0.07 %: a plateau
    # Classification's measured tail: each step a third less, but nothing left to learn.
    assert not made_progress(0.0002, 0.0003, threshold, min_delta)
    assert made_progress(0.0002, 0.0003, threshold, 0.0)  # the relative test alone would go on


def test_replay_is_drawn_by_seed_with_half_of_it_refusals(smol_tokenizer):
    from tuneforge.data.examples import Conversation, Message
    from tuneforge.data.tokenize import ChatTokenizer
    from tuneforge.train.general import GeneralAbility, ReplayExample, mix_replay

    def example(text, declines):
        return ReplayExample(Conversation([Message("user", f"ask {text}"), Message("assistant", text)]), declines)

    available = [example(f"answer {i}", False) for i in range(100)] + [
        example(f"I'm sorry, no ({i})", True) for i in range(16)
    ]
    tokenizer = ChatTokenizer(smol_tokenizer, 0.0)
    task = tokenizer.encode([Conversation([Message("user", f"q{i}"), Message("assistant", "a")]) for i in range(200)])
    general = GeneralAbility(replay=lambda wanted: available, replay_source="test")

    def replayed_texts(seed):
        mixed, record = mix_replay(task, general, 0.1, tokenizer, seed)
        assert record.examples == 20 and record.available == 116 and len(mixed) == 220
        return [smol_tokenizer.decode(e.input_ids) for e in mixed[200:]]

    first = replayed_texts(3)
    assert sum("I'm sorry" in text for text in first) == 10  # half of 20
    assert replayed_texts(3) == first and replayed_texts(4) != first
    assert mix_replay(task[:49], general, 0.1, tokenizer, 3) == (task[:49], None)  # too few to replay into
