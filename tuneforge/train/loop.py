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
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from tuneforge.data.tokenize import TokenizedExample

if TYPE_CHECKING:
    from tuneforge.train.padding_free import RowLayout

COMPLETE_MARKER = "COMPLETE"  # written last: a checkpoint without it was interrupted while saving


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------ batches
@dataclass
class Batch:
    input_ids: torch.Tensor  # (batch, seq) long, right-padded; (1, tokens) when padding-free
    attention_mask: torch.Tensor | None  # (batch, seq) long, 0 on padding; None when padding-free
    loss_weights: torch.Tensor  # (batch, seq) float, weight of predicting input_ids[:, t]; 0 on padding
    tokens: int  # the examples' real (non-padding) tokens; a shared prefix, computed once, counts for each
    position_ids: torch.Tensor | None = None  # (1, tokens) when padding-free: restarts at 0 for each example
    sequence_starts: torch.Tensor | None = (
        None  # (examples + 1,) int32 when padding-free: where each example starts, and the end
    )
    # With shared prefixes (shared_prefix.py): `shared_layout` says where each group's shared part
    # and each example's rest lie in the row (sequence_starts too), and the loss scores the listed
    # predictions (row position, target token, weight), one per scored token of each example.
    shared_layout: "RowLayout | None" = None
    prediction_positions: torch.Tensor | None = None
    prediction_targets: torch.Tensor | None = None
    prediction_weights: torch.Tensor | None = None

    @property
    def shared_prefix(self) -> int:
        """Tokens at the row's start that groups of its examples share (0: none)."""
        return self.shared_layout.shared_tokens if self.shared_layout is not None else 0

    @property
    def trained_tokens(self) -> float:
        return float(self.loss_weights[:, 1:].sum())

    def to(self, device) -> "Batch":
        """The batch on `device` (built on the host, moved once per micro-batch); itself on the CPU."""
        if torch.device(device).type == "cpu":
            return self
        moved = {
            name: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
            for name, value in self.__dict__.items()
        }
        return Batch(**moved)

    def model_inputs(self) -> dict:
        # use_cache=False: a training or scoring pass has no next token to decode, and a KV cache
        # would only hold on to every layer's keys and values.
        if self.sequence_starts is None:
            return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "use_cache": False}
        from tuneforge.train.padding_free import model_inputs

        return {
            "input_ids": self.input_ids,
            "use_cache": False,
            **model_inputs(self.position_ids, self.sequence_starts, self.shared_layout),
        }


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


def collate_padding_free(examples: list[TokenizedExample], share_prefix: bool = False) -> Batch:
    """The examples end to end in one row. The weight at each example's first token is set to 0:
    there it would weigh predicting that token from the end of the previous example.

    With `share_prefix`, the tokens every example starts with are laid once at the row's start
    (shared_prefix.py), where there are enough of them to pay; the loss and gradients are the same."""
    if share_prefix:
        from tuneforge.train.shared_prefix import collate_shared_prefix

        shared = collate_shared_prefix(examples)
        if shared is not None:
            return Batch(**shared)
    lengths = [len(e.input_ids) for e in examples]
    ids = torch.tensor([token for e in examples for token in e.input_ids]).unsqueeze(0)
    weights = torch.from_numpy(np.concatenate([e.loss_weights for e in examples])).unsqueeze(0).clone()
    starts = torch.tensor(np.cumsum([0] + lengths), dtype=torch.int32)
    weights[0, starts[:-1].long()] = 0.0
    positions = torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0)
    return Batch(ids, None, weights, sum(lengths), positions, starts)


GROUP_SPAN = 50  # batches per length-sorted group: enough to pad little, few enough to stay shuffled


