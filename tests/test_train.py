"""The SFT recipe on tiny random models: it learns, resumes exactly, stops early, and its artifacts
reload with peft and plain transformers."""

import csv
import json
from pathlib import Path

import pytest
import torch
from helpers import chat, write_jsonl

from tuneforge.registry import store
from tuneforge.runs.training import train_run
from tuneforge.train.config import TrainConfig
from tuneforge.train.inputs import TrainingDataError
from tuneforge.train.reporter import Reporter, TrainingInterrupted

ANIMALS = ["cat", "dog", "owl", "fox", "bee", "elk", "ant", "bat", "cod", "eel", "yak", "emu"]


# A random 2-layer model's frozen output layer caps its logits far below what a confident answer
# needs (measured: LoRA on all-linear stalls at loss ~5); adapting lm_head too lifts that cap.
# With it, multiplier 5 and 40 epochs reached loss < 0.005 for seeds 1-5 (multiplier 10 stalled at 0.35 for one).
WITH_HEAD = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,lm_head"


def learnable(tmp_path: Path, answer="hello there friend", name="train.jsonl") -> Path:
    """A tiny task a 2-layer model can learn: whatever the animal, the same polite phrase back."""
    return write_jsonl(tmp_path / name, [chat(f"Say hi as the {animal}", answer) for animal in ANIMALS])


def config(model_dir, data, **overrides) -> TrainConfig:
    values = dict(
        model=str(model_dir), data=data, n_epochs=2, batch_size=4, lora_dropout=0.0, seed=3, precision="fp32"
    )
    return TrainConfig(**{**values, **overrides})


def losses(run_dir: Path) -> list[float]:
    with (run_dir / "metrics.csv").open() as handle:
        return [float(row["train_loss"]) for row in csv.DictReader(handle)]


class StopAt(Reporter):
    """Asks the recipe to stop after a given step, as Ctrl-C or a cancel would."""

    def __init__(self, step: int):
        self.stop_step, self.current = step, 0

    def step(self, row):
        self.current = row["step"]

    def should_stop(self) -> bool:
        return self.current >= self.stop_step


def test_lora_learns_a_tiny_task_to_near_zero_loss(tmp_path, tiny_model_dir):
    result = train_run(
        config(
            tiny_model_dir, learnable(tmp_path), n_epochs=40, learning_rate_multiplier=5, lora_target_modules=WITH_HEAD
        )
    )
    trace = losses(result.run_dir)
    assert trace[0] > 5 and trace[-1] < 0.05, (trace[0], trace[-1])


def test_resume_after_interruption_reproduces_the_uninterrupted_run(tmp_path, tiny_model_dir):
    data = learnable(tmp_path)
    settings = dict(n_epochs=3, lora_dropout=0.1, learning_rate_multiplier=5)  # dropout: RNG state must resume too
    whole = train_run(config(tiny_model_dir, data, **settings))
    with pytest.raises(TrainingInterrupted):
        train_run(config(tiny_model_dir, data, **settings), StopAt(4), run_id="run-interrupted")
    assert store.get_run("run-interrupted").status == "interrupted"
    resumed = train_run(config(tiny_model_dir, data, **settings), run_id="run-interrupted", resume=True)
    assert len(losses(resumed.run_dir)) == len(losses(whole.run_dir)) == 9
    assert losses(resumed.run_dir) == pytest.approx(losses(whole.run_dir), abs=1e-5)
    assert resumed.metrics["valid_loss" if "valid_loss" in resumed.metrics else "trained_tokens"] == pytest.approx(
        whole.metrics["valid_loss" if "valid_loss" in whole.metrics else "trained_tokens"], abs=1e-5
    )


def test_gradient_accumulation_gives_the_same_losses_as_one_batch(tmp_path, tiny_model_dir):
    data = learnable(tmp_path)
    one = train_run(config(tiny_model_dir, data, learning_rate_multiplier=5))
    accumulated = train_run(config(tiny_model_dir, data, learning_rate_multiplier=5, gradient_accumulation_steps=2))
    assert losses(accumulated.run_dir) == pytest.approx(losses(one.run_dir), abs=1e-5)


