"""Direct preference optimisation (DPO): what the training loop needs to learn from preference pairs.

Rafailov et al. 2023: for a prompt x with a chosen reply y_c and a rejected one y_r,

    loss = -log sigmoid(beta * ((log pi(y_c|x) - log ref(y_c|x)) - (log pi(y_r|x) - log ref(y_r|x))))

where pi is the model being tuned and ref the model the run started from; beta * (log pi - log ref)
is a reply's implicit reward. log pi(y|x) sums the log-probabilities of the reply's tokens (its
content and the end-of-turn token that closes it, the tokens SFT would train on), as TRL's
DPOTrainer does (loss_type "sigmoid"); tests/test_dpo.py checks the two agree on a batch.

The reference is the model as the run starts (the base with a new LoRA adapter, whose B matrices
are zero, or the full weights before the first step), so its log-probabilities are computed once,
before the first step, for every training and validation pair, and kept in the run directory:
no second copy of the model in memory and no reference forward per step. A resumed run reads
them back (the weights it started from are gone for full fine-tuning).

One batch holds a step's chosen replies then its rejected ones, padding-free like SFT's, and only
the reply tokens go through the output layer (the sparse head).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tuneforge.data.examples import Preference
from tuneforge.data.tokenize import ChatTokenizer, TokenizedExample, conversations_for
from tuneforge.train import distributed
from tuneforge.train.distributed import Ranks
from tuneforge.train.loop import Batch, _output_layer_parts, autocast, collate, collate_padding_free

REFERENCE_FILE = "reference_logps.pt"


@dataclass(slots=True)
class TokenizedPair:
    """A preference pair as token ids: the prompt with its chosen reply, and with its rejected one.
    `reference` is the starting model's (chosen, rejected) log-probabilities, once computed."""

    chosen: TokenizedExample
    rejected: TokenizedExample
    reference: tuple[float, float] | None = None

    # What the loop's shared pieces read of an example (lengths, the held-out split's key, the
    # tokens of a step): both sides, end to end.
    @property
    def input_ids(self) -> list[int]:
        return self.chosen.input_ids + self.rejected.input_ids

    @property
    def loss_weights(self) -> np.ndarray:
        return np.concatenate([self.chosen.loss_weights, self.rejected.loss_weights])


def tokenize_pairs(examples: list, tokenizer: ChatTokenizer, path: Path) -> list[TokenizedPair]:
    """Token ids and reply weights of every pair; a file with anything but pairs, or a pair whose
    reply is cut off entirely by max_seq_length, is an error naming its line."""
    from tuneforge.train.inputs import TrainingDataError, check_trainable

    for line, example in examples:
        if not isinstance(example, Preference):
            raise TrainingDataError(
                f"{path}: line {line} is a {example.kind} example, but DPO learns from preference pairs",
                code="wrong_method",
                line=line,
                fix=(
                    "Give every line a prompt with a preferred and a non-preferred reply (OpenAI's DPO format: "
                    "input, preferred_output, non_preferred_output; or prompt, chosen, rejected), or train with "
                    "objective sft."
                ),
            )
    tokenizer.end_of_turn_ids  # raises when the template never closes a reply with a special token
    sides = tokenizer.encode([side for _, example in examples for side in conversations_for(example)])
    pairs = [TokenizedPair(sides[i], sides[i + 1]) for i in range(0, len(sides), 2)]
    for (line, _), pair in zip(examples, pairs):
        for name, side in (("preferred_output", pair.chosen), ("non_preferred_output", pair.rejected)):
            check_trainable(side, path, line, tokenizer.max_length, name)
    return pairs


def pair_batch(pairs: list[TokenizedPair], pad_id: int, padding_free: bool) -> Batch:
    """One batch of the pairs' chosen sides, then their rejected sides."""
    sides = [pair.chosen for pair in pairs] + [pair.rejected for pair in pairs]
    return collate_padding_free(sides) if padding_free else collate(sides, pad_id)


