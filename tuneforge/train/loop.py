"""Pieces every training recipe shares: batches, the weighted loss, optimiser and schedule,
validation, and checkpoints that resume to the same result as an uninterrupted run.

Determinism: the data order of epoch e is a permutation seeded by (seed, e), so a run resumed at
step k of an epoch skips exactly the batches it had already seen; the checkpoint carries the
optimiser, schedule and RNG states, so dropout draws continue where they stopped.
"""

import json
import math
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tuneforge.data.tokenize import TokenizedExample

COMPLETE_MARKER = "COMPLETE"  # written last: a checkpoint without it was interrupted while saving


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------ batches
@dataclass
class Batch:
    input_ids: torch.Tensor  # (batch, seq) long, right-padded
    attention_mask: torch.Tensor  # (batch, seq) long, 0 on padding
    loss_weights: torch.Tensor  # (batch, seq) float, weight of predicting input_ids[:, t]; 0 on padding
    tokens: int  # real (non-padding) tokens

    @property
    def trained_tokens(self) -> float:
        return float(self.loss_weights[:, 1:].sum())


def collate(examples: list[TokenizedExample], pad_id: int) -> Batch:
    length = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), length), dtype=torch.long)
    weights = torch.zeros((len(examples), length), dtype=torch.float32)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        mask[row, :n] = 1
        weights[row, :n] = torch.from_numpy(example.loss_weights)
    return Batch(ids, mask, weights, int(mask.sum()))


def epoch_order(n_examples: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch: a permutation seeded by (seed, epoch), cut into batches."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n_examples, generator=generator).tolist()
    return [order[i:i + batch_size] for i in range(0, n_examples, batch_size)]


# --------------------------------------------------------------------------------------- loss
def weighted_token_loss(logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, float, int]:
    """Sum over tokens of weight x cross-entropy (not yet divided), correct predictions, counted tokens.

    logits: (batch, seq, vocab); position t predicts token t+1, so targets and weights shift by one.
    """
    targets = batch.input_ids[:, 1:]
    weights = batch.loss_weights[:, 1:]
    logits = logits[:, :-1].float()
    losses = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
    weighted_sum = (losses * weights.reshape(-1)).sum()
    counted = weights > 0
    correct = ((logits.argmax(-1) == targets) & counted).sum().item()
    return weighted_sum, correct, int(counted.sum())


@torch.no_grad()
def evaluate(model, batches: list[Batch]) -> dict:
    """Validation loss (weighted mean per token), perplexity and mean token accuracy."""
    was_training = model.training
    model.eval()
    loss_sum = weight_sum = 0.0
    correct = counted = 0
    for batch in batches:
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        weighted, right, n = weighted_token_loss(logits, batch)
        loss_sum += weighted.item()
        weight_sum += batch.trained_tokens
        correct, counted = correct + right, counted + n
    model.train(was_training)
    loss = loss_sum / max(weight_sum, 1e-9)
    return {"valid_loss": loss, "valid_perplexity": math.exp(min(loss, 50)), "valid_mean_token_accuracy": correct / max(counted, 1)}


# ------------------------------------------------------------------------ optimiser, schedule
def build_optimizer(model, learning_rate: float, weight_decay: float) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            # Norms and biases are not decayed (the usual practice; decaying them hurts stability).
            (no_decay if parameter.ndim < 2 or "norm" in name else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=learning_rate, betas=(0.9, 0.999), eps=1e-8)


def build_schedule(optimizer, kind: str, warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        if kind == "linear":
            return max(0.0, 1.0 - progress)
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# -------------------------------------------------------------------------------- checkpoints
@dataclass
class TrainerState:
    """Where training stands; saved in every checkpoint and enough to resume exactly."""

    step: int = 0
    epoch: int = 0  # the epoch in progress (0-based)
    batch_in_epoch: int = 0  # batches of that epoch already trained on
    trained_tokens: float = 0.0
    best_valid_loss: float | None = None
    best_step: int | None = None
    evaluations_without_improvement: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def save_checkpoint(directory: Path, model, optimizer, scheduler, state: TrainerState, metrics: dict | None,
                    epoch_end: bool) -> Path:
    staging = directory.with_name(directory.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save_pretrained(staging)  # PEFT saves the adapter only; a full model saves safetensors
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(), "python_rng": random.getstate(),
                "numpy_rng": np.random.get_state()}, staging / "training_state.pt")
    (staging / "trainer_state.json").write_text(json.dumps({**state.as_dict(), "metrics": metrics, "epoch_end": epoch_end}, indent=2))
    (staging / COMPLETE_MARKER).write_text("")
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)
    return directory


def newest_complete_checkpoint(checkpoints_dir: Path) -> Path | None:
    candidates = [p for p in checkpoints_dir.glob("step-*") if (p / COMPLETE_MARKER).exists()]
    return max(candidates, key=lambda p: int(p.name.split("-")[1]), default=None)


def load_training_state(directory: Path, optimizer, scheduler) -> TrainerState:
    saved = torch.load(directory / "training_state.pt", weights_only=False)  # our own file: RNG states are tuples
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["torch_rng"])
    random.setstate(saved["python_rng"])
    np.random.set_state(saved["numpy_rng"])
    values = json.loads((directory / "trainer_state.json").read_text())
    values.pop("metrics", None)
    values.pop("epoch_end", None)
    return TrainerState(**values)
