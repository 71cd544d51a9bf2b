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

A row whose examples share their first tokens can hold them once (shared_prefix.py); its calls carry
`shared_prefix_length` and go to `shared_prefix_attention`.
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
    dropout_p = dropout if module.training else 0.0
    shared = kwargs.get("shared_prefix_length")
    if shared:  # the examples' common prefix once, then each example's rest (shared_prefix.py)
        return shared_prefix_attention(query, key, value, boundaries, shared, scaling, dropout_p), None
    lengths = (boundaries[1:] - boundaries[:-1]).tolist()
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


def model_inputs(position_ids: torch.Tensor, sequence_starts: torch.Tensor, shared_prefix: int = 0) -> dict:
    """The keyword arguments a padding-free row passes to the model: positions restarting at 0 for
    each example (for the rotary embeddings) and the example boundaries (for the attention). With
    `shared_prefix`, the row starts with that many tokens every example shares, and the boundaries
    are those of the shared part and of each example's rest (shared_prefix.py)."""
    longest = int((sequence_starts[1:] - sequence_starts[:-1]).max())
    inputs = {
        "position_ids": position_ids,
        "cu_seq_lens_q": sequence_starts,
        "cu_seq_lens_k": sequence_starts,
        "max_length_q": longest,
        "max_length_k": longest,
    }
    if shared_prefix:  # passed on by the model to each attention call, like the boundaries
        inputs["shared_prefix_length"] = shared_prefix
    return inputs


# ------------------------------------------------------- shared-prefix rows (shared_prefix.py)
def shared_prefix_attention(query, key, value, boundaries, shared: int, scale, dropout_p: float = 0.0):
    """Attention over a shared-prefix row: query (1, heads, tokens, dim), key and value
    (1, kv_heads, tokens, dim); `boundaries` the shared part's and segments' starts and the end.
    Returns (1, tokens, heads, dim), the layout the output projection reads."""
    segment_lengths = (boundaries[2:] - boundaries[1:-1]).tolist()
    if query.device.type == "cpu" and dropout_p == 0.0:
        return SharedPrefixAttention.apply(query, key, value, shared, segment_lengths, scale)
    return _attention_per_segment(query, key, value, shared, segment_lengths, scale, dropout_p)