def sequence_log_probs(model, batch: Batch, dtype: torch.dtype | None, sparse_head: bool = True) -> torch.Tensor:
    """(sequences,) sum over each sequence's weighted tokens of weight x log p(token): the reply's
    log-probability when the weights mark its tokens. Only those positions reach the output layer."""
    selected = batch.loss_weights[:, 1:] > 0
    targets, weights = batch.input_ids[:, 1:][selected], batch.loss_weights[:, 1:][selected]
    if batch.sequence_starts is None:  # padded rows: one sequence a row
        rows = torch.arange(batch.input_ids.shape[0], device=targets.device)
        sequence = rows.unsqueeze(1).expand_as(selected)[selected]
        count = batch.input_ids.shape[0]
    else:  # one row end to end: a position belongs to the sequence whose start precedes it
        positions = torch.arange(1, batch.input_ids.shape[1], device=targets.device).unsqueeze(0)[selected]
        starts = batch.sequence_starts.to(targets.device).long()
        sequence = torch.bucketize(positions, starts[1:], right=True)
        count = starts.numel() - 1
    parts = _output_layer_parts(model) if sparse_head else None
    with autocast(dtype, batch.input_ids.device.type):
        if parts is None:
            logits = model(**batch.model_inputs()).logits[:, :-1][selected]
        else:
            decoder, head = parts
            logits = head(decoder(**batch.model_inputs()).last_hidden_state[:, :-1][selected])
    token_logps = -F.cross_entropy(logits.float(), targets, reduction="none") * weights
    return torch.zeros(count, device=targets.device, dtype=token_logps.dtype).index_add(0, sequence, token_logps)


