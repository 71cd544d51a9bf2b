"""The model a recipe trains, set up for its device and its processes.

`build_model` loads the base model (in 4 bits through bitsandbytes for QLoRA), picks the kernels the
device runs best, adds LoRA adapters (peft), and moves it to the device:

- padding-free attention: on CPU `_CpuVarlenAttention` (padding_free.py); on CUDA flash-attn's varlen
  kernel through transformers where `flash_attn` is installed, else PyTorch's own varlen flash attention;
- norms and MLPs: on CUDA, Liger's RMSNorm, SwiGLU and RoPE kernels where `liger_kernel` is installed;
  elsewhere lean_activations.py;
- output layer and loss (chunked_loss.py) and LoRA layers (fused_lora.py): the same on every device.

`TokenLoss` makes the model and its loss one module, so DDP and FSDP2 see one forward per
micro-batch; `wrap` puts it under DDP (LoRA: the adapters are small, every rank keeps a copy) or
FSDP2's `fully_shard` (full fine-tuning: parameters, gradients and optimiser state sharded over the
ranks, each decoder layer gathered only while it runs).
"""

from contextlib import nullcontext

import torch

from tuneforge.errors import UsageError
from tuneforge.hardware import device_type
from tuneforge.models.catalog import load_model
from tuneforge.train.config import ResolvedConfig
from tuneforge.train.distributed import Ranks
from tuneforge.train.loop import weighted_token_loss


def build_model(config: ResolvedConfig, device: str = "cpu"):
    """The base model in training mode on `device`, with LoRA adapters (via peft) for method lora."""
    bf16_base = config.method == "lora" and config.precision == "bf16" and config.frozen_weights_bf16
    # The frozen weights never change, so only the trained ones need fp32 masters (peft keeps the
    # adapters in fp32: autocast_adapter_dtype). Not quite what autocast computes, though: autocast
    # rounds a matmul's inputs to bf16 but keeps embeddings, norm weights and the residual stream in
    # fp32, and these copies round those too (measured on the learned tiny model: loss ~5e-4 apart,
    # LoRA gradients ~1.3e-2, twice autocast's own gap to fp32; tests/test_speed_tricks.py).
    if config.load_in_4bit:
        model = _load_4bit(config, device)
    else:
        model = load_model(config.model, dtype=torch.bfloat16 if bf16_base else None)
    on_gpu = device_type(device) == "cuda"
    if config.padding_free:
        from tuneforge.train.padding_free import use_varlen_attention

        use_varlen_attention(model, device)
    liger = on_gpu and config.liger_kernels and _apply_liger(model)
    if config.lean_activations and not liger:
        from tuneforge.train.lean_activations import use_lean_activations

        use_lean_activations(model)
    if config.gradient_checkpointing:
        # Non-reentrant: works with frozen inputs (LoRA) and with our own autograd functions.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.method == "lora":
        model = _add_adapters(model, config, bf16_base)
    model.train()
    return model if config.load_in_4bit else model.to(device)


def _add_adapters(model, config: ResolvedConfig, bf16_base: bool):
    from peft import LoraConfig, get_peft_model

    if config.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    targets = config.lora_target_modules
    try:
        model = get_peft_model(
            model,
            LoraConfig(
                r=config.lora_rank,
                lora_alpha=config.lora_alpha,
                lora_dropout=config.lora_dropout,
                target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
                task_type="CAUSAL_LM",
            ),
        )
    except ValueError as error:  # peft's word for target modules the model does not have
        raise UsageError(
            f"lora_target_modules '{targets}': {error}", fix="Use all-linear, or names such as q_proj,v_proj."
        ) from None
    if config.fast_lora_dropout:
        from tuneforge.train.lora_dropout import fuse_lora_dropout

        fuse_lora_dropout(model)
    if config.fused_lora:
        from tuneforge.train.fused_lora import fuse_lora_layers

        fuse_lora_layers(model)  # plain Linear bases only: QLoRA's 4-bit layers keep peft's forward
    if bf16_base:
        # peft casts each layer's bf16 input to the adapters' fp32, and autocast casts it back for
        # the matmul: two copies of every adapted layer's input for nothing.
        for module in model.modules():
            if hasattr(module, "cast_input_dtype_enabled"):
                module.cast_input_dtype_enabled = False
    return model


def _load_4bit(config: ResolvedConfig, device: str):
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UsageError(
            "load_in_4bit needs bitsandbytes, which is not installed",
            fix="pip install bitsandbytes (or tuneforge[gpu]), or set load_in_4bit to false.",
        ) from None
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from tuneforge.models.catalog import model_path, resolve_model

    compute = torch.bfloat16 if config.precision == "bf16" else torch.float32
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",  # QLoRA's data type: quantiles of a normal distribution, as weights are
        bnb_4bit_use_double_quant=True,  # the scales quantised too: ~0.4 bit per weight less
        bnb_4bit_compute_dtype=compute,
    )
    return AutoModelForCausalLM.from_pretrained(
        model_path(resolve_model(config.model)),
        quantization_config=quantization,
        dtype=compute,
        device_map={"": torch.device(device)},
    )


