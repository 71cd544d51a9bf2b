"""Shared prefixes computed once: a padding-free row whose examples all start with the same tokens
holds those tokens once, followed by the rest of each example.

Fine-tuning chats nearly all begin with the chat template's header and the same system prompt
(SmolLM2's template even inserts a default one), and a plain padding-free row (padding_free.py)
runs every layer over that prefix once per example.

Layout. With P tokens common to every example, the row is the first S = P - 1 of them (the shared
part), then each example's tokens from S on (its segment). Why S = P - 1 and not P: the position
of the last common token predicts a different next token in each example, so each segment starts
at that token and every prediction inside a segment is an ordinary one; the shared part's own
predictions (tokens 1..S, token S from the last shared position) are the same in every example.
Positions continue from S in each segment, so the rotary embeddings see each example's own.

Attention. The shared part attends causally to itself; query i of a segment attends to every shared
key and to its segment's keys 0..i, exactly what it sees in its own copy of the example. On CPU
`SharedPrefixAttention` (in padding_free.py, beside the other attention of padding-free rows) runs
this as flash-attention calls merged by their logsumexps; elsewhere `_attention_per_segment` runs
SDPA per segment with an explicit mask (correct, not tuned: see `shares_prefix_on`).

Loss. Each example's predictions are listed explicitly (row position, target, weight), in the order
the unshared row scores them; a shared position scored by several examples (prompt_loss_weight > 0)
is read once per example. The loss, accuracy and counts are then the unshared batch's, and autograd
sums each example's gradient into the shared hidden states, which every layer computed once.
"""

import numpy as np
import torch

from tuneforge.data.tokenize import TokenizedExample
from tuneforge.train.padding_free import VARLEN_ATTENTION

# Sharing costs two extra attention calls per layer and saves (examples - 1) x shared tokens of
# every layer's work. Measured (benchmarks/RESULTS.md, 2026-12-01 night): saving 62 % of a row's
# tokens (a ~200-token system prompt, batch 8) made LoRA steps 2.1-2.3x faster; saving 18 % (the
# quickstart's ~30-token prefix, batch 4) made no difference (274-324 tok/s shared, 280-326 not,
# alternating runs). So a batch shares only when it saves at least MIN_SAVED_SHARE of its tokens.
MIN_SHARED_TOKENS = 16
MIN_SAVED_SHARE = 0.25


def shares_prefix_on(device: str) -> bool:
    """Whether training batches on `device` should share their prefix: on CPU only. On CUDA the
    padding-free path is one varlen flash call (or transformers' flash_attention_2, which would
    ignore a shared prefix); a shared layout there needs keys laid out per segment, not written
    yet, and the per-segment SDPA fallback here would give up that kernel's speed."""
    return torch.device(device).type == "cpu"


def common_prefix_length(sequences: list[list[int]]) -> int:
    shortest = min(len(s) for s in sequences)
    first = np.asarray(sequences[0][:shortest])
    same = np.ones(shortest, dtype=bool)
    for sequence in sequences[1:]:
        same &= np.asarray(sequence[:shortest]) == first
    differing = np.flatnonzero(~same)
    return int(differing[0]) if differing.size else shortest


def collate_shared_prefix(examples: list[TokenizedExample]) -> dict | None:
    """The fields of a `loop.Batch` holding the examples as one padding-free row with their common
    prefix once (see the module's docstring); None when that would not pay: one example, fewer
    than MIN_SHARED_TOKENS shared, or less than MIN_SAVED_SHARE of the row's tokens saved."""
    if len(examples) < 2:
        return None
    shared = common_prefix_length([e.input_ids for e in examples]) - 1
    saved = (len(examples) - 1) * shared
    if shared < MIN_SHARED_TOKENS or saved < MIN_SAVED_SHARE * sum(len(e.input_ids) for e in examples):
        return None
    ids = [np.asarray(e.input_ids, dtype=np.int64) for e in examples]
    weights = [np.asarray(e.loss_weights, dtype=np.float32) for e in examples]
    segment_lengths = [len(x) - shared for x in ids]  # >= 1: each segment holds at least the last common token
    starts = np.cumsum([0, shared] + segment_lengths)  # the shared part's, each segment's, and the end

    # The row's weights, summed over examples where their predictions coincide, so that trained_tokens
    # (and a validation's weight total) is the unshared row's. The loss reads the listed predictions.
    row_weights = np.concatenate([np.sum([w[:shared] for w in weights], axis=0)] + [w[shared:] for w in weights])
    row_weights[0] = 0.0  # nothing predicts the first token
    row_weights[shared] = sum(w[shared] for w in weights)  # predicted from the last shared position, in every example
    row_weights[starts[2:-1]] = 0.0  # a later segment's first token would be predicted from the previous segment

    positions, targets, target_weights = [], [], []
    for x, w, start in zip(ids, weights, starts[1:-1]):
        scored = np.flatnonzero(w[1:] > 0) + 1  # the tokens this example's unshared row scores (never token 0)
        # token t is predicted from position t - 1: in the shared part up to t = S, in the segment after
        positions.append(np.where(scored <= shared, scored - 1, start + scored - 1 - shared))
        targets.append(x[scored])
        target_weights.append(w[scored])

    row = np.concatenate([ids[0][:shared]] + [x[shared:] for x in ids])
    position_ids = np.concatenate([np.arange(shared)] + [np.arange(shared, len(x)) for x in ids])
    return dict(
        input_ids=torch.from_numpy(row).unsqueeze(0),
        attention_mask=None,
        loss_weights=torch.from_numpy(row_weights).unsqueeze(0),
        # The examples' tokens, though the shared ones are computed once: tok/s then counts the data
        # trained through, as an unshared row's does, and the data check's time estimate still holds.
        tokens=sum(len(x) for x in ids),
        position_ids=torch.from_numpy(position_ids).unsqueeze(0),
        sequence_starts=torch.tensor(starts, dtype=torch.int32),
        shared_prefix=shared,
        prediction_positions=torch.from_numpy(np.concatenate(positions)),
        prediction_targets=torch.from_numpy(np.concatenate(targets)),
        prediction_weights=torch.from_numpy(np.concatenate(target_weights)),
    )


def require_shared_prefix_attention(model) -> None:
    """A shared-prefix row is only right under Tuneforge's varlen attention: any other (transformers'
    flash_attention_2 reads the same boundaries) would run each segment without the shared part."""
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    implementation = causal_lm.config._attn_implementation
    if implementation != VARLEN_ATTENTION:
        raise ValueError(f"a batch with a shared prefix needs {VARLEN_ATTENTION} attention, not {implementation}")
