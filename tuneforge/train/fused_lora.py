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

Layers that read the same input (an attention's q, k and v projections; an MLP's gate and up) run
as one `_LoraSiblingsFunction` (`SiblingLayers`): one matmul for all their adapters' thin `A`
projections forward and one for their gradients backward, and one input gradient accumulated by
every layer's matmuls in place, instead of one per layer that autograd then adds up. The first
layer called (q_proj, gate_proj: the order Llama-family models call them in) computes all of
them; the others return their share when called with the same input. Measured on SmolLM2's shapes
(bf16, q, k, v, gate and up of one layer, forward and backward, best of 6): 467 tokens 7.50 ->
5.36 ms, 2,431 tokens 24.9 -> 21.7 ms.

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
        a, scaled_b = lora_a.to(dtype), (lora_b * scaling).to(dtype)
        down = flat @ a.T  # (tokens, rank)
        weight_t = weight.to(dtype).T
        out = flat @ weight_t if bias is None else torch.addmm(bias.to(dtype), flat, weight_t)
        out.addmm_(down, scaled_b.T)
        # The base weight as it is, not its dtype copy: a bf16 copy of an fp32 base weight kept for
        # every layer until backward would be the model again; recasting one in backward costs
        # little. The adapter's copies are (rank x width): kept, not cast again.
        ctx.save_for_backward(flat, down, weight, a, scaled_b)
        ctx.has_bias, ctx.scaling, ctx.dtype, ctx.x_shape, ctx.x_dtype, ctx.adapter_dtypes = (
            bias is not None,
            scaling,
            dtype,
            x.shape,
            x.dtype,
            (lora_a.dtype, lora_b.dtype),
        )
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, out_grad):
        flat, down, weight, a, scaled_b = ctx.saved_tensors
        dtype, scaling = ctx.dtype, ctx.scaling
        grad = out_grad.reshape(-1, out_grad.shape[-1]).to(dtype)  # (tokens, out)
        down_grad = grad @ scaled_b  # (tokens, rank)
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
            a_grad = (down_grad.T @ flat).to(ctx.adapter_dtypes[0])
        if ctx.needs_input_grad[4]:
            b_grad = (grad.T @ down).to(ctx.adapter_dtypes[1]).mul_(scaling)
        return x_grad, weight_grad, bias_grad, a_grad, b_grad, None, None


class _LoraSiblingsFunction(torch.autograd.Function):
    """`_LoraLinearFunction` for several layers reading one input x; `tensors` holds each layer's
    (weight, bias, lora_a, lora_b) in turn, `scalings` each one's scaling.

        forward:   down = x [A_1; ...; A_n]^T;   out_i = x W_i^T (+ bias_i);  out_i += down_i (s_i B_i)^T
        backward:  down_grad_i = dy_i (s_i B_i);  dx = sum_i dy_i W_i + [down_grad_1 ... down_grad_n] [A_1; ...; A_n]
                   [dA_1; ...; dA_n] = down_grad^T x;   dB_i = s_i dy_i^T down_i
    """

    @staticmethod
    def forward(ctx, x, scalings: tuple[float, ...], dtype: torch.dtype, *tensors):
        flat = x.reshape(-1, x.shape[-1]).to(dtype)
        weights, biases, lora_as, lora_bs = tensors[0::4], tensors[1::4], tensors[2::4], tensors[3::4]
        ranks = [a.shape[0] for a in lora_as]
        lora_a_all = torch.cat([a.to(dtype) for a in lora_as])  # (sum of ranks, width)
        scaled_bs = [(lora_b * scaling).to(dtype) for lora_b, scaling in zip(lora_bs, scalings)]
        down = flat @ lora_a_all.T  # (tokens, sum of ranks)
        outputs = []
        for weight, bias, scaled_b, layer_down in zip(weights, biases, scaled_bs, down.split(ranks, 1)):
            weight_t = weight.to(dtype).T
            out = flat @ weight_t if bias is None else torch.addmm(bias.to(dtype), flat, weight_t)
            out.addmm_(layer_down, scaled_b.T)
            outputs.append(out.view(*x.shape[:-1], out.shape[-1]))
        # as _LoraLinearFunction: the base weights as they are, the adapters' dtype copies
        ctx.save_for_backward(flat, down, lora_a_all, *scaled_bs, *tensors)
        ctx.scalings, ctx.dtype, ctx.ranks, ctx.x_shape, ctx.x_dtype = scalings, dtype, ranks, x.shape, x.dtype
        return tuple(outputs)

    @staticmethod
    def backward(ctx, *out_grads):
        flat, down, lora_a_all, *saved = ctx.saved_tensors
        dtype, ranks, needs = ctx.dtype, ctx.ranks, ctx.needs_input_grad
        scaled_bs, tensors = saved[: len(ranks)], saved[len(ranks) :]
        weights = tensors[0::4]
        # An output nobody used has no gradient: its layer contributes nothing.
        grads = [None if g is None else g.reshape(-1, g.shape[-1]).to(dtype) for g in out_grads]
        down_grad = torch.cat(
            [
                flat.new_zeros(flat.shape[0], rank) if grad is None else grad @ scaled_b
                for grad, scaled_b, rank in zip(grads, scaled_bs, ranks)
            ],
            dim=1,
        )  # (tokens, sum of ranks)
        x_grad = None
        if needs[0]:
            x_grad = down_grad @ lora_a_all
            for grad, weight in zip(grads, weights):
                if grad is not None:
                    x_grad.addmm_(grad, weight.to(dtype))
            x_grad = x_grad.view(ctx.x_shape).to(ctx.x_dtype)
        tensor_grads: list[torch.Tensor | None] = [None] * len(tensors)
        a_grads = (down_grad.T @ flat).split(ranks, 0)
        for i, (grad, layer_down) in enumerate(zip(grads, down.split(ranks, 1))):
            weight, bias, lora_a, lora_b = tensors[4 * i : 4 * i + 4]
            at = 3 + 4 * i  # this layer's weight among forward's inputs
            if needs[at + 2]:
                tensor_grads[4 * i + 2] = a_grads[i].to(lora_a.dtype)
            if grad is None:
                continue
            if needs[at]:
                tensor_grads[4 * i] = (grad.T @ flat).to(weight.dtype)
            if bias is not None and needs[at + 1]:
                tensor_grads[4 * i + 1] = grad.sum(0).to(bias.dtype)
            if needs[at + 3]:
                tensor_grads[4 * i + 3] = (grad.T @ layer_down).to(lora_b.dtype).mul_(ctx.scalings[i])
        return x_grad, None, None, *tensor_grads


