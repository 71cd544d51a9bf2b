"""Padding-free batches: a batch's examples laid end to end in one row, each attending only to itself.

The linear layers, norms and the output layer (nearly all of the FLOPs) then run on real tokens
only, with no padding to compute and mask. Attention must not cross examples: transformers 5.23
turns packed `position_ids` into a block-diagonal (tokens x tokens) mask for SDPA, which on CPU
computes the whole square (8 x 256-token examples: 8x the attention FLOPs of the padded batch).
Instead the model gets `VARLEN_ATTENTION`, which runs SDPA once per example (causal, no mask) on
its slice of the row, found from `cu_seq_lens_q` (the example boundaries, as flash-attention's
varlen kernels take them). Calls without boundaries (padded batches, generation) fall through to
transformers' own SDPA function unchanged.
"""

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

VARLEN_ATTENTION = "tuneforge_varlen_sdpa"


def varlen_sdpa_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    boundaries = kwargs.get("cu_seq_lens_q")
    if boundaries is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    # query (1, heads, tokens, head_dim); key, value (1, kv_heads, tokens, head_dim). split, not
    # slicing: the backward of a split is one concatenation; that of each slice a zero-filled copy
    # of the whole tensor (measured: 9 % of a step).
    lengths = (boundaries[1:] - boundaries[:-1]).tolist()
    outputs = [F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling, enable_gqa=True,
                                              dropout_p=dropout if module.training else 0.0)
               for q, k, v in zip(query.split(lengths, 2), key.split(lengths, 2), value.split(lengths, 2))]
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None  # (1, tokens, heads, head_dim)


def varlen_mask(*args, attention_mask=None, **kwargs):
    """No mask for a padding-free row (the boundaries do its work); the SDPA mask for padded batches."""
    return None if attention_mask is None else sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


AttentionInterface.register(VARLEN_ATTENTION, varlen_sdpa_attention)
AttentionMaskInterface.register(VARLEN_ATTENTION, varlen_mask)


def use_varlen_attention(causal_lm) -> None:
    causal_lm.set_attn_implementation(VARLEN_ATTENTION)


def model_inputs(position_ids: torch.Tensor, sequence_starts: torch.Tensor) -> dict:
    """The keyword arguments a padding-free row passes to the model: positions restarting at 0 for
    each example (for the rotary embeddings) and the example boundaries (for the attention)."""
    longest = int((sequence_starts[1:] - sequence_starts[:-1]).max())
    return {"position_ids": position_ids, "cu_seq_lens_q": sequence_starts, "cu_seq_lens_k": sequence_starts,
            "max_length_q": longest, "max_length_k": longest}
