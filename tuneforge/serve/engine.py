"""Inference: turn any model name into a loaded model and generate from chat messages.

A MODEL is a base model (catalog name, local dir, hub id), a run id (`run-...`), or a tuned model
name (`ft:<base>:<org>:<suffix>:<run id>`). A LoRA run loads as base + adapter (peft); a full run
loads its own weights. The run's saved tokenizer and chat template are used unchanged.
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from tuneforge.data.examples import Message
from tuneforge.data.tokenize import ChatTokenizer
from tuneforge.errors import ModelNotAvailable, UsageError
from tuneforge.registry import store


@dataclass(frozen=True)
class ModelSpec:
    name: str  # what the user typed
    base_model: str
    adapter: Path | None = None  # LoRA adapter directory
    weights: Path | None = None  # full fine-tuned weights directory

    @property
    def tokenizer_source(self) -> str | None:
        directory = self.adapter or self.weights
        return str(directory) if directory else None


def resolve_spec(name: str) -> ModelSpec:
    """Run id, tuned model name or base model -> what to load."""
    tuned = store.find_model(name)
    run = store.get_run(tuned.run_id if tuned else name)
    if run is not None:
        if run.status != "succeeded" or not run.models:
            raise ModelNotAvailable(f"run '{run.id}' has no finished model (status: {run.status})",
                                    fix=f"Resume it with `tuneforge train --resume {run.id}`." if run.status == "interrupted" else None)
        model = tuned or run.models[0]
        path = Path(model.path)
        if not path.exists():
            raise ModelNotAvailable(f"the weights of '{model.name}' are missing ({path})")
        return ModelSpec(name, model.base_model, adapter=path if model.kind == "adapter" else None,
                         weights=path if model.kind == "full" else None)
    if name.startswith(("ft:", "run-")):
        raise ModelNotAvailable(f"no tuned model or run named '{name}'", fix="See `tuneforge models list` and `tuneforge runs list`.")
    from tuneforge.models.catalog import resolve_model

    resolve_model(name)  # raises a clear error for unknown names
    return ModelSpec(name, name)


def load_for_inference(spec: ModelSpec):
    """(model in eval mode, Hugging Face tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.models.catalog import load_model, load_tokenizer

    if spec.weights is not None:
        model = AutoModelForCausalLM.from_pretrained(spec.weights, dtype=torch.float32)
    else:
        model = load_model(spec.base_model)
        if spec.adapter is not None:
            from peft import PeftModel

            # Merged once at load time: no per-token adapter overhead while generating.
            model = PeftModel.from_pretrained(model, spec.adapter).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer_source) if spec.tokenizer_source else load_tokenizer(spec.base_model)
    return model.eval(), tokenizer


def export_merged(name: str, directory: Path) -> None:
    """A run's weights with any adapter folded in, saved with its tokenizer: loads with plain transformers."""
    spec = resolve_spec(name)
    if spec.adapter is None and spec.weights is None:
        raise UsageError(f"'{name}' is a base model, not a run", fix="Export a run id or an ft: model name.")
    model, tokenizer = load_for_inference(spec)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # stop | length


class Engine:
    """One loaded model; `generate` answers a batch of conversations with the model's chat template."""

    def __init__(self, name: str):
        self.spec = resolve_spec(name)
        self.model, self.tokenizer = load_for_inference(self.spec)
        self.chat = ChatTokenizer(self.tokenizer)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @torch.inference_mode()
    def generate(self, conversations: list[list[Message]], max_new_tokens: int = 256, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int | None = None) -> list[Generation]:
        prompts = [self.chat.render_prompt(messages) for messages in conversations]
        # Left padding: generation continues every row from its last real token. Per call, because a
        # base model's tokenizer object is shared (cached) with the rest of the process.
        inputs = self.tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        if seed is not None:
            torch.manual_seed(seed)
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
        stop_ids = sorted(self.chat.end_of_turn_ids)
        output = self.model.generate(**inputs, max_new_tokens=max_new_tokens, eos_token_id=stop_ids,
                                     pad_token_id=self.tokenizer.pad_token_id, **sampling)
        results = []
        prompt_width = inputs["input_ids"].shape[1]
        for row, mask in zip(output, inputs["attention_mask"]):
            new = row[prompt_width:].tolist()
            stopped = next((i for i, token in enumerate(new) if token in self.chat.end_of_turn_ids), None)
            completion = new[:stopped] if stopped is not None else new
            results.append(Generation(self.tokenizer.decode(completion, skip_special_tokens=True).strip(),
                                      int(mask.sum()), len(completion) + (stopped is not None),
                                      "stop" if stopped is not None else "length"))
        return results
