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
its `shared_layout` and go to `shared_prefix_attention`.
"""

from dataclasses import dataclass
from functools import cached_property

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
    layout = kwargs.get("shared_layout")
    if layout is not None:  # each group's common prefix once, then each example's rest (shared_prefix.py)
        return shared_prefix_attention(query, key, value, layout, scaling, dropout_p), None
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
        q, k, v = (t.float() for t in (query, key, value))
        output = _tokens_first(query)
        logsumexps, start = [], 0
        for q_piece, k_piece, v_piece in zip(q.split(lengths, 2), k.split(lengths, 2), v.split(lengths, 2)):
            out, logsumexp = _FLASH(q_piece, k_piece, v_piece, 0.0, True, scale=scale)
            output[:, :, start : start + q_piece.shape[2]] = out
            logsumexps.append(logsumexp)
            start += q_piece.shape[2]
        output = output.transpose(1, 2)  # (1, tokens, heads, head_dim)
        ctx.save_for_backward(query, key, value, output, *logsumexps)
        ctx.lengths, ctx.scale = lengths, scale
        return output

    @staticmethod
    def backward(ctx, output_grad):
        query, key, value, output, *logsumexps = ctx.saved_tensors
        lengths = ctx.lengths
        q, k, v = (t.float() for t in (query, key, value))
        grad, out = (t.transpose(1, 2).float() for t in (output_grad, output))
        grads, start = [_tokens_first(t) for t in (query, key, value)], 0
        for *pieces, logsumexp in zip(*(t.split(lengths, 2) for t in (grad, q, k, v, out)), logsumexps):
            end = start + pieces[1].shape[2]
            for target, piece in zip(grads, _FLASH_BACKWARD(*pieces, logsumexp, 0.0, True, scale=ctx.scale)):
                target[:, :, start:end] = piece
            start = end
        return *grads, None, None


def _tokens_first(like: torch.Tensor) -> torch.Tensor:
    """An empty (1, heads, tokens, dim) tensor of `like`'s shape and dtype, laid out (1, tokens,
    heads, dim): the layout the projections' outputs were viewed from, so that the output
    projection reads the output, and autograd hands the gradients back to the projections, without
    a copy. The attention functions write each piece's result straight into it, cast on the way,
    instead of concatenating the pieces in fp32 and casting the whole (two passes more)."""
    return like.new_empty(1, like.shape[2], like.shape[1], like.shape[3]).transpose(1, 2)


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


def model_inputs(position_ids: torch.Tensor, sequence_starts: torch.Tensor, layout: "RowLayout | None" = None) -> dict:
    """The keyword arguments a padding-free row passes to the model: positions restarting at 0 for
    each example (for the rotary embeddings) and the example boundaries (for the attention). A
    shared-prefix row (shared_prefix.py) passes its `layout` too; the boundaries are then those of
    its shared parts and of each example's rest."""
    longest = int((sequence_starts[1:] - sequence_starts[:-1]).max())
    inputs = {
        "position_ids": position_ids,
        "cu_seq_lens_q": sequence_starts,
        "cu_seq_lens_k": sequence_starts,
        "max_length_q": longest,
        "max_length_k": longest,
    }
    if layout is not None:  # passed on by the model to each attention call, like the boundaries
        inputs["shared_layout"] = layout
    return inputs


# ------------------------------------------------------- shared-prefix rows (shared_prefix.py)
@dataclass(frozen=True)
class RowLayout:
    """A shared-prefix row's pieces, in row order: the groups' shared parts, then one segment per
    example. Segment i continues part `segment_part[i]` (its example's first tokens) or, at -1,
    stands alone (an example in no group). A group's segments lie next to each other, so that its
    segments' queries meet its part's keys in one call."""

    part_lengths: tuple[int, ...]
    segment_lengths: tuple[int, ...]
    segment_part: tuple[int, ...]

    def __post_init__(self):
        grouped = [part for part in self.segment_part if part >= 0]
        if grouped != sorted(grouped) or set(grouped) != set(range(len(self.part_lengths))):
            raise ValueError(f"each part's segments must lie together, in part order: {self.segment_part}")

    @property
    def shared_tokens(self) -> int:
        return sum(self.part_lengths)

    @property
    def tokens(self) -> int:
        return self.shared_tokens + sum(self.segment_lengths)

    @cached_property  # read by every layer's forward and backward
    def group_spans(self) -> list[tuple[int, int, int]]:
        """(part, start, end) per group: where its segments lie, counted from the first segment."""
        starts = [0]
        for length in self.segment_lengths:
            starts.append(starts[-1] + length)
        spans = []
        for part in range(len(self.part_lengths)):
            members = [i for i, p in enumerate(self.segment_part) if p == part]
            spans.append((part, starts[members[0]], starts[members[-1] + 1]))
        return spans