def _apply_liger(model) -> bool:
    """Liger's Triton kernels for the norms, the SwiGLU MLPs and RoPE, where liger-kernel is installed
    and knows the architecture; the loss stays ours (it weighs tokens, Liger's fused loss cannot)."""
    try:
        from liger_kernel.transformers import _apply_liger_kernel_to_instance
    except ImportError:
        return False
    try:
        _apply_liger_kernel_to_instance(
            model=model, rope=True, rms_norm=True, swiglu=True, cross_entropy=False, fused_linear_cross_entropy=False
        )
    except (TypeError, ValueError, NotImplementedError):
        return False  # an architecture Liger has no kernels for
    return True


class TokenLoss(torch.nn.Module):
    """The model and its weighted token loss as one module: what DDP and FSDP2 wrap, so that each
    micro-batch is one forward of the wrapped module."""

    def __init__(self, model, config: ResolvedConfig):
        super().__init__()
        self.model = model
        self.sparse_head, self.chunked = config.sparse_output_layer, config.chunked_loss
        self.dtype = torch.bfloat16 if config.precision == "bf16" else None

    def forward(self, batch):
        return weighted_token_loss(self.model, batch, self.sparse_head, self.dtype, self.chunked)


def wrap(loss: TokenLoss, config: ResolvedConfig, device: str, place: Ranks):
    """`loss` for this rank: itself in a lone process, under DDP (LoRA) or FSDP2 (full) among many."""
    if not place.distributed:
        return loss
    if config.method == "lora":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(
            loss, device_ids=[torch.device(device)] if device_type(device) == "cuda" else None
        )
    from torch.distributed.fsdp import fully_shard

    causal_lm = loss.model
    for layer in causal_lm.get_decoder().layers:
        fully_shard(layer)
    fully_shard(loss)  # the rest (embeddings, final norm, the output layer tied to them) as one unit
    return loss


def reshard(wrapped) -> None:
    """Put FSDP2's parameters back in shards after a forward without backward (validation): the
    root module keeps its gathered parameters until a backward would free them, and the optimiser
    and the state-dict functions know only the sharded ones."""
    if is_sharded(wrapped):
        for module in wrapped.modules():
            if hasattr(module, "reshard"):
                module.reshard()


def is_sharded(wrapped) -> bool:
    return hasattr(wrapped, "set_requires_gradient_sync")


def gradient_sync(wrapped, last: bool):
    """A context for one micro-batch's backward: gradients are reduced over ranks only at the
    step's last micro-batch (DDP's no_sync, FSDP2's set_requires_gradient_sync)."""
    if is_sharded(wrapped):
        wrapped.set_requires_gradient_sync(last)
        return nullcontext()
    if hasattr(wrapped, "no_sync") and not last:
        return wrapped.no_sync()
    return nullcontext()


def unwrapped(wrapped) -> TokenLoss:
    return wrapped.module if hasattr(wrapped, "module") and isinstance(wrapped.module, TokenLoss) else wrapped


# ------------------------------------------------------------------------------ saved state
def _state_options(**extra):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **extra)


def gathered_state(wrapped, optimizer) -> tuple[dict | None, dict]:
    """(full model weights or None, full optimiser state keyed by parameter name) of this run.

    Under FSDP2 every rank must call it (the shards are gathered, onto rank 0's host memory); in a
    lone process or under DDP rank 0 alone needs it. Names, not positions, key the optimiser state,
    so a checkpoint resumes with any number of processes."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    options = _state_options(cpu_offload=is_sharded(wrapped))
    return gathered_weights(wrapped), get_optimizer_state_dict(unwrapped(wrapped), optimizer, options=options)


def gathered_weights(wrapped) -> dict | None:
    """A sharded model's full weights, gathered (every rank must call it; rank 0 gets them); None
    where the model's own `save_pretrained` has them."""
    if not is_sharded(wrapped):
        return None
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    gathered = get_model_state_dict(unwrapped(wrapped), options=_state_options(cpu_offload=True))
    return {name.removeprefix("model."): value for name, value in gathered.items()}


def load_optimizer_state(wrapped, optimizer):
    """The `load_optimizer` that loop.load_training_state calls: by name (any process count) or by position."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    def load(state: dict, by_name: bool) -> None:
        if by_name:
            set_optimizer_state_dict(unwrapped(wrapped), optimizer, state, options=_state_options())
        else:
            optimizer.load_state_dict(state)

    return load


def load_full_weights(wrapped, weights: dict) -> None:
    """A full model's weights (a plain state dict) into the live, possibly sharded, model."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    loss = unwrapped(wrapped)
    set_model_state_dict(
        loss, {f"model.{name}": value for name, value in weights.items()}, options=_state_options(strict=False)
    )