def epoch_order(
    n_examples: int,
    batch_size: int,
    seed: int,
    epoch: int,
    lengths: list[int] | None = None,
    sources: list[int] | None = None,
) -> list[list[int]]:
    """The batches of one epoch: a permutation seeded by (seed, epoch), cut into batches.

    With `lengths`, examples of similar length share a batch (less padding): the permutation is cut
    into groups of GROUP_SPAN batches, each group sorted by length and cut into batches, and the
    batches shuffled again. With `sources`, the sizes of consecutive blocks of examples (the task's,
    then the forgetting guard's replay), a batch holds one block's examples only: the loss averages
    over a step's tokens, and in a mixed batch the replay's answers (10x a short-answer task's
    replies) outweighed the task's examples beside them (benchmarks/RESULTS.md, 2026-12-03). Every
    example is still seen exactly once per epoch."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n_examples, generator=generator).tolist()
    starts = [0]
    for size in sources or [n_examples]:
        starts.append(starts[-1] + size)
    if starts[-1] != n_examples:
        raise ValueError(f"sources {sources} do not add up to {n_examples} examples")
    batches = []
    for low, high in zip(starts, starts[1:]):
        block = [i for i in order if low <= i < high]  # the permutation's order, one block at a time
        if lengths is not None:
            span = batch_size * GROUP_SPAN
            groups = [block[start : start + span] for start in range(0, len(block), span)]
            block = [i for group in groups for i in sorted(group, key=lengths.__getitem__)]
        batches += [block[i : i + batch_size] for i in range(0, len(block), batch_size)]
    if lengths is not None or len(starts) > 2:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches


def batches_per_epoch(sources: list[int], batch_size: int) -> int:
    """How many batches `epoch_order` cuts an epoch of these blocks into."""
    return sum(-(-size // batch_size) for size in sources if size)


def validation_due(step: int, every: int | None, to_epoch_end: int, to_run_end: int, last_validated: int) -> bool:
    """Whether to validate after `step`: at each epoch's end (`to_epoch_end` 0), and every `every`
    steps between, except within a quarter interval of another validation (the last one, or the epoch
    end's ahead, when the run gets there: `to_run_end` steps are left). A validation so close after
    another measures almost the same weights yet costs its time and, with no gain, a unit of early
    stopping's patience: short answers validated at steps 192 and 200, 280 and 288 (benchmarks/
    RESULTS.md, 2026-12-03 morning)."""
    if to_epoch_end == 0:
        return True
    if not every or step % every:
        return False
    near = every // 4
    return step - last_validated > near and not (to_epoch_end <= near and to_epoch_end <= to_run_end)


# --------------------------------------------------------------------------------------- loss
def autocast(dtype: torch.dtype | None, device: str = "cpu"):
    """bf16 autocast for the matmuls (weights stay fp32); a no-op context when dtype is None."""
    return torch.autocast(device, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def _output_layer_parts(model):
    """(decoder, output layer) of a causal LM, unwrapping peft; None where the model post-processes
    its logits (soft-capping) and the output layer cannot be applied on its own."""
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(causal_lm.config, "final_logit_softcapping", None):
        return None
    decoder, head = causal_lm.get_decoder(), causal_lm.get_output_embeddings()
    return (decoder, head) if decoder is not None and head is not None else None


def weighted_token_loss(
    model, batch: Batch, sparse_head: bool = True, dtype: torch.dtype | None = None, chunked: bool = False
) -> tuple[torch.Tensor, int, int]:
    """Sum over tokens of weight x cross-entropy (not yet divided), correct predictions, counted tokens.

    Position t predicts token t+1, so targets and weights shift by one. With `sparse_head`, the
    output layer (a 49 k-wide matmul for SmolLM2, a fifth of the model's FLOPs) and the softmax run
    only on positions whose loss weight is non-zero: prompt tokens with weight 0 need no logits.
    With `chunked` too, they run a chunk of tokens at a time with the gradients computed in the same
    pass (chunked_loss.py), so the (tokens, vocabulary) logits never exist at once.
    """
    parts = _output_layer_parts(model) if sparse_head else None
    if batch.prediction_positions is None:
        selected = batch.loss_weights[:, 1:] > 0
        targets, weights = batch.input_ids[:, 1:][selected], batch.loss_weights[:, 1:][selected]

        def scored(states):  # (batch, seq, ...) -> (trained tokens, ...)
            return states[:, :-1][selected]
    else:  # a shared prefix: its positions are scored once for each example that shares them
        from tuneforge.train.shared_prefix import require_shared_prefix_attention

        require_shared_prefix_attention(model)
        targets, weights = batch.prediction_targets, batch.prediction_weights

        def scored(states):
            return states[0, batch.prediction_positions]

    with autocast(dtype, batch.input_ids.device.type):
        if parts is None:
            logits = scored(model(**batch.model_inputs()).logits)  # (trained tokens, vocab)
        else:
            decoder, head = parts
            hidden = scored(decoder(**batch.model_inputs()).last_hidden_state)  # (trained tokens, hidden)
            # A plain layer only: with LoRA on the output layer (lora_target_modules naming lm_head)
            # the adapter's contribution is not in head.weight.
            if chunked and type(head) is torch.nn.Linear and head.bias is None:
                from tuneforge.train.chunked_loss import chunked_linear_cross_entropy

                loss, correct = chunked_linear_cross_entropy(hidden, head.weight, targets, weights, dtype)
                return loss, correct, int(targets.numel())
            logits = head(hidden)  # (trained tokens, vocab)
    logits = logits.float()
    losses = F.cross_entropy(logits, targets, reduction="none")
    correct = predicted_correctly(logits, targets)
    return (losses * weights).sum(), correct, int(targets.numel())


def predicted_correctly(logits: torch.Tensor, targets: torch.Tensor) -> int:
    """How many of `targets` (tokens,) score highest in their row of `logits` (tokens, vocab).
    Compared with the row's maximum, not found by argmax: on CPU, argmax over SmolLM2's 49 k
    vocabulary took 15.8 ms for 256 tokens and amax 1.0 ms (~3 % of a step of long examples). A
    target tied for the top score counts as correct, where argmax counted it only when first."""
    return int((logits.gather(-1, targets[:, None]) >= logits.amax(-1, keepdim=True)).sum())


@torch.no_grad()
def evaluate(
    model,
    batches: list[Batch],
    sparse_head: bool = True,
    dtype: torch.dtype | None = None,
    chunked: bool = False,
    device: str = "cpu",
    loss_of=None,
    combine=None,
    fillers: set[int] = frozenset(),
) -> dict:
    """Validation loss (weighted mean per token), perplexity and mean token accuracy.

    `loss_of(batch)` replaces the plain weighted_token_loss (a distributed run's wrapped model), and
    `combine` sums the totals over processes (each of which validated its own share of `batches`);
    the batches whose index is in `fillers` run the model (every process runs as many) and count nothing."""
    was_training = model.training
    model.eval()
    loss_of = loss_of or (lambda batch: weighted_token_loss(model, batch, sparse_head, dtype, chunked))
    loss_sum = weight_sum = 0.0
    correct = counted = 0
    for index, batch in enumerate(batches):
        weighted, right, n = loss_of(batch.to(device))
        if index not in fillers:
            loss_sum += weighted.item()
            weight_sum += batch.trained_tokens
            correct, counted = correct + right, counted + n
    if combine is not None:
        loss_sum, weight_sum, correct, counted = combine([loss_sum, weight_sum, correct, counted])
    model.train(was_training)
    loss = loss_sum / max(weight_sum, 1e-9)
    return {
        "valid_loss": loss,
        "valid_perplexity": math.exp(min(loss, 50)),
        "valid_mean_token_accuracy": correct / max(counted, 1),
    }


# ------------------------------------------------------------------------ optimiser, schedule
def build_optimizer(model, learning_rate: float, weight_decay: float) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            # Norms and biases are not decayed (the usual practice; decaying them hurts stability).
            (no_decay if parameter.ndim < 2 or "norm" in name else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel per parameter instead of a dozen elementwise ops; LoRA has 420 small tensors
    # for SmolLM2, and their per-op overhead showed in the profile (benchmarks/RESULTS.md).
    return torch.optim.AdamW(groups, lr=learning_rate, betas=(0.9, 0.999), eps=1e-8, fused=True)


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
    base_general_loss: float | None = None  # the forgetting guard's general prompts, before tuning
    last_validated: int = 0  # the step of the latest validation (0: the base model, or none yet)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def save_checkpoint(
    directory: Path,
    model,
    optimizer_state: dict,
    scheduler,
    state: TrainerState,
    metrics: dict | None,
    epoch_end: bool,
    weights: dict | None = None,
) -> Path:
    """A complete checkpoint at `directory`: the trained weights (PEFT saves the adapter only, a full
    model its safetensors; `weights` when they were gathered from shards), the optimiser state keyed
    by parameter name (so any number of processes can load it), the schedule and the RNG states."""
    staging = directory.with_name(directory.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save_pretrained(staging, **({"state_dict": weights} if weights is not None else {}))
    torch.save(
        {
            "optimizer": optimizer_state,
            "optimizer_format": "names",
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
            "numpy_rng": np.random.get_state(),
        },
        staging / "training_state.pt",
    )
    (staging / "trainer_state.json").write_text(
        json.dumps({**state.as_dict(), "metrics": metrics, "epoch_end": epoch_end}, indent=2)
    )
    (staging / COMPLETE_MARKER).write_text("")
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)
    return directory


def newest_complete_checkpoint(checkpoints_dir: Path) -> Path | None:
    candidates = [p for p in checkpoints_dir.glob("step-*") if (p / COMPLETE_MARKER).exists()]
    return max(candidates, key=lambda p: int(p.name.split("-")[1]), default=None)


def load_training_state(directory: Path, load_optimizer, scheduler) -> TrainerState:
    """Where a checkpoint stood; `load_optimizer(state, by_name)` puts its optimiser state back (by
    parameter name, or, in checkpoints from before distributed runs, by position)."""
    saved = torch.load(directory / "training_state.pt", weights_only=False)  # our own file: RNG states are tuples
    load_optimizer(saved["optimizer"], saved.get("optimizer_format") == "names")
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["torch_rng"])
    random.setstate(saved["python_rng"])
    np.random.set_state(saved["numpy_rng"])
    values = json.loads((directory / "trainer_state.json").read_text())
    values.pop("metrics", None)
    values.pop("epoch_end", None)
    return TrainerState(**values)
