"""Padding-free batches: a batch's examples laid end to end in one row, each attending only to itself.

The linear layers, norms and the output layer (nearly all of the FLOPs) then run on real tokens
only, with no padding to compute and mask. Attention must not cross examples: transformers 5.23
turns packed `position_ids` into a block-diagonal (tokens x tokens) mask for SDPA, which on CPU
computes the whole square (8 x 256-token examples: 8x the attention FLOPs of the padded batch).
Instead the model gets `VARLEN_ATTENTION`, which runs attention once per example (causal, no
mask) on its slice of the row, found from `cu_seq_lens_q` (the example boundaries, as
flash-attention's varlen kernels take them): on CPU with `_CpuVarlenAttention`; on a CUDA GPU with
PyTorch's own varlen flash attention (`torch.nn.attention.varlen`), or, where `flash_attn` is
installed, transformers' `flash_attention_2`, which reads the same boundaries; elsewhere with SDPA
per example. Calls without boundaries (padded batches, generation) fall through to transformers'
own SDPA function unchanged.
"""

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

VARLEN_ATTENTION = "tuneforge_varlen_sdpa"


def varlen_sdpa_attention(
    module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs
):
    boundaries = kwargs.get("cu_seq_lens_q")
    if boundaries is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    # query (1, heads, tokens, head_dim); key, value (1, kv_heads, tokens, head_dim)
    lengths = (boundaries[1:] - boundaries[:-1]).tolist()
    dropout_p = dropout if module.training else 0.0
    if query.device.type == "cpu" and dropout_p == 0.0:
        return _CpuVarlenAttention.apply(query, key, value, lengths, scaling), None
    flash_dtype = query.dtype in (torch.bfloat16, torch.float16)  # the flash kernels' own; fp32 runs per example
    if query.device.type == "cuda" and dropout_p == 0.0 and flash_dtype and _TORCH_VARLEN is not None:
        return _cuda_varlen(query, key, value, boundaries, max(lengths), scaling), None
    # split, not slicing: the backward of a split is one concatenation; that of each slice a
    # zero-filled copy of the whole tensor (measured: 9 % of a step).
    outputs = [
        F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling, enable_gqa=True, dropout_p=dropout_p)
        for q, k, v in zip(query.split(lengths, 2), key.split(lengths, 2), value.split(lengths, 2))
    ]
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None  # (1, tokens, heads, head_dim)


class _CpuVarlenAttention(torch.autograd.Function):
    """Causal attention within each example of a padding-free row, on CPU, through the flash kernels.

    Two things SDPA's own autograd does not: the kernels run in fp32 whatever the inputs' dtype
    (on this CPU, without AMX, the bf16 kernels were slower: a layer of 8 x ~220 tokens forward and
    backward 61.6 ms in bf16, 45.5 ms in fp32, with gradients closer to an fp32 reference), and
    the output is kept for backward once, in the (1, tokens, heads, head_dim) layout the output
    projection reads, instead of a second copy in SDPA's layout. The kernels handle grouped-query
    heads themselves.
    """

    @staticmethod
    def forward(ctx, query, key, value, lengths: list[int], scale: float | None):
        outputs, logsumexps = [], []
        for q, k, v in zip(query.split(lengths, 2), key.split(lengths, 2), value.split(lengths, 2)):
            out, logsumexp = _FLASH(q.float(), k.float(), v.float(), 0.0, True, scale=scale)
            outputs.append(out.transpose(1, 2))
            logsumexps.append(logsumexp)
        output = torch.cat(outputs, dim=1).to(query.dtype)  # (1, tokens, heads, head_dim)
        ctx.save_for_backward(query, key, value, output, *logsumexps)
        ctx.lengths, ctx.scale = lengths, scale
        return output

    @staticmethod
    def backward(ctx, output_grad):
        query, key, value, output, *logsumexps = ctx.saved_tensors
        lengths = ctx.lengths
        grads = [
            _FLASH_BACKWARD(
                g.transpose(1, 2).float(),
                q.float(),
                k.float(),
                v.float(),
                o.transpose(1, 2).float(),
                logsumexp,
                0.0,
                True,
                scale=ctx.scale,
            )
            for q, k, v, o, g, logsumexp in zip(
                query.split(lengths, 2),
                key.split(lengths, 2),
                value.split(lengths, 2),
                output.split(lengths, 1),
                output_grad.split(lengths, 1),
                logsumexps,
            )
        ]
        query_grad, key_grad, value_grad = (
            torch.cat(parts, dim=2).to(tensor.dtype) for parts, tensor in zip(zip(*grads), (query, key, value))
        )
        return query_grad, key_grad, value_grad, None, None


_FLASH = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_FLASH_BACKWARD = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward


try:  # PyTorch's varlen flash attention (CUDA only)
    from torch.nn.attention.varlen import varlen_attn as _TORCH_VARLEN
except ImportError:
    _TORCH_VARLEN = None


def _cuda_varlen(query, key, value, boundaries, longest: int, scale):
    """All examples in one kernel call: (1, heads, tokens, dim) in, (1, tokens, heads, dim) out."""
    import inspect

    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (tokens, heads, dim)
    if k.shape[1] != q.shape[1]:  # grouped-query heads: the kernel takes as many key heads as queries
        k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))
    starts = boundaries.to(device=q.device, dtype=torch.int32)
    causal = (
        {"is_causal": True}
        if "is_causal" in inspect.signature(_TORCH_VARLEN).parameters  # torch 2.9-2.11
        else {"window_size": (-1, 0)}  # later: causal is a window reaching back without end
    )
    out = _TORCH_VARLEN(q, k, v, starts, starts, longest, longest, scale=scale, **causal)
    return out.unsqueeze(0)


def varlen_mask(*args, attention_mask=None, **kwargs):
    """No mask for a padding-free row (the boundaries do its work); the SDPA mask for padded batches."""
    return None if attention_mask is None else sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


AttentionInterface.register(VARLEN_ATTENTION, varlen_sdpa_attention)
AttentionMaskInterface.register(VARLEN_ATTENTION, varlen_mask)


def use_varlen_attention(causal_lm, device: str = "cpu") -> None:
    if device.startswith("cuda") and _flash_attn_installed():
        causal_lm.set_attn_implementation("flash_attention_2")
    else:
        causal_lm.set_attn_implementation(VARLEN_ATTENTION)


def _flash_attn_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("flash_attn") is not None


def model_inputs(position_ids: torch.Tensor, sequence_starts: torch.Tensor) -> dict:
    """The keyword arguments a padding-free row passes to the model: positions restarting at 0 for
    each example (for the rotary embeddings) and the example boundaries (for the attention)."""
    longest = int((sequence_starts[1:] - sequence_starts[:-1]).max())
    return {
        "position_ids": position_ids,
        "cu_seq_lens_q": sequence_starts,
        "cu_seq_lens_k": sequence_starts,
        "max_length_q": longest,
        "max_length_k": longest,
    }
