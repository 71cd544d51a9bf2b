"""A lean decode step for llama-architecture models (Llama, SmolLM, Mistral without sliding window).

Hugging Face's forward spends ~20 % of a CPU decode step outside the matmuls (hooks, mask
building, cache objects, one module call per projection), and `F.linear` on CPU is far from the
memory bandwidth at batch 1-8, in bf16 most of all (measured on Zen 4: a bf16 576x1536 weight at
batch 1 in 460 us by `F.linear`, 130 us prepacked by oneDNN). `PackedLlama` keeps each layer's
weights packed for the step (q, k and v in one matrix) in oneDNN's blocked
layout (the one torch.compile's CPU backend uses for frozen weights; a plain (in, out) copy where
oneDNN is missing), with a preallocated KV cache, and runs one step in a few dozen tensor ops per
layer. Its math is the same as transformers' (RMSNorm in fp32, rotary embedding, grouped-query
attention by SDPA, SiLU-gated MLP); in fp32 its logits equal the model's, and tests/test_engine.py
checks that greedy decoding gives the same tokens as Hugging Face `generate`.

Precisions: fp32; bf16 (the default where the CPU has bf16 instructions); int8, weight-only: each
weight row stored as int8 with one bf16 scale (absmax / 127, as llama.cpp's Q8_0 but per row),
activations in bf16, multiplied by ATen's `_weight_int8pack_mm`. At batch 1 a decode step reads
every weight once, so its time is mostly memory traffic: int8 reads half of bf16's bytes (measured
1.3x bf16's tokens/s at batch 1, slower at batch 8; next-token loss +0.6 %, see benchmarks/RESULTS.md).
Opt-in (`--precision int8`).

Packed weights are a copy (half the model's size in bf16, a quarter in int8): `SharedModel.stepper`
packs again when the model's weights change (an adapter switch).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

SUPPORTED = {"LlamaForCausalLM", "MistralForCausalLM"}
PRECISIONS = ("auto", "fp32", "bf16", "int8")
INT8_KERNEL_MAX_ROWS = 8
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.bfloat16}  # of the activations


@dataclass
class Layer:
    """One decoder layer's weights; the matrices packed by `PackedLlama._pack` (x -> x @ W.T)."""

    input_norm: torch.Tensor  # (hidden,)
    qkv: torch.Tensor  # W: ((heads + 2 * kv_heads) * head_dim, hidden)
    output: torch.Tensor  # W: (hidden, heads * head_dim)
    post_norm: torch.Tensor  # (hidden,)
    gate: torch.Tensor  # W: (intermediate, hidden)
    up: torch.Tensor  # W: (intermediate, hidden)
    down: torch.Tensor  # W: (hidden, intermediate)


