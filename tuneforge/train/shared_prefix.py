"""Shared prefixes computed once: a padding-free row whose examples start with the same tokens
holds those tokens once, followed by the rest of each example.

Fine-tuning chats nearly all begin with the chat template's header and the same system prompt
(SmolLM2's template even inserts a default one), and a plain padding-free row (padding_free.py)
runs every layer over that prefix once per example. A batch may hold more than one such family:
the forgetting guard's replay examples (runs/general.py) carry the template's default system
prompt, the task's examples their own. So the examples are grouped by their first tokens, and each
group of two or more that start with at least MIN_SHARED_TOKENS common tokens shares them.

Layout. With P tokens common to a group's examples, the group's shared part is the first S = P - 1
of them; the row holds every group's shared part, then each example's tokens from its group's S on
(its segment; an example in no group is whole). Why S = P - 1 and not P: the position of the last
common token predicts a different next token in each example, so each segment starts at that token
and every prediction inside a segment is an ordinary one; the shared part's own predictions (tokens
1..S, token S from the last shared position) are the same in every example of the group. Positions
continue from S in each segment, so the rotary embeddings see each example's own.

Attention. A shared part attends causally to itself; query i of a segment attends to every key of
its group's part and to its segment's keys 0..i, exactly what it sees in its own copy of the
example. On CPU `SharedPrefixAttention` (in padding_free.py, beside the other attention of
padding-free rows) runs this as flash-attention calls merged by their logsumexps; elsewhere
`_attention_per_segment` runs SDPA per piece with an explicit mask (correct, not tuned: see
`shares_prefix_on`).

Loss. Each example's predictions are listed explicitly (row position, target, weight), in the order
the unshared row scores them; a shared position scored by several examples (prompt_loss_weight > 0)
is read once per example. The loss, accuracy and counts are then the unshared batch's, and autograd
sums each example's gradient into the shared hidden states, which every layer computed once.
"""

import numpy as np
import torch

from tuneforge.data.tokenize import TokenizedExample
from tuneforge.train.padding_free import VARLEN_ATTENTION, RowLayout

# Sharing costs two extra attention calls per group and layer and saves every layer's work on each
# shared token beyond the first copy. Measured (benchmarks/RESULTS.md, 2026-12-01 night): saving
# 62 % of a row's tokens (a ~200-token system prompt, batch 8) made LoRA steps 2.1-2.3x faster;
# saving 18 % (the quickstart's ~30-token prefix, batch 4) made no difference then. Since the
# attention writes its pieces in place (2026-12-02 night), batches saving 9-23 % run faster shared:
# the quickstart's (batch 8) 20 steps 24.9 -> 23.9 s, short answers' 18 steps 40.2 -> 38.2 s,
# alternating. So a batch shares when that saves at least MIN_SAVED_SHARE of its tokens.
MIN_SHARED_TOKENS = 16
MIN_SAVED_SHARE = 0.08


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


def prefix_groups(sequences: list[list[int]]) -> list[tuple[list[int], int]]:
    """(members, shared tokens) of each group of two or more sequences that start with the same
    MIN_SHARED_TOKENS + 1 tokens (their common prefix, less one, is shared), in order of first member."""
    families: dict[tuple, list[int]] = {}
    for index, sequence in enumerate(sequences):
        if len(sequence) > MIN_SHARED_TOKENS:
            families.setdefault(tuple(sequence[: MIN_SHARED_TOKENS + 1]), []).append(index)
    return [
        (members, common_prefix_length([sequences[i] for i in members]) - 1)
        for members in families.values()
        if len(members) > 1
    ]


def collate_shared_prefix(examples: list[TokenizedExample]) -> dict | None:
    """The fields of a `loop.Batch` holding the examples as one padding-free row with each group's
    common prefix once (see the module's docstring); None when that would not pay: no group, or
    less than MIN_SAVED_SHARE of the row's tokens saved."""
    ids = [np.asarray(e.input_ids, dtype=np.int64) for e in examples]
    weights = [np.asarray(e.loss_weights, dtype=np.float32) for e in examples]
    groups = prefix_groups([e.input_ids for e in examples])
    saved = sum((len(members) - 1) * shared for members, shared in groups)
    if not groups or saved < MIN_SAVED_SHARE * sum(len(x) for x in ids):
        return None
    part_of, shared_of = [-1] * len(examples), [0] * len(examples)
    for part, (members, shared) in enumerate(groups):
        for i in members:
            part_of[i], shared_of[i] = part, shared
    # Segments in group order (each group's examples together), then the examples in no group.
    order = [i for members, _ in groups for i in members] + [i for i in range(len(examples)) if part_of[i] < 0]
    part_lengths = [shared for _, shared in groups]
    segment_lengths = [len(ids[i]) - shared_of[i] for i in order]  # >= 1: a segment holds its last common token
    part_starts = np.cumsum([0] + part_lengths)[:-1]
    segment_starts = sum(part_lengths) + np.cumsum([0] + segment_lengths)[:-1]

    # The row's weights, summed over a group's examples where their predictions coincide, so that
    # trained_tokens (and a validation's weight total) is the unshared row's. The loss reads the
    # listed predictions.
    part_weights = [np.sum([weights[i][:shared] for i in members], axis=0) for members, shared in groups]
    segment_weights = [weights[i][shared_of[i] :].copy() for i in order]
    for w, i in zip(segment_weights, order):
        if part_of[i] < 0:
            w[0] = 0.0  # a whole example's first token is predicted by nothing in it
    for w in part_weights:
        w[0] = 0.0

    positions, targets, target_weights = [], [], []
    for i, start in zip(order, segment_starts):
        x, w, shared = ids[i], weights[i], shared_of[i]
        part_start = part_starts[part_of[i]] if part_of[i] >= 0 else 0
        scored = np.flatnonzero(w[1:] > 0) + 1  # the tokens this example's unshared row scores (never token 0)
        # token t is predicted from position t - 1: in the shared part up to t = S, in the segment after
        positions.append(np.where(scored <= shared, part_start + scored - 1, start + scored - 1 - shared))
        targets.append(x[scored])
        target_weights.append(w[scored])

    parts = [ids[members[0]][:shared] for members, shared in groups]
    row = np.concatenate(parts + [ids[i][shared_of[i] :] for i in order])
    position_ids = np.concatenate(
        [np.arange(shared) for shared in part_lengths] + [np.arange(shared_of[i], len(ids[i])) for i in order]
    )
    layout = RowLayout(tuple(part_lengths), tuple(segment_lengths), tuple(part_of[i] for i in order))
    starts = np.concatenate([part_starts, segment_starts, [layout.tokens]])
    return dict(
        input_ids=torch.from_numpy(row).unsqueeze(0),
        attention_mask=None,
        loss_weights=torch.from_numpy(np.concatenate(part_weights + segment_weights)).unsqueeze(0),
        # The examples' tokens, though the shared ones are computed once: tok/s then counts the data
        # trained through, as an unshared row's does, and the data check's time estimate still holds.
        tokens=sum(len(x) for x in ids),
        position_ids=torch.from_numpy(position_ids).unsqueeze(0),
        sequence_starts=torch.tensor(starts, dtype=torch.int32),
        shared_layout=layout,
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