class SharedPrefixAttention(torch.autograd.Function):
    """The shared-prefix row's attention on CPU, through the fp32 flash kernels (as _CpuVarlenAttention,
    for the same reasons): the shared part causally over itself; all segments' queries at once over
    the shared keys (no mask); each segment causally over its own keys; the last two merged by their
    logsumexps into what one softmax over [shared keys, own keys] gives.

    Backward runs each call's backward with the merged output and logsumexp: the flash backward
    computes the probabilities as exp(score - logsumexp) and the softmax correction from the output,
    so with the merged ones each part gets its exact share of the gradient. The shared keys' and
    values' gradients sum their own part's and every segment's.
    """

    @staticmethod
    def forward(ctx, query, key, value, shared: int, segment_lengths: list[int], scale: float | None):
        q, k, v = (t.float() for t in (query, key, value))
        shared_q, shared_k, shared_v = (t[:, :, :shared] for t in (q, k, v))
        rest_q, rest_k, rest_v = (t[:, :, shared:] for t in (q, k, v))
        shared_out, shared_logsumexp = _FLASH(shared_q, shared_k, shared_v, 0.0, True, scale=scale)
        cross_out, cross_logsumexp = _FLASH(rest_q, shared_k, shared_v, 0.0, False, scale=scale)
        own = [
            _FLASH(q_part, k_part, v_part, 0.0, True, scale=scale)
            for q_part, k_part, v_part in zip(
                rest_q.split(segment_lengths, 2), rest_k.split(segment_lengths, 2), rest_v.split(segment_lengths, 2)
            )
        ]
        own_out = torch.cat([out.transpose(1, 2) for out, _ in own], dim=1)  # (1, rest, heads, dim)
        own_logsumexp = torch.cat([logsumexp for _, logsumexp in own], dim=2)  # (1, heads, rest)
        logsumexp = torch.logaddexp(cross_logsumexp, own_logsumexp)

        def share(part_logsumexp):  # each part's share of the merged softmax, per (token, head)
            return (part_logsumexp - logsumexp).exp_().transpose(1, 2).unsqueeze(-1)

        rest_out = cross_out.transpose(1, 2) * share(cross_logsumexp) + own_out * share(own_logsumexp)
        output = torch.cat([shared_out.transpose(1, 2), rest_out], dim=1).to(query.dtype)  # (1, tokens, heads, dim)
        ctx.save_for_backward(query, key, value, output, shared_logsumexp, logsumexp)
        ctx.shared, ctx.segment_lengths, ctx.scale = shared, segment_lengths, scale
        return output

    @staticmethod
    def backward(ctx, output_grad):
        query, key, value, output, shared_logsumexp, logsumexp = ctx.saved_tensors
        shared, lengths, scale = ctx.shared, ctx.segment_lengths, ctx.scale
        q, k, v = (t.float() for t in (query, key, value))
        grad, out = (t.transpose(1, 2).float() for t in (output_grad, output))  # (1, heads, tokens, dim)
        shared_q, shared_k, shared_v, shared_grad, shared_out = (t[:, :, :shared] for t in (q, k, v, grad, out))
        rest_q, rest_k, rest_v, rest_grad, rest_out = (t[:, :, shared:] for t in (q, k, v, grad, out))

        shared_dq, shared_dk, shared_dv = _FLASH_BACKWARD(
            shared_grad, shared_q, shared_k, shared_v, shared_out, shared_logsumexp, 0.0, True, scale=scale
        )
        cross_dq, cross_dk, cross_dv = _FLASH_BACKWARD(
            rest_grad, rest_q, shared_k, shared_v, rest_out, logsumexp, 0.0, False, scale=scale
        )
        own = [
            _FLASH_BACKWARD(g, q_part, k_part, v_part, o, part_logsumexp.contiguous(), 0.0, True, scale=scale)
            for g, q_part, k_part, v_part, o, part_logsumexp in zip(
                *(t.split(lengths, 2) for t in (rest_grad, rest_q, rest_k, rest_v, rest_out, logsumexp))
            )
        ]
        own_dq, own_dk, own_dv = (torch.cat(parts, dim=2) for parts in zip(*own))
        query_grad = torch.cat([shared_dq, cross_dq + own_dq], dim=2)
        key_grad = torch.cat([shared_dk + cross_dk, own_dk], dim=2)
        value_grad = torch.cat([shared_dv + cross_dv, own_dv], dim=2)
        return (
            query_grad.to(query.dtype),
            key_grad.to(key.dtype),
            value_grad.to(value.dtype),
            None,
            None,
            None,
        )


def _attention_per_segment(query, key, value, shared: int, segment_lengths: list[int], scale, dropout_p: float):
    """Any device: SDPA on the shared part (causal), then on each segment over [shared keys, own
    keys] with a mask letting query i see the shared keys and its own keys 0..i. (SDPA's is_causal
    aligns top-left when there are more keys than queries, which is not this.)"""
    options = {"scale": scale, "enable_gqa": True, "dropout_p": dropout_p}
    shared_k, shared_v = key[:, :, :shared], value[:, :, :shared]
    outputs = [F.scaled_dot_product_attention(query[:, :, :shared], shared_k, shared_v, is_causal=True, **options)]
    for q, k, v in zip(*(t[:, :, shared:].split(segment_lengths, 2) for t in (query, key, value))):
        length = q.shape[2]
        visible = torch.ones(length, shared + length, dtype=torch.bool, device=q.device).tril(shared)
        keys, values = torch.cat([shared_k, k], dim=2), torch.cat([shared_v, v], dim=2)
        outputs.append(F.scaled_dot_product_attention(q, keys, values, attn_mask=visible, **options))
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous()
