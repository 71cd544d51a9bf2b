"""The forgetting guard, as the recipe sees it: general prompts scored at each validation, and replay
examples mixed into training.

A tuned model that can only do its new task, and has lost what it knew, is a trap: the quickstart's
support-chat run raised the forgetting probes' perplexity by +126 %. Two parts guard against it:

- `probes`: general prompts with reference answers (the evaluation's forgetting probes). Their
  weighted loss on the references is computed at every validation beside the task's, as
  `general_loss` in metrics.csv, the events and the card: the curve shows when tuning starts to cost
  general ability, not only the evaluation afterwards.
- `replay`: the base model's own answers, sampled, to other general prompts (never the probes', or the
  probes would measure memorisation). A share of them trains beside the task's examples, so every
  step also pulls the model back toward the base's distribution on general requests:
  self-distillation, which needs no outside data and no second model in memory.

The service layer builds both (tuneforge/runs/general.py: it reads the probe set and generates and
caches the replay answers); the recipe only tokenises and mixes them, so the training stage knows
nothing of the evaluation stage or of inference.
"""

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from tuneforge.data.examples import Conversation
from tuneforge.data.tokenize import ChatTokenizer, TokenizedExample

REPLAY_MINIMUM_TRAINING = 50
# At least this share of a run's replay examples are refusals (while there are enough of them).
# Measured on the quickstart's data (benchmarks/RESULTS.md, 2026-12-01 night): of the base's 3
# red-team refusals, no replay kept 0, a random draw (~15 % refusals) 2, a quarter 1, a half 8,
# with the forgetting probes' ROUGE-L at or above the base's in every case (no broad over-refusal).
REFUSAL_SHARE = 0.5


@dataclass(frozen=True)
class ReplayExample:
    conversation: Conversation  # a general prompt and the answer to replay
    declines: bool  # a request a careful assistant declines, answered with a refusal


@dataclass(frozen=True)
class GeneralAbility:
    """General prompts to watch (`probes`) and to replay, both as chat examples whose last assistant
    message is the answer. `replay(wanted)` is called only when a run mixes replay in, and gives at
    least `wanted` examples where it has them (all it has for None): the first call for a base model
    generates the answers it needs (about a minute a block for the bundled model on a CPU)."""

    probes: list[Conversation] = field(default_factory=list)
    replay: Callable[[int | None], list[ReplayExample]] | None = None
    replay_source: str = ""  # where the replay answers come from (model, cache file)


@dataclass(frozen=True)
class Replayed:
    """What a run mixed into its training set, as the card and manifest record it."""

    examples: int
    share: float
    available: int
    source: str

    def describe(self) -> str:
        return (
            f"{self.examples} replay examples ({self.share:.0%} of the task's training examples; the base model's "
            f"own answers to built-in general prompts, {self.source}) trained beside the task's"
        )


def reply_only(tokenizer: ChatTokenizer) -> ChatTokenizer:
    """The run's tokenizer with prompt tokens weighted 0: general prompts are scored and replayed on
    their answers alone, whatever the task's prompt_loss_weight."""
    return ChatTokenizer(tokenizer.tokenizer, 0.0, tokenizer.max_length)


def general_probes(general: GeneralAbility | None, tokenizer: ChatTokenizer) -> list[TokenizedExample]:
    if general is None or not general.probes:
        return []
    return [e for e in reply_only(tokenizer).encode(general.probes) if e.trainable_tokens > 0]


def mix_replay(
    train_set: list[TokenizedExample],
    general: GeneralAbility | None,
    share: float,
    tokenizer: ChatTokenizer,
    seed: int,
) -> tuple[list[TokenizedExample], Replayed | None]:
    """The training set with round(share x its size) replay examples appended (at most as many as
    there are, REFUSAL_SHARE of them refusals where there are enough), chosen by `seed`: the same
    run, resumed, mixes in the same ones. Epoch order puts them in batches of their own, shuffled
    among the task's (loop.epoch_order: in a mixed batch their long answers outweighed the task's). A
    training set under REPLAY_MINIMUM_TRAINING examples (where no validation is held out either)
    gets none: a share of it is a replay example or two, noise rather than a guard."""
    if general is None or general.replay is None or share <= 0 or len(train_set) < REPLAY_MINIMUM_TRAINING:
        return train_set, None
    wanted = max(1, round(share * len(train_set)))
    available = general.replay(wanted)
    if not available:
        return train_set, None
    wanted = min(len(available), wanted)
    refusals = [e for e in available if e.declines]
    answers = [e for e in available if not e.declines]
    from_refusals = min(len(refusals), max(math.ceil(REFUSAL_SHARE * wanted), wanted - len(answers)))
    draw = random.Random(seed)
    chosen = draw.sample(refusals, from_refusals) + draw.sample(answers, wanted - from_refusals)
    encoded = [e for e in reply_only(tokenizer).encode([c.conversation for c in chosen]) if e.trainable_tokens]
    replayed = Replayed(len(encoded), share, len(available), general.replay_source)
    return train_set + encoded, replayed