class SiblingLayers:
    """LoRA layers of one block that read the same input, computed together (the module's docstring).

    The first member, called with x, runs all of them and keeps the others' outputs for x; each
    other member called with that same tensor returns its own and forgets it. A member called with
    another tensor, or before the first, computes alone, so a model that calls them differently
    gets the single-layer path, never a wrong output. Only while every member is plain LoRA with
    the same adapter, dtype and input width; otherwise each member runs its own path.
    """

    def __init__(self, members: list["FusedLoraLinear"]):
        self.members = members
        self._input: torch.Tensor | None = None
        self._ready: dict[int, torch.Tensor] = {}

    def take(self, member: "FusedLoraLinear", x: torch.Tensor) -> torch.Tensor | None:
        if x is not self._input or id(member) not in self._ready:
            return None
        out = self._ready.pop(id(member))
        if not self._ready:
            self._input = None
        return out

    def run(self, x: torch.Tensor, dtype: torch.dtype, adapter: str) -> torch.Tensor | None:
        """The first member's output, the others' kept for x; None when the group cannot run as one."""
        self._input, self._ready = None, {}
        if any(
            m._plain_adapter() != adapter or m.base_layer.weight.dtype != self.members[0].base_layer.weight.dtype
            for m in self.members
        ):
            return None
        tensors = []
        for member in self.members:
            base = member.base_layer
            tensors += [base.weight, base.bias, member.lora_A[adapter].weight, member.lora_B[adapter].weight]
        scalings = tuple(float(m.scaling[adapter]) for m in self.members)
        outputs = _LoraSiblingsFunction.apply(x, scalings, dtype, *tensors)
        self._input = x
        self._ready = {id(m): out for m, out in zip(self.members[1:], outputs[1:])}
        return outputs[0]


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
        siblings: SiblingLayers | None = getattr(self, "siblings", None)
        with torch.autocast(device, enabled=False):  # the dtypes are chosen explicitly above
            if siblings is not None:
                ready = siblings.take(self, x)
                if ready is None and siblings.members[0] is self:
                    ready = siblings.run(x, dtype, adapter)
                if ready is not None:
                    return ready
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


# Layers of one module that read the same input, the first named being the one called first.
SIBLING_NAMES = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


def fuse_lora_layers(model) -> int:
    """Give every peft LoRA `Linear` the fused forward, and group the ones that read the same input
    (SIBLING_NAMES); returns how many layers."""
    fused = 0
    for module in model.modules():
        if type(module) is PeftLoraLinear:
            module.__class__ = FusedLoraLinear  # same parameters, same state-dict names
            fused += 1
    for module in model.modules():
        for names in SIBLING_NAMES:
            members = [getattr(module, name, None) for name in names]
            if all(isinstance(m, FusedLoraLinear) for m in members):
                group = SiblingLayers(members)
                for member in members:
                    member.siblings = group  # a plain object, not a submodule: outside the state dict
    return fused
