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

Both give the same forward values as transformers' layers, op for op, and their backward runs the
same ops autograd would (tests/test_speed_tricks.py compares losses and gradients). `use_lean_activations`
swaps them into a model's layers in place; a model whose norm or MLP is not Llama's is left alone.
"""

import types

import torch
import torch.nn.functional as F


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps: float):
        x32 = x.float()
        inverse_rms = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
        normed = (x32 * inverse_rms).to(x.dtype)
        ctx.save_for_backward(x, weight, inverse_rms)
        return weight * normed

    @staticmethod
    def backward(ctx, grad):
        x, weight, inverse_rms = ctx.saved_tensors
        x32 = x.float()
        normed32 = x32 * inverse_rms
        weight_grad = None
        if ctx.needs_input_grad[1]:
            weight_grad = (grad * normed32.to(x.dtype)).reshape(-1, grad.shape[-1]).sum(0).to(weight.dtype)
        if not ctx.needs_input_grad[0]:  # the first layer's input, the frozen embeddings' output (LoRA)
            return None, weight_grad, None
        # Autograd's chain for x -> fp32 -> x * rsqrt(mean(x^2) + eps) -> input dtype -> * weight.
        normed_grad = (grad * weight).float()
        rms_grad = (normed_grad * x32).sum(-1, keepdim=True) * (-0.5 * inverse_rms.pow(3))
        x_grad = normed_grad * inverse_rms + rms_grad * (2.0 / x.shape[-1]) * x32
        return x_grad.to(x.dtype), weight_grad, None


def lean_rms_norm(module, hidden_states: torch.Tensor) -> torch.Tensor:
    """`LlamaRMSNorm.forward`, keeping the input and one fp32 number per token for backward."""
    if not torch.is_grad_enabled():
        return module.__class__.forward(module, hidden_states)
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