def test_early_stopping_stops_and_keeps_the_best_checkpoint(tmp_path, tiny_model_dir):
    train = learnable(tmp_path)
    # Validation wants the opposite answers: it improves while the format is learned, then gets worse.
    validation = learnable(tmp_path, answer="goodbye now", name="validation.jsonl")
    result = train_run(
        config(
            tiny_model_dir,
            train,
            validation_data=validation,
            n_epochs=40,
            eval_every_steps=1,
            early_stopping_patience=3,
            learning_rate_multiplier=5,
            lora_target_modules=WITH_HEAD,
        )
    )
    assert result.stopped_early and result.metrics["step"] < 40 * 3
    best = result.metrics["best_step"]
    assert result.metrics["step"] == best + 3
    checkpoint = result.run_dir / "checkpoints" / f"step-{best}" / "adapter_model.safetensors"
    final = result.run_dir / "adapter" / "adapter_model.safetensors"
    from safetensors.torch import load_file

    kept, saved = load_file(checkpoint), load_file(final)
    assert kept.keys() == saved.keys() and all(torch.equal(kept[k], saved[k]) for k in kept)


def test_reloaded_adapter_reproduces_the_final_validation_loss(tmp_path, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.data.tokenize import ChatTokenizer
    from tuneforge.train.inputs import load_examples, tokenize_for_sft
    from tuneforge.train.loop import collate, evaluate

    validation = learnable(tmp_path, answer="goodbye now", name="validation.jsonl")
    result = train_run(
        config(tiny_model_dir, learnable(tmp_path), validation_data=validation, learning_rate_multiplier=5)
    )
    tokenizer = AutoTokenizer.from_pretrained(result.run_dir / "adapter")
    encoded = tokenize_for_sft(load_examples(validation, "validation"), ChatTokenizer(tokenizer), validation)
    batches = [collate(encoded[i : i + 4], tokenizer.pad_token_id) for i in range(0, len(encoded), 4)]
    reloaded = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), result.run_dir / "adapter"
    )
    assert evaluate(reloaded, batches)["valid_loss"] == pytest.approx(result.metrics["valid_loss"], abs=1e-5)


