"""Pinned losses: a few steps of the real recipe on the tiny model (after a few steps of learning,
so its loss is not the random model's ln V), per configuration, against a
reference committed in tests/reference/pinned_losses.json (torchtune's expected-loss tests, TRL's
invariance classes).

Configurations that must train alike form a class and share one reference: every speed trick on
vs off, a bigger batch vs the same batch by accumulation. Each is checked step by step (tolerance
per precision) and for drift (the mean signed difference over the steps, which a small systematic
change moves long before any single step leaves its tolerance). A change that moves a reference on
purpose rewrites the file: `TUNEFORGE_UPDATE_PINNED=1 pytest tests/test_pinned_losses.py`, and the
diff shows by how much.
"""

import csv
import json
import os
from pathlib import Path

import pytest
from helpers import filler, write_jsonl

from tuneforge.hardware import bf16_is_fast
from tuneforge.train.config import TrainConfig
from tuneforge.train.reporter import Reporter
from tuneforge.train.sft import train_sft

REFERENCE = Path(__file__).parent / "reference" / "pinned_losses.json"
TRICKS_OFF = dict(
    padding_free=False,
    sparse_output_layer=False,
    chunked_loss=False,
    fused_lora=False,
    lean_activations=False,
    group_by_length=False,
    cache_tokens=False,
)
# Every trick but group_by_length, which puts other examples in each batch (the same data, another
# order: not the same arithmetic, so not the same class).
EVERY_TRICK = {"group_by_length": False, "cache_tokens": False}
# class -> (precision, step tolerance (relative), drift tolerance (relative), configurations).
# Measured on the reference CPU (2026-12-01), from the learned tiny model: fp32 members within 2.3e-7
# of their reference (metrics.csv keeps 6 decimals), bf16 within 5.6e-4 (mean 6e-5). The tolerances
# leave ~40x (fp32) and ~2.7x (bf16) for other CPUs' kernels and stay below what a wrong path moves:
# a step changes the loss by ~2 %, and frozen weights stored as float8 or truncated rather than
# rounded to bf16 moved it by 5e-3 to 7e-3 (tests/test_speed_tricks.py).
CLASSES = {
    "lora fp32": (
        "fp32",
        1e-5,
        3e-6,
        {
            "plain": TRICKS_OFF,
            "every trick": EVERY_TRICK,
            "accumulation 2": {**TRICKS_OFF, "gradient_accumulation_steps": 2},
        },
    ),
    "lora bf16": (
        "bf16",
        1.5e-3,
        3e-4,
        {
            "plain": {**TRICKS_OFF, "frozen_weights_bf16": False},
            "every trick": EVERY_TRICK,
        },
    ),
    "full fp32": (
        "fp32",
        1e-5,
        3e-6,
        {
            "plain": {**TRICKS_OFF, "fused_lora": False},
            "every trick": {**EVERY_TRICK, "fused_lora": False, "frozen_weights_bf16": False},
        },
    ),
}
STEPS = 4


def losses(tmp_path: Path, learned_model_dir: Path, precision: str, method: str, options: dict) -> list[float]:
    """Training loss of each step, then the validation loss at the end: the pure recipe, no registry."""
    train = write_jsonl(tmp_path / "train.jsonl", filler(16))
    validation = write_jsonl(tmp_path / "validation.jsonl", filler(4, start=100))
    config = TrainConfig(
        model=str(learned_model_dir),
        data=train,
        validation_data=validation,
        method=method,
        n_epochs=1,
        batch_size=4,
        max_steps=STEPS,
        seed=0,
        learning_rate_multiplier=5,
        precision=precision,
        **options,
    )
    run_dir = tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}"
    train_sft(config, Reporter(), run_dir)
    with (run_dir / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    steps = [float(r["train_loss"]) for r in rows if r["train_loss"]]
    return steps + [float(next(r["valid_loss"] for r in reversed(rows) if r["valid_loss"]))]


@pytest.mark.parametrize("name", CLASSES)
def test_each_configuration_trains_like_its_reference(name, tmp_path, learned_model_dir):
    precision, step_tolerance, drift_tolerance, configurations = CLASSES[name]
    if precision == "bf16" and not bf16_is_fast():
        pytest.skip("bf16 is emulated on this CPU: no native bf16 to pin")
    method = name.split()[0]
    measured = {
        label: losses(tmp_path, learned_model_dir, precision, method, options)
        for label, options in configurations.items()
    }
    references = json.loads(REFERENCE.read_text()) if REFERENCE.exists() else {}
    if os.environ.get("TUNEFORGE_UPDATE_PINNED") == "1":
        references[name] = measured["plain"]
        REFERENCE.write_text(json.dumps(references, indent=2, sort_keys=True) + "\n")
    reference = references[name]
    assert len(reference) == STEPS + 1
    assert reference[0] > reference[STEPS - 1]  # it learns: a pinned flat line would prove nothing
    for label, values in measured.items():
        relative = [(value - expected) / expected for value, expected in zip(values, reference)]
        assert max(map(abs, relative)) <= step_tolerance, (label, values, reference)
        assert abs(sum(relative) / len(relative)) <= drift_tolerance, (label, "drift", relative)
