"""Llama's RMSNorm and SiLU-gated MLP with fewer activations kept for the backward pass.

What autograd keeps for a training step is most of its peak memory (benchmarks/RESULTS.md: 1.58 GB
of saved tensors for a LoRA step of 2,021 tokens on SmolLM2-135M, against 0.3 GB of weights), and two
of transformers' layers keep more than their backward needs:

- `LlamaRMSNorm` computes in fp32, so autograd keeps an fp32 copy of every normed input (twice the
  bytes of the bf16 input, twice per layer). `lean_rms_norm` keeps the input as it came and one fp32
  number per token (the reciprocal RMS), and rebuilds the fp32 copy in backward.
- `LlamaMLP` computes down(silu(gate) * up): autograd keeps gate, up, silu(gate) and the product,
  four intermediate-wide tensors. `silu_mul` keeps gate and up and recomputes silu(gate) in
  backward, an elementwise op; the product is still kept, by down's own backward.

The MLP gives the same forward values as transformers' layer, op for op, and its backward runs the
same ops autograd would; the norm computes the same formula in fewer passes over memory (its
docstring says how close). tests/test_speed_tricks.py compares losses and gradients. `use_lean_activations`
swaps them into a model's layers in place; a model whose norm or MLP is not Llama's is left alone.
"""

import types

import torch
import torch.nn.functional as F


class _RMSNorm(torch.autograd.Function):
    """weight x round(x * rsqrt(mean(x^2) + eps)), the rounding to x's dtype, as transformers computes
    it, in fewer passes over the (tokens, hidden) tensors: on a CPU these passes, not the FLOPs, are
    the norm's cost. Forward reads x once for the fp32 sum of squares (`vector_norm` accumulates in
    fp32 without an fp32 copy of x) and writes the product in x's dtype straight from its fp32
    computation (`out=`); backward folds the chain rule into one multiply-add. SmolLM2, bf16,
    forward and backward: 467 tokens 1.32 -> 0.91 ms, 2,431 tokens 7.9 -> 4.4 ms (two norms a layer).
    The sums run in another order than `mean`'s: a bf16 output differs in ~1 element in 10^5, by one
    rounding step; gradients agree to ~1e-5 relative."""

    @staticmethod
    def forward(ctx, x, weight, eps: float):
        output, inverse_rms = _rms_norm(x, weight, eps)
        ctx.save_for_backward(x, weight, inverse_rms)
        return output

    @staticmethod
    def backward(ctx, grad):
        x, weight, inverse_rms = ctx.saved_tensors
        weight_grad = None
        if ctx.needs_input_grad[1]:
            normed = torch.mul(x, inverse_rms, out=torch.empty_like(x))
            weight_grad = (grad * normed).reshape(-1, grad.shape[-1]).sum(0).to(weight.dtype)
        if not ctx.needs_input_grad[0]:  # the first layer's input, the frozen embeddings' output (LoRA)
            return None, weight_grad, None
        # With r = rsqrt(mean(x^2) + eps) and g = grad x weight (fp32):
        #   d/dx = g r - x r^3 sum(g x) / hidden
        normed_grad = torch.mul(grad, weight, out=torch.empty(grad.shape, dtype=torch.float32))
        coefficient = (normed_grad * x).sum(-1, keepdim=True).mul_(inverse_rms.pow(3)).div_(-x.shape[-1])
        x_grad = normed_grad.mul_(inverse_rms).addcmul_(x, coefficient)
        return x_grad.to(x.dtype), weight_grad, None


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The norm's output, and rsqrt(mean(x^2) + eps) per token (fp32, shape (..., 1))."""
    inverse_rms = _inverse_rms(x, eps)
    return weight * torch.mul(x, inverse_rms, out=torch.empty_like(x)), inverse_rms


def _inverse_rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    squares = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=torch.float32).square_()
    return squares.div_(x.shape[-1]).add_(eps).rsqrt_()


def lean_rms_norm(module, hidden_states: torch.Tensor) -> torch.Tensor:
    """`LlamaRMSNorm.forward`, keeping the input and one fp32 number per token for backward (without
    gradients, validation's forward passes, nothing is kept: the same passes, no autograd node)."""
    if not torch.is_grad_enabled():
        return _rms_norm(hidden_states, module.weight, module.variance_epsilon)[0]
    return _RMSNorm.apply(hidden_states, module.weight, module.variance_epsilon)


class _SiluMul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up):
        ctx.save_for_backward(gate, up)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, grad):
        gate, up = ctx.saved_tensors
        return torch.ops.aten.silu_backward(grad * up, gate), grad * F.silu(gate)


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up, keeping only gate and up for backward."""
    return _SiluMul.apply(gate, up) if torch.is_grad_enabled() else F.silu(gate) * up


def lean_mlp(module, x: torch.Tensor) -> torch.Tensor:
    """`LlamaMLP.forward` with `silu_mul`."""
    return module.down_proj(silu_mul(module.gate_proj(x), module.up_proj(x)))


def use_lean_activations(model) -> int:
    """Swap `lean_rms_norm` and `lean_mlp` into every Llama-style norm and MLP of `model`; how many."""
    swapped = 0
    for module in model.modules():
        kind = type(module).__name__
        if kind.endswith("RMSNorm") and hasattr(module, "variance_epsilon") and _is_llama_norm(module):
            module.forward = types.MethodType(lean_rms_norm, module)
            swapped += 1
        elif (
            kind.endswith("MLP")
            and all(hasattr(module, n) for n in ("gate_proj", "up_proj", "down_proj"))
            and getattr(getattr(module, "config", None), "hidden_act", None) == "silu"
            and not getattr(module.config, "mlp_bias", False)
        ):
            module.forward = types.MethodType(lean_mlp, module)
            swapped += 1
    return swapped


def _is_llama_norm(module) -> bool:
    # Gemma's norm scales by (1 + weight), others add a bias or differ otherwise: only a norm whose
    # forward is Llama's code (transformers copies it into Mistral, Qwen2 and others) is swapped.
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    theirs, llama = type(module).forward.__code__, LlamaRMSNorm.forward.__code__
    return (theirs.co_code, theirs.co_consts, theirs.co_names) == (llama.co_code, llama.co_consts, llama.co_names)
