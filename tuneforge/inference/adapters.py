"""One model's weights shared by several engines, and the LoRA adapters served on top of it.

Serving many LoRA runs of one base model should not load the base once per run. `SharedModel`
holds the base (fp32 on the CPU; on a GPU in the engine's precision). Decoding runs on plain merged
weights, so an adapter costs nothing per token:
  - on the packed fast path (fast_llama.py, CPU only), each adapter gets its own packed copy of the weights
    with the adapter merged in, made on its first request and kept while its engine is cached
    (`EnginePool` bounds how many). Switching adapters is then free; making the copy costs a merge
    and a pack (~1.5 s and ~0.4 s for an all-linear rank-16 LoRA on the 135 M model, 2 busy cores),
    and memory: a bf16 copy is half the base's size;
  - on the model's own forward (other architectures, and any model off the CPU), the adapter is
    merged into the base's weights at each switch (the adapter's factors, read on the CPU, are
    moved to the weights' device and dtype by peft).
`activate` merges with peft and puts the base's original values back into the weights the previous
adapter changed (kept aside the first time an adapter touches them), so a switch is exact: no drift
from merge/unmerge rounding.
"""

import copy
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch

from tuneforge.errors import ModelNotAvailable


@dataclass(frozen=True, eq=False)
class LoadedAdapter:
    """A LoRA adapter read into memory (its low-rank factors: small next to the base)."""

    directory: Path
    config: object  # peft.LoraConfig
    weights: dict[str, torch.Tensor]

    @classmethod
    def load(cls, directory: Path) -> "LoadedAdapter":
        from peft import PeftConfig, load_peft_weights

        try:
            config = PeftConfig.from_pretrained(str(directory))
            weights = load_peft_weights(str(directory), device="cpu")
        except (OSError, ValueError) as error:
            raise ModelNotAvailable(f"cannot read the adapter in {directory}: {error}") from error
        return cls(directory, config, weights)

    @property
    def mergeable_in_place(self) -> bool:
        """Adapters that also replace whole modules (modules_to_save) cannot be switched by restoring weights."""
        return not getattr(self.config, "modules_to_save", None)


class SharedModel:
    """A loaded model, the lock that serialises generation on it, and the adapter merged into it now.

    Hold `lock` while calling `activate` and while decoding: the weights are one adapter's at a time.
    """

    def __init__(self, model):
        self.model = model.eval()
        self.lock = threading.Lock()  # not RLock: a stream may be resumed by another server thread
        self.active: LoadedAdapter | None = None
        self.merges = 0  # adapter merges and restores so far (a cached adapter's request makes none)
        self._original: dict[str, torch.Tensor] = {}  # parameter name -> its values before any adapter
        self._changed: set[str] = set()  # parameters the active adapter changed
        # Packed weights per adapter and precision; an adapter's go when its engine (holding it) is dropped.
        self._packed_for_adapter: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._packed_for_base: dict[str, object] = {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def stepper(self, adapter: LoadedAdapter | None, precision: str):
        """What `BatchDecoder` steps with for `adapter`: the packed fast path where the model is on the
        CPU and its architecture allows, else the model's forward with the adapter merged. Hold `lock`
        while using it."""
        from tuneforge.inference.decode import HFStepper
        from tuneforge.inference.fast_llama import PackedLlama, PackedStepper, supports

        if self.device.type != "cpu" or not supports(self.model):
            self.activate(adapter)
            return HFStepper(self.model)
        cache = self._packed_for_base if adapter is None else self._packed_for_adapter.setdefault(adapter, {})
        if precision not in cache:
            self.activate(adapter)
            cache[precision] = PackedLlama(self.model, precision)
        return PackedStepper(cache[precision])

    @torch.no_grad()
    def activate(self, adapter: LoadedAdapter | None) -> None:
        if adapter is self.active:
            return
        parameters = dict(self.model.named_parameters(remove_duplicate=False))
        for name in self._changed:
            parameters[name].copy_(self._original[name])
        self._changed, self.active = set(), None
        self.merges += 1
        if adapter is None:
            return
        from peft import PeftModel, set_peft_model_state_dict
        from peft.tuners.tuners_utils import BaseTunerLayer

        names_of = {id(p): n for n, p in parameters.items()}
        # peft injects its layers into self.model in place; merge_and_unload puts the original
        # Linear modules (the same parameter objects) back with the adapter folded into them.
        wrapped = PeftModel(self.model, copy.deepcopy(adapter.config))
        set_peft_model_state_dict(wrapped, adapter.weights)
        for module in wrapped.modules():
            if isinstance(module, BaseTunerLayer):
                weight = module.get_base_layer().weight
                name = names_of[id(weight)]
                self._original.setdefault(name, weight.detach().clone())
                self._changed.add(name)
        wrapped.merge_and_unload()
        # peft leaves its config on the model; the next adapter would be taken for a second one stacked on it.
        self.model.__dict__.pop("peft_config", None)
        self.active = adapter