def shared_prefix_attention(query, key, value, layout: RowLayout, scale, dropout_p: float = 0.0):
    """Attention over a shared-prefix row: query (1, heads, tokens, dim), key and value
    (1, kv_heads, tokens, dim), laid out as `layout` says. Returns (1, tokens, heads, dim), the
    layout the output projection reads."""
    if query.device.type == "cpu" and dropout_p == 0.0:
        return SharedPrefixAttention.apply(query, key, value, layout, scale)
    return _attention_per_segment(query, key, value, layout, scale, dropout_p)


class SharedPrefixAttention(torch.autograd.Function):
    """The shared-prefix row's attention on CPU, through the fp32 flash kernels (as _CpuVarlenAttention,
    for the same reasons): each shared part causally over itself; each group's segments' queries at
    once over its part's keys (no mask); each segment causally over its own keys; the last two merged
    by their logsumexps into what one softmax over [part keys, own keys] gives. A segment in no group
    has only its own keys: its cross logsumexp is -inf, its share of the merge 0.

    Backward runs each call's backward with the merged output and logsumexp: the flash backward
    computes the probabilities as exp(score - logsumexp) and the softmax correction from the output,
    so with the merged ones each part gets its exact share of the gradient. A part's keys' and
    values' gradients sum its own call's and every one of its segments'.

    (Padding the pieces into one batched call per layer was tried: 11 % faster on 16 short chats
    with a 23-token part, 34 % slower with a 200-token part and 8 x 40-token segments, the gathers'
    copies outweighing the calls saved; benchmarks/RESULTS.md, 2026-12-02 late evening.)
    """

    @staticmethod
    def forward(ctx, query, key, value, layout: RowLayout, scale: float | None):
        q, k, v = (t.float() for t in (query, key, value))
        shared = layout.shared_tokens
        parts_q, parts_k, parts_v = (t[:, :, :shared].split(layout.part_lengths, 2) for t in (q, k, v))
        rest_q, rest_k, rest_v = (t[:, :, shared:] for t in (q, k, v))
        output, parts_logsumexp, start = _tokens_first(query), [], 0
        for part_q, part_k, part_v in zip(parts_q, parts_k, parts_v):
            out, logsumexp = _FLASH(part_q, part_k, part_v, 0.0, True, scale=scale)
            output[:, :, start : start + part_q.shape[2]] = out
            parts_logsumexp.append(logsumexp)
            start += part_q.shape[2]
        own = [
            _FLASH(q_piece, k_piece, v_piece, 0.0, True, scale=scale)
            for q_piece, k_piece, v_piece in zip(
                *(t.split(layout.segment_lengths, 2) for t in (rest_q, rest_k, rest_v))
            )
        ]
        rest_out = torch.cat([out.transpose(1, 2) for out, _ in own], dim=1)  # (1, rest, heads, dim)
        logsumexp = torch.cat([lse for _, lse in own], dim=2)  # (1, heads, rest): own keys only, until merged
        for part, begin, end in layout.group_spans:
            cross_out, cross_logsumexp = _FLASH(
                rest_q[:, :, begin:end], parts_k[part], parts_v[part], 0.0, False, scale=scale
            )
            own_logsumexp = logsumexp[:, :, begin:end]
            merged = torch.logaddexp(own_logsumexp, cross_logsumexp)
            # the part's keys' share of each (token, head)'s softmax; the own keys' is 1 minus it
            cross_share = (cross_logsumexp - merged).exp_().transpose(1, 2).unsqueeze(-1)
            rest_out[:, begin:end].lerp_(cross_out.transpose(1, 2), cross_share)
            own_logsumexp.copy_(merged)
        output = output.transpose(1, 2)  # (1, tokens, heads, dim)
        output[:, shared:] = rest_out
        ctx.save_for_backward(query, key, value, output, logsumexp, *parts_logsumexp)
        ctx.layout, ctx.scale = layout, scale
        return output

    @staticmethod
    def backward(ctx, output_grad):
        query, key, value, output, logsumexp, *parts_logsumexp = ctx.saved_tensors
        layout, scale = ctx.layout, ctx.scale
        shared, lengths = layout.shared_tokens, layout.segment_lengths
        q, k, v = (t.float() for t in (query, key, value))
        grad, out = (t.transpose(1, 2).float() for t in (output_grad, output))  # (1, heads, tokens, dim)
        parts_q, parts_k, parts_v, parts_grad, parts_out = (
            t[:, :, :shared].split(layout.part_lengths, 2) for t in (q, k, v, grad, out)
        )
        rest_q, rest_k, rest_v, rest_grad, rest_out = (t[:, :, shared:] for t in (q, k, v, grad, out))

        parts = [
            _FLASH_BACKWARD(*tensors, part_logsumexp, 0.0, True, scale=scale)
            for *tensors, part_logsumexp in zip(parts_grad, parts_q, parts_k, parts_v, parts_out, parts_logsumexp)
        ]
        own = [
            _FLASH_BACKWARD(g, q_piece, k_piece, v_piece, o, piece_logsumexp.contiguous(), 0.0, True, scale=scale)
            for g, q_piece, k_piece, v_piece, o, piece_logsumexp in zip(
                *(t.split(lengths, 2) for t in (rest_grad, rest_q, rest_k, rest_v, rest_out, logsumexp))
            )
        ]
        rest_dq = torch.cat([dq for dq, _, _ in own], dim=2)
        parts_dk, parts_dv = [dk for _, dk, _ in parts], [dv for _, _, dv in parts]
        for part, begin, end in layout.group_spans:
            dq, dk, dv = _FLASH_BACKWARD(
                *(t[:, :, begin:end] for t in (rest_grad, rest_q)),
                parts_k[part],
                parts_v[part],
                rest_out[:, :, begin:end],
                logsumexp[:, :, begin:end].contiguous(),
                0.0,
                False,
                scale=scale,
            )
            rest_dq[:, :, begin:end] += dq
            parts_dk[part] += dk
            parts_dv[part] += dv
        query_grad, key_grad, value_grad = (_tokens_first(t) for t in (query, key, value))
        query_grad[:, :, shared:] = rest_dq
        key_grad[:, :, shared:] = torch.cat([dk for _, dk, _ in own], dim=2)
        value_grad[:, :, shared:] = torch.cat([dv for _, _, dv in own], dim=2)
        start = 0
        for (dq, _, _), dk, dv in zip(parts, parts_dk, parts_dv):
            end = start + dq.shape[2]
            query_grad[:, :, start:end], key_grad[:, :, start:end], value_grad[:, :, start:end] = dq, dk, dv
            start = end
        return query_grad, key_grad, value_grad, None, None