def supports(model) -> bool:
    config = model.config
    rope = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    return (
        type(model).__name__ in SUPPORTED
        and rope == "default"
        and config.hidden_act == "silu"
        and not getattr(config, "attention_bias", False)
        and not getattr(config, "mlp_bias", False)
        and getattr(config, "sliding_window", None) is None
        and getattr(config, "head_dim", None) in (None, config.hidden_size // config.num_attention_heads)
    )


def inference_precision(requested: str, model) -> str:
    """fp32, bf16 or int8 weights for decoding. auto: bf16 where the CPU/GPU runs it natively and the
    fast decode step supports the architecture (measured ~1.6x tokens/s at batch 1 on Zen 4, see
    benchmarks/RESULTS.md); greedy answers can then differ from fp32 ones after a few dozen tokens.
    int8 only when asked for: it costs a little accuracy."""
    from tuneforge.hardware import bf16_is_fast

    if requested == "auto":
        return "bf16" if bf16_is_fast() and supports(model) else "fp32"
    return "fp32" if not supports(model) else requested  # the model's own forward runs in its own dtype


def onednn_linear_works(dtype: torch.dtype) -> bool:
    """Whether oneDNN's prepacked linear (what torch.compile's CPU backend uses for frozen weights) runs here."""
    try:
        weight = torch.ops.mkldnn._reorder_linear_weight(torch.ones(8, 8, dtype=dtype), None)
        torch.ops.mkldnn._linear_pointwise(torch.ones(1, 8, dtype=dtype), weight, None, "none", [None], "")
        return True
    except (AttributeError, RuntimeError):
        return False


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An (out, in) weight as int8 rows and one bf16 scale per row: W ~ q * scale[:, None]."""
    weight = weight.float()
    scale = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12)
    return torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8), scale.to(torch.bfloat16)


class PackedLlama:
    def __init__(self, model, precision: str = "fp32"):
        config = model.config
        self.precision, self.dtype = precision, DTYPES[precision]
        self.onednn = precision != "int8" and onednn_linear_works(self.dtype)
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.hidden_size // self.heads
        self.eps = config.rms_norm_eps
        # Copies throughout, never views of the model's weights: an adapter merged into them later
        # (tied embeddings change with an adapted output layer) must not reach a packing made before.
        # The embedding is only looked up; its rows go to `dtype` right after, so storing it in
        # `dtype` changes nothing.
        self.embed = model.model.embed_tokens.weight.detach().to(self.dtype, copy=True)
        self.final_norm = model.model.norm.weight.detach().to(self.dtype, copy=True)
        self.lm_head = self._pack(model.lm_head.weight.detach())
        self.inv_freq = model.model.rotary_emb.inv_freq.float()
        self.rope_scaling = float(model.model.rotary_emb.attention_scaling)

        def packed(*linears):
            return self._pack(torch.cat([m.weight.detach() for m in linears], dim=0))

        self.layers = [
            Layer(
                layer.input_layernorm.weight.detach().to(self.dtype, copy=True),
                packed(layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj),
                packed(layer.self_attn.o_proj),
                layer.post_attention_layernorm.weight.detach().to(self.dtype, copy=True),
                packed(layer.mlp.gate_proj),
                packed(layer.mlp.up_proj),
                packed(layer.mlp.down_proj),
            )
            for layer in model.model.layers
        ]

    def _pack(self, weight: torch.Tensor):
        """An (out, in) weight in the layout `_mm` multiplies fastest."""
        if self.precision == "int8":
            return quantize_rows(weight)
        if self.onednn:
            return torch.ops.mkldnn._reorder_linear_weight(weight.to(self.dtype).contiguous(), None)
        return weight.t().to(self.dtype).contiguous()

    def _mm(self, x: torch.Tensor, weight) -> torch.Tensor:
        if self.onednn:
            return torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [None], "")
        if self.precision == "int8":
            rows, scales = weight
            flat = x.reshape(-1, x.shape[-1])
            # The int8 kernel is a matrix-vector product per row of x: 2x bf16's speed for one row,
            # even at 8 and 1.5-2x slower from 16 (a prefill), where a bf16 matmul on the rows converted
            # to bf16 wins (measured on 1536 x 576; benchmarks/RESULTS.md).
            if flat.shape[0] <= INT8_KERNEL_MAX_ROWS:
                out = torch.ops.aten._weight_int8pack_mm(flat, rows, scales)
            else:
                out = (flat @ rows.to(flat.dtype).T) * scales
            return out.view(*x.shape[:-1], -1)
        return x @ weight

    # At batch 1 a decode step is ~40 small ops per layer, and the ops between the matmuls cost a
    # third of the step (benchmarks/RESULTS.md); oneDNN applies an activation or an elementwise
    # product/sum with a second tensor as the matmul's epilogue, one call instead of two or three.
    def _mm_silu(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if self.onednn:
            return torch.ops.mkldnn._linear_pointwise(x, weight, None, "swish", [None], "")
        return F.silu(self._mm(x, weight))

    def _mm_then(self, x: torch.Tensor, weight: torch.Tensor, other: torch.Tensor, op: str) -> torch.Tensor:
        """x @ W then `op` ("add" or "mul") with `other`."""
        if self.onednn:
            return torch.ops.mkldnn._linear_pointwise.binary(x, other, weight, None, op)
        product = self._mm(x, weight)
        return product.add_(other) if op == "add" else product.mul_(other)

    def new_cache(self, batch: int, length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Keys and values per layer, (batch, kv_heads, length, head_dim), fp32 even for bf16 weights:
        SDPA's CPU kernel is 3-7x slower in bf16 than in fp32 (measured at 100-300 cached tokens, batch 1
        and 8: 197 vs 54 us, 1460 vs 434 us), more than the bf16 cache would save in memory traffic."""
        shape = (batch, self.kv_heads, length, self.head_dim)
        # Uninitialised: a slot is written (prompt, padding or new token) before any query reads it.
        return [(torch.empty(shape), torch.empty(shape)) for _ in self.layers]

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # As transformers' LlamaRMSNorm (the statistics in fp32, the scaled input rounded to the
        # weights' dtype, then the weight): ATen's kernel computes in fp32 for a bf16 input and rounds
        # once, in one op instead of six.
        return torch.rms_norm(x, (x.shape[-1],), eps=self.eps) * weight

    def _rotary(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of the rotary angles, (batch, 1, seq, head_dim); sin's first half negated for `_rotate`."""
        freqs = positions[..., None].float() * self.inv_freq  # (batch, seq, head_dim / 2)
        angles = torch.cat((freqs, freqs), dim=-1)
        cos, sin = angles.cos() * self.rope_scaling, angles.sin() * self.rope_scaling
        sin[..., : freqs.shape[-1]].neg_()
        return cos.to(self.dtype).unsqueeze(1), sin.to(self.dtype).unsqueeze(1)

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
        # transformers' x * cos + rotate_half(x) * sin, where rotate_half(x) = cat(-x2, x1): the halves
        # swapped by a roll, the minus sign moved into sin (exact: negation commutes with rounding).
        return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * signed_sin

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, cache, start: int, mask: torch.Tensor
    ) -> torch.Tensor:
        """Logits of the last position: (batch, vocab).

        input_ids, positions: (batch, seq); the new keys and values go to cache slots [start, start + seq);
        mask: (batch, 1, seq, start + seq) bool, True where a query may attend.
        """
        # As the additive float mask SDPA would build from the bool one in every layer, built once.
        mask = torch.zeros(mask.shape).masked_fill_(~mask, float("-inf"))
        batch, seq = input_ids.shape
        end = start + seq
        x = F.embedding(input_ids, self.embed)  # (batch, seq, hidden)
        cos, sin = self._rotary(positions)
        heads, kv_heads, head_dim = self.heads, self.kv_heads, self.head_dim
        for layer, (keys, values) in zip(self.layers, cache):
            h = self._mm(self._norm(x, layer.input_norm), layer.qkv)  # (batch, seq, (heads + 2 kv_heads) * head_dim)
            # Queries and keys rotate together: half the small ops of rotating each.
            qk = self._rotate(
                h[..., : (heads + kv_heads) * head_dim].view(batch, seq, heads + kv_heads, head_dim).transpose(1, 2),
                cos,
                sin,
            )  # (batch, heads + kv_heads, seq, head_dim)
            keys[:, :, start:end] = qk[:, heads:]
            values[:, :, start:end] = (
                h[..., (heads + kv_heads) * head_dim :].view(batch, seq, kv_heads, head_dim).transpose(1, 2)
            )
            attention = F.scaled_dot_product_attention(
                qk[:, :heads].float(), keys[:, :, :end], values[:, :, :end], attn_mask=mask, enable_gqa=True
            ).to(self.dtype)
            x = self._mm_then(attention.transpose(1, 2).reshape(batch, seq, heads * head_dim), layer.output, x, "add")
            normed = self._norm(x, layer.post_norm)
            x = self._mm_then(
                self._mm_then(normed, layer.up, self._mm_silu(normed, layer.gate), "mul"), layer.down, x, "add"
            )
        return self._mm(self._norm(x[:, -1], self.final_norm), self.lm_head).float()  # argmax is slow in bf16


class PackedStepper:
    """`BatchDecoder` steps on a `PackedLlama`, its KV cache preallocated for the whole request."""

    def __init__(self, packed: PackedLlama):
        self.packed = packed

    def start(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor, capacity: int
    ) -> torch.Tensor:
        batch, width = input_ids.shape
        self.cache, self.length = self.packed.new_cache(batch, capacity), width
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        # A padding position attends to itself only: a query with nothing to attend to would give NaN.
        mask = (causal & attention_mask.bool()[:, None, None, :]) | torch.eye(width, dtype=torch.bool)
        return self.packed.forward(input_ids, positions, self.cache, 0, mask)

    def step(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        logits = self.packed.forward(
            input_ids, positions, self.cache, self.length, attention_mask.bool()[:, None, None, :]
        )
        self.length += 1
        return logits

    def keep(self, rows: torch.Tensor) -> None:
        self.cache = [(keys[rows], values[rows]) for keys, values in self.cache]
