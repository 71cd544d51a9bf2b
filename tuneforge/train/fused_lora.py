"""A LoRA layer's frozen matmul and its adapter in one autograd function, with no elementwise passes.

peft computes `base(x) + lora_B(lora_A(x)) * scaling`: besides the three matmuls, the forward writes
the adapter's (tokens, out) output, scales it into a second and adds it into a third, and the
backward runs each of those steps in reverse, plus an addition of the two paths' input gradients.
On CPU those passes over (tokens, out) tensors cost as much as the adapter's thin matmuls
themselves. Here the scaling is folded into lora_B (a (out, rank) matrix), the adapter's output is
accumulated into the base output by the matmul itself (`addmm_`), and backward accumulates the
input gradient the same way:

    forward:   down = x A^T;            out = x W^T (+ bias);  out += down (s B)^T
    backward:  down_grad = dy (s B);    dx = dy W;  dx += down_grad A
               dA = down_grad^T x;      dB = s dy^T down

Measured on SmolLM2's shapes (1,774 tokens, bf16, forward and backward): 576 -> 1536 29.7 ->
21.7 ms, 576 -> 576 9.4 -> 8.6 ms (benchmarks/RESULTS.md). Backward keeps what peft's does: the
input, `down` (tokens x rank) and the weights.

Plain LoRA only: a layer with dropout on the adapter's input, DoRA or another variant, several
active adapters, a merged or disabled adapter, or a base layer other than `nn.Linear` runs peft's
own forward.
"""

import torch
from peft.tuners.lora.layer import Linear as PeftLoraLinear
from torch import nn


class _LoraLinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scaling: float, dtype: torch.dtype):
        # x (..., in); weight (out, in); lora_a (rank, in); lora_b (out, rank); all matmuls in `dtype`
        flat = x.reshape(-1, x.shape[-1]).to(dtype)
        down = flat @ lora_a.to(dtype).T  # (tokens, rank)
        weight_t = weight.to(dtype).T
        out = flat @ weight_t if bias is None else torch.addmm(bias.to(dtype), flat, weight_t)
        out.addmm_(down, (lora_b * scaling).to(dtype).T)
        # The originals, not their dtype copies: a bf16 copy of an fp32 base weight kept for every
        # layer until backward would be the model again; recasting one in backward costs little.
        ctx.save_for_backward(flat, down, weight, lora_a, lora_b)
        ctx.has_bias, ctx.scaling, ctx.dtype, ctx.x_shape, ctx.x_dtype = (
            bias is not None,
            scaling,
            dtype,
            x.shape,
            x.dtype,
        )
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, out_grad):
        flat, down, weight, lora_a, lora_b = ctx.saved_tensors
        dtype, scaling = ctx.dtype, ctx.scaling
        grad = out_grad.reshape(-1, out_grad.shape[-1]).to(dtype)  # (tokens, out)
        a = lora_a.to(dtype)
        down_grad = grad @ (lora_b * scaling).to(dtype)  # (tokens, rank)
        x_grad = weight_grad = bias_grad = a_grad = b_grad = None
        if ctx.needs_input_grad[0]:
            x_grad = grad @ weight.to(dtype)
            x_grad.addmm_(down_grad, a)
            x_grad = x_grad.view(ctx.x_shape).to(ctx.x_dtype)
        if ctx.needs_input_grad[1]:
            weight_grad = (grad.T @ flat).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            bias_grad = grad.sum(0).to(weight.dtype)
        if ctx.needs_input_grad[3]:
            a_grad = (down_grad.T @ flat).to(lora_a.dtype)
        if ctx.needs_input_grad[4]:
            b_grad = (grad.T @ down).to(lora_b.dtype).mul_(scaling)
        return x_grad, weight_grad, bias_grad, a_grad, b_grad, None, None


class FusedLoraLinear(PeftLoraLinear):
    """peft's LoRA `Linear` with plain LoRA run as one `_LoraLinearFunction` (see the module's docstring)."""

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        adapter = None if args or kwargs else self._plain_adapter()
        if adapter is None:
            return super().forward(x, *args, **kwargs)
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        base = self.base_layer
        if not torch.is_autocast_enabled(device) and base.weight.dtype != dtype:
            return super().forward(x)  # mixed dtypes without autocast: peft's behaviour, whatever it is
        with torch.autocast(device, enabled=False):  # the dtypes are chosen explicitly above
            return _LoraLinearFunction.apply(
                x,
                base.weight,
                base.bias,
                self.lora_A[adapter].weight,
                self.lora_B[adapter].weight,
                float(self.scaling[adapter]),
                dtype,
            )

    def _plain_adapter(self) -> str | None:
        """The one active adapter, when it is plain LoRA the fused function computes exactly."""
        if self.disable_adapters or self.merged or len(self.active_adapters) != 1:
            return None
        adapter = self.active_adapters[0]
        if adapter not in self.lora_A or adapter in self.lora_variant:
            return None
        plain = (
            type(self.lora_A[adapter]) is nn.Linear
            and type(self.lora_B[adapter]) is nn.Linear
            and self.lora_B[adapter].bias is None
            and isinstance(self.lora_dropout[adapter], nn.Identity)
            and type(self.base_layer) is nn.Linear
        )
        return adapter if plain else None


def fuse_lora_layers(model) -> int:
    """Give every peft LoRA `Linear` the fused forward; returns how many layers."""
    fused = 0
    for module in model.modules():
        if type(module) is PeftLoraLinear:
            module.__class__ = FusedLoraLinear  # same parameters, same state-dict names
            fused += 1
    return fused
