"""One model's weights shared by several engines, with at most one LoRA adapter merged in at a time.

Serving many LoRA runs of one base model should not load the base once per run. `SharedModel`
holds the base; switching to an adapter puts the base's original values back into the weights the
previous adapter changed (kept aside the first time an adapter touches them, so a switch is exact:
no drift from merge/unmerge rounding) and merges the new adapter with peft. Decoding then runs on
plain merged weights: no per-token adapter cost. A switch costs one merge (tens of milliseconds
for a 135 M model); a server that alternates adapters every request pays it every request.
"""

import copy
import threading
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
        self.version = 0  # bumped whenever the weights change (for anything derived from them)
        self._original: dict[str, torch.Tensor] = {}  # parameter name -> its values before any adapter
        self._changed: set[str] = set()  # parameters the active adapter changed
        self._packed = None  # (version, dtype, PackedLlama) for the fast decode step

    def stepper(self, dtype: torch.dtype):
        """What `BatchDecoder` steps with: the packed fast path where the architecture allows, else the model's forward."""
        from tuneforge.serve.decode import HFStepper
        from tuneforge.serve.fast_llama import PackedLlama, PackedStepper, supports

        if not supports(self.model):
            return HFStepper(self.model)
        if self._packed is None or self._packed[:2] != (self.version, dtype):
            self._packed = None  # free the old copy before packing the new one
            self._packed = (self.version, dtype, PackedLlama(self.model, dtype))
        return PackedStepper(self._packed[2])

    @torch.no_grad()
    def activate(self, adapter: LoadedAdapter | None) -> None:
        if adapter is self.active:
            return
        parameters = dict(self.model.named_parameters(remove_duplicate=False))
        for name in self._changed:
            parameters[name].copy_(self._original[name])
        self._changed, self.active = set(), None
        self.version += 1
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