def _attention_per_segment(query, key, value, layout: RowLayout, scale, dropout_p: float):
    """Any device: SDPA on each shared part (causal), then on each segment over [its part's keys,
    own keys] with a mask letting query i see the part's keys and its own keys 0..i. (SDPA's
    is_causal aligns top-left when there are more keys than queries, which is not this.)"""
    options = {"scale": scale, "enable_gqa": True, "dropout_p": dropout_p}
    pieces = [*layout.part_lengths, *layout.segment_lengths]
    queries, keys, values = (t.split(pieces, 2) for t in (query, key, value))
    parts = len(layout.part_lengths)
    outputs = [
        F.scaled_dot_product_attention(q, k, v, is_causal=True, **options)
        for q, k, v in zip(queries[:parts], keys[:parts], values[:parts])
    ]
    for q, k, v, part in zip(queries[parts:], keys[parts:], values[parts:], layout.segment_part):
        if part < 0:
            outputs.append(F.scaled_dot_product_attention(q, k, v, is_causal=True, **options))
            continue
        length, shared = q.shape[2], layout.part_lengths[part]
        visible = torch.ones(length, shared + length, dtype=torch.bool, device=q.device).tril(shared)
        k, v = torch.cat([keys[part], k], dim=2), torch.cat([values[part], v], dim=2)
        outputs.append(F.scaled_dot_product_attention(q, k, v, attn_mask=visible, **options))
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous()
