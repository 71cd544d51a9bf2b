"""Model names -> what to load: run ids, tuned model names and checkpoint names through the registry,
base models through the catalog. Also `export_merged` and `engine`, the CLI's way to an `Engine`.
"""

from pathlib import Path

from tuneforge.errors import ModelNotAvailable, UsageError
from tuneforge.inference.engine import Engine, ModelSpec, base_spec, load_for_inference
from tuneforge.registry import store
from tuneforge.runs import stored
from tuneforge.runs.naming import display_name, is_tuned_name, parse_checkpoint, run_id_of


def _checkpoint_spec(name: str, step: int) -> ModelSpec:
    run = store.get_run(run_id_of(name))
    checkpoint = next((c for c in run.checkpoints if c.step == step), None) if run else None
    path = stored.checkpoint(run, checkpoint) if checkpoint else None
    if path is None or not path.exists():
        raise ModelNotAvailable(
            f"no checkpoint '{name}'", fix="List them with the jobs API's checkpoints, or `tuneforge runs show`."
        )
    return ModelSpec(
        name,
        run.base_model,
        adapter=path if run.method == "lora" else None,
        weights=path if run.method == "full" else None,
    )


def resolve_spec(name: str) -> ModelSpec:
    """Run id, tuned model name, checkpoint name (`<tuned model>:ckpt-step-N`) or base model -> what to load."""
    if checkpoint := parse_checkpoint(name):
        return _checkpoint_spec(name, checkpoint[1])
    tuned = store.find_model(name)
    run = store.get_run(tuned.run_id if tuned else name)
    if run is not None:
        if run.status != "succeeded" or not run.models:
            raise ModelNotAvailable(
                f"run '{run.id}' has no finished model (status: {run.status})",
                fix=f"Resume it with `tuneforge train --resume {run.id}`." if run.status == "interrupted" else None,
            )
        model = tuned or run.models[0]
        path = stored.weights(run, model)
        if not path.exists():
            raise ModelNotAvailable(f"the weights of '{model.name}' are missing ({path})")
        return ModelSpec(
            name,
            model.base_model,
            adapter=path if model.kind == "adapter" else None,
            weights=path if model.kind == "full" else None,
        )
    if is_tuned_name(name):
        raise ModelNotAvailable(
            f"no tuned model or run named '{name}'", fix="See `tuneforge models list` and `tuneforge runs list`."
        )
    return base_spec(name)


def engine(name: str, precision: str = "auto", device: str = "auto") -> Engine:
    """An engine for any model name the CLI accepts (base, run, tuned model or checkpoint), on `device`."""
    return Engine(name, precision=precision, device=device, spec=resolve_spec(name))


def export_merged(name: str, directory: Path, dtype: str = "fp32") -> None:
    """A run's weights with any adapter folded in, saved with its tokenizer and model card: loads
    with plain transformers. `dtype` fp32 (as trained) or bf16 (half the size)."""
    import torch

    spec = _exported_spec(name)
    model, tokenizer = load_for_inference(spec)
    if dtype == "bf16":
        model = model.to(torch.bfloat16)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    card = _run_card(name)
    if card:
        (directory / "README.md").write_text(card)


def export_gguf(name: str, path: Path, dtype: str = "f16") -> None:
    """A run's model, merged, as one GGUF file (models/gguf_export.py) for llama.cpp and Ollama."""
    from tuneforge.models.gguf_export import write_gguf

    spec = _exported_spec(name)
    model, tokenizer = load_for_inference(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_gguf(
        model, tokenizer, path, dtype, name, description=f"Tuned by Tuneforge from {display_name(spec.base_model)}"
    )


def _exported_spec(name: str) -> ModelSpec:
    spec = resolve_spec(name)
    if spec.adapter is None and spec.weights is None:
        raise UsageError(f"'{name}' is a base model, not a run", fix="Export a run id or an ft: model name.")
    return spec


def _run_card(name: str) -> str | None:
    """The model card of the run behind `name` (README.md in its run directory), if it has one."""
    tuned = store.find_model(name)
    run = store.get_run(tuned.run_id if tuned else run_id_of(name))
    card = stored.run_folder(run) / "README.md" if run else None
    return card.read_text() if card and card.exists() else None