def dpo_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-pair loss, chosen rewards, rejected rewards): the sigmoid DPO loss of summed log-probs."""
    chosen_rewards = beta * (chosen - reference_chosen)
    rejected_rewards = beta * (rejected - reference_rejected)
    return -F.logsigmoid(chosen_rewards - rejected_rewards), chosen_rewards.detach(), rejected_rewards.detach()


class PreferenceLoss(torch.nn.Module):
    """The model and its DPO loss as one module (the counterpart of modeling.TokenLoss).
    forward(batch of n chosen then n rejected sides, reference (n, 2)) -> (summed loss over the
    pairs, chosen rewards, rejected rewards)."""

    def __init__(self, model, config):
        super().__init__()
        self.model = model
        self.beta = config.dpo_beta
        self.sparse_head = config.sparse_output_layer
        self.dtype = torch.bfloat16 if config.precision == "bf16" else None

    def forward(self, batch: Batch, reference: torch.Tensor):
        logps = sequence_log_probs(self.model, batch, self.dtype, self.sparse_head)
        chosen, rejected = logps.chunk(2)
        losses, chosen_rewards, rejected_rewards = dpo_loss(
            chosen, rejected, reference[:, 0], reference[:, 1], self.beta
        )
        return losses.sum(), chosen_rewards, rejected_rewards


def _reference_tensor(pairs: list[TokenizedPair], device) -> torch.Tensor:
    return torch.tensor([pair.reference for pair in pairs], dtype=torch.float32, device=device)


def preference_step(wrapped, pairs: list[TokenizedPair], config, pad_id: int, device: str, place: Ranks = Ranks()):
    """One optimiser step's forward and backward passes over `pairs`, in micro-batches; returns
    (this rank's sums: loss, correct, counted, tokens, rewards_chosen, rewards_rejected; the step's
    loss weight: its pairs; its trained tokens: the reply tokens of both sides)."""
    from tuneforge.train.modeling import gradient_sync

    total = len(pairs)
    trained = sum(pair.chosen.trainable_tokens + pair.rejected.trainable_tokens for pair in pairs)
    pieces = distributed.micro_batches(
        distributed.share(pairs, place), total, config.gradient_accumulation_steps, place
    )
    sums = dict.fromkeys(("loss", "correct", "counted", "tokens", "rewards_chosen", "rewards_rejected"), 0.0)
    for index, (chunk, scale) in enumerate(pieces):
        chunk = chunk or pairs[:1]  # a filler counts for nothing
        batch = pair_batch(chunk, pad_id, config.padding_free)
        with gradient_sync(wrapped, index == len(pieces) - 1):
            loss, chosen, rejected = wrapped(batch.to(device), _reference_tensor(chunk, device))
            (loss * (scale * place.world) / total).backward()
        if scale:
            _add(sums, loss, chosen, rejected, batch.tokens)
    return sums, float(total), trained


def _add(sums: dict, loss, chosen, rejected, tokens: int) -> None:
    sums["loss"] += loss.item()
    sums["correct"] += int((chosen > rejected).sum())
    sums["counted"] += chosen.numel()
    sums["tokens"] += tokens
    sums["rewards_chosen"] += float(chosen.sum())
    sums["rewards_rejected"] += float(rejected.sum())


def train_row(sums: dict) -> dict:
    """A step's DPO figures as TRL names them (rewards/chosen -> rewards_chosen; train_accuracy is
    the reward accuracy: the share of pairs whose chosen reply has the higher reward)."""
    pairs = max(sums["counted"], 1)
    chosen, rejected = sums["rewards_chosen"] / pairs, sums["rewards_rejected"] / pairs
    return {
        "train_loss": round(sums["loss"] / pairs, 6),
        "train_accuracy": round(sums["correct"] / pairs, 6),
        "rewards_chosen": round(chosen, 6),
        "rewards_rejected": round(rejected, 6),
        "rewards_margin": round(chosen - rejected, 6),
    }


@torch.no_grad()
def evaluate_preferences(loss_module: PreferenceLoss, pairs: list[TokenizedPair], config, pad_id: int, device) -> dict:
    """Validation DPO loss, reward accuracy (the preference accuracy: does the model give the chosen
    reply the higher reward?) and rewards, over `pairs`."""
    was_training = loss_module.training
    loss_module.eval()
    sums = dict.fromkeys(("loss", "correct", "counted", "tokens", "rewards_chosen", "rewards_rejected"), 0.0)
    for start in range(0, len(pairs), config.batch_size):
        chunk = pairs[start : start + config.batch_size]
        batch = pair_batch(chunk, pad_id, config.padding_free).to(device)
        _add(sums, *loss_module(batch, _reference_tensor(chunk, device)), batch.tokens)
    loss_module.train(was_training)
    row = train_row(sums)
    return {
        "valid_loss": row["train_loss"],
        "valid_reward_accuracy": row["train_accuracy"],
        "valid_rewards_margin": row["rewards_margin"],
        "valid_rewards_chosen": row["rewards_chosen"],
        "valid_rewards_rejected": row["rewards_rejected"],
    }


@torch.no_grad()
def pair_log_probs(
    model, pairs: list[TokenizedPair], batch_size: int, pad_id: int, device, dtype=None, padding_free: bool = False
) -> torch.Tensor:
    """(pairs, 2) the model's (chosen, rejected) reply log-probabilities, in eval mode (no dropout):
    a run's reference, and the evaluation's preference accuracy."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        logps = sequence_log_probs(model, pair_batch(chunk, pad_id, padding_free).to(device), dtype)
        out.append(torch.stack(logps.float().cpu().chunk(2), dim=1))
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 2)


def reference_log_probs(model, pairs: list[TokenizedPair], config, pad_id: int, device) -> torch.Tensor:
    """The run's reference: `pair_log_probs` of the model as the run starts, as the run computes."""
    dtype = torch.bfloat16 if config.precision == "bf16" else None
    return pair_log_probs(model, pairs, config.batch_size, pad_id, device, dtype, config.padding_free)


def attach_references(model, sets: dict[str, list[TokenizedPair]], config, pad_id: int, device, run_dir: Path) -> None:
    """Give every pair its reference log-probabilities: read from the run directory when the run
    already computed them (a resume), else computed now from the model as it starts and saved."""
    path = run_dir / REFERENCE_FILE
    if path.exists():
        saved = torch.load(path)
    else:
        saved = {name: reference_log_probs(model, pairs, config, pad_id, device) for name, pairs in sets.items()}
        partial = path.with_suffix(".partial")
        torch.save(saved, partial)
        partial.replace(path)  # whole or absent: a run stopped while saving computes them again
    for name, pairs in sets.items():
        values = saved[name]
        if len(values) != len(pairs):
            raise RuntimeError(f"{path}: {len(values)} {name} references for {len(pairs)} pairs")
        for pair, (chosen, rejected) in zip(pairs, values.tolist()):
            pair.reference = (chosen, rejected)