def test_adapter_reloads_with_peft_and_merged_export_matches(tmp_path, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result = train_run(config(tiny_model_dir, learnable(tmp_path), learning_rate_multiplier=25))
    adapter = result.run_dir / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["peft_type"] == "LORA"
    tokens = torch.tensor([[1, 200, 300, 400, 500]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        base_logits = base(tokens).logits
        tuned = PeftModel.from_pretrained(base, adapter).eval()
        tuned_logits = tuned(tokens).logits
    assert not torch.allclose(base_logits, tuned_logits, atol=1e-4), "the adapter changed nothing"

    from tuneforge.inference.engine import load_for_inference
    from tuneforge.runs.models import resolve_spec

    merged_dir = tmp_path / "merged"
    model, tokenizer = load_for_inference(resolve_spec(result.run_id))
    model.save_pretrained(merged_dir)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    with torch.no_grad():
        assert torch.allclose(merged(tokens).logits, tuned_logits, atol=1e-5)


def test_full_fine_tuning_saves_loadable_weights(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    result = train_run(config(tiny_model_dir, learnable(tmp_path), method="full", learning_rate_multiplier=10))
    weights = result.run_dir / "model"
    assert (weights / "model.safetensors").exists() and (weights / "chat_template.jinja").exists()
    loaded = AutoModelForCausalLM.from_pretrained(weights)
    assert losses(result.run_dir)[-1] < losses(result.run_dir)[0]
    assert loaded.config.num_hidden_layers == 2


def test_run_directory_and_registry_agree_and_are_removed_together(tmp_path, tiny_model_dir):
    result = train_run(config(tiny_model_dir, learnable(tmp_path), suffix="animals"))
    run = store.get_run(result.run_id)
    assert run.status == "succeeded" and Path(run.run_dir) == result.run_dir
    assert result.model_name == f"ft:{Path(tiny_model_dir).name}:tuneforge:animals:{result.run_id}"
    assert [m.name for m in run.models] == [result.model_name]
    assert {Path(c.path).name for c in run.checkpoints} == {p.name for p in (result.run_dir / "checkpoints").iterdir()}
    for name in ("metrics.csv", "config.json", "manifest.json", "README.md", "loss.png"):
        assert (result.run_dir / name).exists(), name
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["data"]["train"]["sha256"] == run.train_dataset
    assert json.loads((result.run_dir / "config.json").read_text())["n_epochs"] == 2
    # The model card: Hub front matter, also beside the adapter (not PEFT's empty template), no local paths.
    from tuneforge.train.card import split_card

    meta, body = split_card((result.run_dir / "README.md").read_text())
    assert meta["library_name"] == "peft" and meta["tags"][:3] == ["tuneforge", "lora", "sft"]
    assert meta["datasets"] == [f"sha256:{run.train_dataset}"] and "base_model" not in meta  # a local base
    assert body.startswith(f"# {result.model_name}") and str(tmp_path) not in body and str(tiny_model_dir) not in body
    assert split_card((result.run_dir / "adapter" / "README.md").read_text())[0] == meta
    assert store.delete_run(result.run_id)
    assert store.get_run(result.run_id) is None and not result.run_dir.exists()
    assert store.find_model(result.model_name) is None


def test_an_example_with_nothing_left_after_truncation_fails_before_training(tmp_path, tiny_model_dir):
    records = [chat(f"Say hi as the {a}", "hi") for a in ANIMALS[:11]] + [chat("word " * 100, "cut off")]
    data = write_jsonl(tmp_path / "train.jsonl", records)
    with pytest.raises(TrainingDataError) as caught:
        train_run(config(tiny_model_dir, data, max_seq_length=64))
    assert caught.value.line == 12 and caught.value.code == "too_long"


def test_data_errors_fail_before_the_model_loads(tmp_path, tiny_model_dir):
    data = write_jsonl(
        tmp_path / "train.jsonl",
        [chat(f"q{a}", "a") for a in ANIMALS[:11]] + [{"messages": [{"role": "robot", "content": "x"}]}],
    )
    with pytest.raises(TrainingDataError) as caught:
        train_run(config(tiny_model_dir, data))
    assert (caught.value.code, caught.value.line, caught.value.field) == ("unknown_role", 12, "messages[0].role")


def test_auto_values_resolve_like_openai():
    resolved = TrainConfig(data="x.jsonl").resolve(n_train_examples=288, context_length=8192)
    assert (resolved.n_epochs, resolved.batch_size, resolved.learning_rate_multiplier) == (3, 4, 0.1)
    assert resolved.learning_rate == pytest.approx(2e-4) and resolved.max_seq_length == 2048
    assert TrainConfig(data="x.jsonl").resolve(20, 512).n_epochs == 5  # tiny data: ~100 examples seen
    assert TrainConfig(data="x.jsonl").resolve(50_000, 512).n_epochs == 1
    with pytest.raises(ValueError):
        TrainConfig(data="x.jsonl", prompt_loss_weight=1.5)


def test_auto_batch_size_fills_a_step_with_tokens_and_scales_the_learning_rate():
    from tuneforge.train.config import auto_batch_size

    def resolve(n, mean_tokens, **options):
        return TrainConfig(data="x.jsonl", device="cpu", **options).resolve(n, 2048, mean_tokens=mean_tokens)

    short = resolve(1275, 104)  # ~2,048 / 104 = 20 examples: the nearest power of two
    assert (short.batch_size, short.n_epochs) == (16, 3)
    assert short.learning_rate_multiplier == pytest.approx(0.1 * 16 / 4)  # linear in the batch
    assert short.learning_rate == pytest.approx(2e-3 * short.learning_rate_multiplier)
    assert resolve(288, 60).batch_size == 8  # 16 would leave fewer than 100 steps in 3 epochs
    assert resolve(5000, 1500).batch_size == 4  # long examples: the smallest batch already holds ~6,000 tokens
    assert resolve(100_000, 10).batch_size == 16  # the largest
    assert resolve(1275, 78, learning_rate_multiplier=0.1).learning_rate == pytest.approx(2e-4)  # chosen: kept
    assert resolve(1275, 78, batch_size=32).learning_rate_multiplier == pytest.approx(0.8)  # scales a chosen batch
    assert resolve(1275, 78, gradient_accumulation_steps=64).batch_size == 64  # one example per micro-step at least
    assert auto_batch_size(100_000, 100, 1, "cuda") == 16 and auto_batch_size(100_000, 1024, 1, "cuda") == 8


def test_a_run_resolves_its_batch_from_its_examples_tokens(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "train.jsonl", [chat(f"q{i}", "a") for i in range(400)])
    run = train_run(
        config(tiny_model_dir, data, batch_size="auto", n_epochs=25, max_steps=1, forgetting_guard=False),
        run_id="run-auto-batch",
    )
    recorded = json.loads((run.run_dir / "config.json").read_text())
    # ~20-token examples: 2,048 tokens a step would be ~100 of them, so the largest auto batch, 16
    assert (recorded["batch_size"], recorded["learning_rate_multiplier"]) == (16, pytest.approx(0.4))


def test_a_run_that_fails_is_recorded_as_failed_with_its_error(tmp_path, tiny_model_dir):
    from tuneforge.errors import UsageError

    with pytest.raises(UsageError, match="lora_target_modules"):
        train_run(
            config(tiny_model_dir, learnable(tmp_path), lora_target_modules="no_such_proj"), run_id="run-failing"
        )
    run = store.get_run("run-failing")
    assert run.status == "failed" and "no_such_proj" in run.error


def test_continued_pretraining_on_a_text_file(tmp_path, tiny_model_dir):
    notes = tmp_path / "handbook.txt"
    notes.write_text("\n\n".join(f"Payouts for workspace {i} arrive in two business days." for i in range(12)) + "\n")
    result = train_run(config(tiny_model_dir, notes, learning_rate_multiplier=5))
    assert store.get_run(result.run_id).status == "succeeded"
    with store.session() as db:
        assert db.get(store.Dataset, store.get_run(result.run_id).train_dataset).kind == "text"
    assert losses(result.run_dir)[-1] < losses(result.run_dir)[0]


def test_a_run_whose_patience_runs_out_at_its_last_step_did_not_stop_early(tmp_path, tiny_model_dir):
    """The run ends there anyway: its card and result must not say it stopped early."""
    settings = dict(
        validation_data=learnable(tmp_path, answer="goodbye now", name="validation.jsonl"),
        n_epochs=40,
        eval_every_steps=1,
        early_stopping_patience=3,
        learning_rate_multiplier=5,
        lora_target_modules=WITH_HEAD,
        lr_scheduler="constant",  # the same steps whatever max_steps is
        warmup_ratio=0.0,
    )
    stopped = train_run(config(tiny_model_dir, learnable(tmp_path), **settings))
    assert stopped.stopped_early
    last = stopped.metrics["step"]
    ended = train_run(config(tiny_model_dir, learnable(tmp_path), max_steps=last, **settings))
    assert ended.metrics["step"] == last and not ended.stopped_early
    assert ended.metrics["best_step"] == stopped.metrics["best_step"] < last


def validated_steps(every, epoch_steps, total_steps):
    from tuneforge.train.loop import validation_due

    validated, last = [], 0
    for step in range(1, total_steps + 1):
        if validation_due(step, every, -step % epoch_steps, total_steps - step, last):
            validated.append(last := step)
    return validated


def test_validation_skips_a_scheduled_step_a_quarter_interval_from_another():
    # Short answers with replay: 96-step epochs, every 40 steps. 200 came 8 steps after the epoch
    # end's 192, 280 8 steps before 288's: both measured the same weights and cost patience.
    assert validated_steps(40, 96, 288) == [40, 80, 96, 120, 160, 192, 240, 288]
    assert validated_steps(1, 5, 10) == list(range(1, 11))  # every step means every step
    assert validated_steps(2, 5, 10) == [2, 4, 5, 6, 8, 10]
    # A run cut short by max_steps before the epoch's end keeps the validation that end would have
    # replaced, and a scheduled step near no other stays.
    assert validated_steps(40, 48, 45) == [40]
    assert validated_steps(40, 200, 120) == [40, 80, 120]


def test_early_stopping_without_validation_data_is_refused(tmp_path, tiny_model_dir):
    from tuneforge.errors import UsageError

    with pytest.raises(UsageError, match="validation"):
        train_run(config(tiny_model_dir, learnable(tmp_path), early_stopping_patience=2))


def test_a_second_run_on_the_same_file_takes_its_tokens_from_the_cache(tmp_path, tiny_model_dir, monkeypatch):
    from tuneforge.train import inputs, token_cache

    data = learnable(tmp_path, name="cached.jsonl")
    first = train_run(config(tiny_model_dir, data))
    cached = set(token_cache.cache_dir().glob("*.npz"))
    assert cached

    def no_reading(*args, **kwargs):
        raise AssertionError("the file was read again instead of the cache")

    monkeypatch.setattr(inputs, "load_examples", no_reading)
    second = train_run(config(tiny_model_dir, data))
    assert losses(second.run_dir) == losses(first.run_dir)
    assert set(token_cache.cache_dir().glob("*.npz")) == cached  # same key: nothing new written
    with store.session() as db:
        assert db.get(store.Dataset, store.get_run(second.run_id).train_dataset).kind == "conversation"

    monkeypatch.undo()  # what the tokens depend on changes the key: a fresh tokenisation
    third = train_run(config(tiny_model_dir, data, prompt_loss_weight=0.5, max_steps=1))
    assert len(set(token_cache.cache_dir().glob("*.npz")) - cached) == 1
    assert store.get_run(third.run_id).status == "succeeded"


def test_the_token_cache_round_trips_exactly(tmp_path, smol_tokenizer):
    from tuneforge.data.formats import parse_record
    from tuneforge.data.tokenize import ChatTokenizer
    from tuneforge.train import token_cache

    examples = [parse_record(chat(f"Question {i} " * (i + 1), f"Answer {i}"), i)[1].example for i in range(5)]
    encoded = ChatTokenizer(smol_tokenizer, 0.25, max_length=20).encode(examples)
    assert any(e.truncated for e in encoded)
    token_cache.save("roundtrip", encoded, "conversation")
    loaded, kind = token_cache.load("roundtrip")
    assert kind == "conversation" and len(loaded) == 5
    for before, after in zip(encoded, loaded):
        assert after.input_ids == before.input_ids and after.full_length == before.full_length
        assert (
            after.loss_weights == before.loss_weights
        ).all() and after.loss_weights.dtype == before.loss_weights.dtype
    (token_cache.cache_dir() / "broken.npz").write_bytes(b"PK\x03\x04 cut short")
    assert token_cache.load("broken") is None and token_cache.load("absent") is None


def test_speed_estimate_uses_the_precision_auto_picks_and_the_trainers_measured_efficiency(monkeypatch):
    from tuneforge import hardware

    facts = {"fp32_matmul_gflops": 150.0, "bf16_matmul_gflops": 350.0}
    monkeypatch.setattr(hardware, "machine_facts", lambda device="cpu": facts)
    n = 134_515_008  # SmolLM2-135M's parameters
    # tokens/s = matmul GFLOP/s x Tuneforge's efficiency / (FLOPs per token x n): 4n for LoRA, 6n for full,
    # efficiencies from benchmarks/RESULTS.md: LoRA bf16 0.39 (2026-11-22: 315 tok/s x 4n over a 370 GFLOP/s
    # ceiling x 1.17), full bf16 0.44 (223 tok/s x 6n over 350 x 1.17), fp32 0.60 (2026-11-21, evening).
    tokens_per_second = hardware.estimated_tokens_per_second
    assert tokens_per_second(n, "lora") == pytest.approx(253.69, abs=0.01)  # 350e9 x 0.39 / 4n
    assert tokens_per_second(n, "full") == pytest.approx(190.81, abs=0.01)  # 350e9 x 0.44 / 6n
    assert tokens_per_second(n, "full", "fp32") == pytest.approx(111.51, abs=0.01)  # 150e9 x 0.60 / 6n
    assert tokens_per_second(n, "lora", "fp32") == pytest.approx(167.27, abs=0.01)  # 150e9 x 0.60 / 4n
    facts.pop("bf16_matmul_gflops")  # a CPU without native bf16: auto trains in fp32
    assert tokens_per_second(n, "lora") == pytest.approx(167.27, abs=0.01)
