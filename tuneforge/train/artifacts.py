"""The run directory: what a finished run leaves behind, and the checkpoint housekeeping.

runs/<id>/
  adapter/ (LoRA, PEFT format: adapter_config.json + adapter_model.safetensors, loads with
           PeftModel.from_pretrained and as a vLLM LoRA) or model/ (full weights, safetensors),
           each with the tokenizer and chat template the run used
  checkpoints/step-N/   resumable checkpoints (newest few, plus the best)
  metrics.csv           OpenAI's result-file columns, plus epoch, learning rate, tokens/s
  config.json           the resolved TrainConfig
  manifest.json         data hashes (and the data stage's manifest), versions, git commit, hardware, time
  README.md             the model card
  loss.png              training vs validation loss
"""

import csv
import json
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import torch
from safetensors.torch import load_file

from tuneforge import __version__
from tuneforge.train.loop import COMPLETE_MARKER


def weights_dir(run_dir: Path, method: str) -> Path:
    return run_dir / ("adapter" if method == "lora" else "model")


def load_weights(model, checkpoint: Path, method: str) -> None:
    """Put a checkpoint's trained weights (adapter or full) into the live model."""
    if method == "lora":
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(checkpoint / "adapter_model.safetensors"))
    else:
        missing, unexpected = model.load_state_dict(read_full_weights(checkpoint), strict=False)
        # Tied embeddings are saved once; anything else missing means a broken checkpoint.
        if unexpected or any("lm_head" not in name for name in missing):
            raise RuntimeError(
                f"checkpoint {checkpoint} does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )


def read_full_weights(checkpoint: Path) -> dict:
    """A full model's weights from a checkpoint (or model directory): every safetensors shard."""
    state = {}
    for shard in sorted(checkpoint.glob("*.safetensors")):
        state.update(load_file(shard))
    return state


def checkpoint_metrics(checkpoint: Path) -> dict | None:
    """The validation figures a checkpoint was saved with (None when it was saved without validating)."""
    return json.loads((checkpoint / "trainer_state.json").read_text()).get("metrics")


def prune_checkpoints(checkpoints_dir: Path, keep: int, best_step: int | None) -> list[dict]:
    """Keep the newest `keep` epoch checkpoints, the best one, and the newest of all (what a resume
    starts from); delete the rest and return what remains."""
    complete = sorted(
        (p for p in checkpoints_dir.glob("step-*") if (p / COMPLETE_MARKER).exists()),
        key=lambda p: int(p.name.split("-")[1]),
    )
    states = {p.name: json.loads((p / "trainer_state.json").read_text()) for p in complete}
    epoch_ends = [p.name for p in complete if states[p.name].get("epoch_end")]
    keep_names = set(epoch_ends[-keep:]) | {p.name for p in complete[-1:]}
    if best_step is not None:
        keep_names.add(f"step-{best_step}")
    remaining = []
    for path in complete:
        if path.name not in keep_names:
            shutil.rmtree(path)
            continue
        state = states[path.name]
        remaining.append(
            {"step": state["step"], "epoch": state["epoch"], "path": str(path), "metrics": state.get("metrics")}
        )
    return remaining


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metric rows written after the checkpoint a run resumes from (they will be written again)."""
    if not path.exists():
        return
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns, rows = reader.fieldnames, [row for row in reader if int(row["step"]) <= last_step]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return result.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict:
    names = ["torch", "transformers", "peft", "accelerate", "tokenizers", "safetensors"]
    return {"tuneforge": __version__, **{name: metadata.version(name) for name in names}}


def write_run(
    run_dir: Path,
    model,
    tokenizer,
    config,
    model_name: str,
    final: dict,
    train_file,
    validation_file,
    weights: dict | None = None,
    held_out=None,
    replayed=None,
) -> None:
    """The run's final artifacts; `weights` are the model's, gathered, when its own are sharded;
    `held_out` (inputs.HeldOut) what was held out of the training file to validate on; `replayed`
    (general.Replayed) the forgetting guard's replay examples mixed into training."""
    target = weights_dir(run_dir, config.method)
    shutil.rmtree(target, ignore_errors=True)
    model.save_pretrained(target, **({"state_dict": weights} if weights is not None else {}))
    tokenizer.save_pretrained(target)  # the run's chat template travels with its weights
    from tuneforge.hardware import machine_facts
    from tuneforge.train.card import write_model_card
    from tuneforge.train.report import plot_loss

    manifest = {
        "run_id": run_dir.name,
        "model_name": model_name,
        "base_model": config.model,
        "method": config.method,
        "data": {
            "train": {"file": str(train_file.path), "sha256": train_file.sha256},
            "validation": {"file": str(validation_file.path), "sha256": validation_file.sha256}
            if validation_file
            else {
                "file": str(train_file.path),
                "sha256": train_file.sha256,
                "held_out": {**held_out.__dict__, "description": held_out.describe()},
            }
            if held_out
            else None,
            "prepared_manifest": train_file.manifest,
            "replay": {**replayed.__dict__, "description": replayed.describe()} if replayed else None,
        },
        "versions": _versions(),
        "git_commit": _git_commit(),
        "hardware": {
            **machine_facts(),  # the CPU's; the device the run used is in final_metrics
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cuda": torch.cuda.is_available(),
        },
        "wall_seconds": final["wall_seconds"],
        "trained_tokens": final["trained_tokens"],
        "final_metrics": final,
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    plot_loss(run_dir / "metrics.csv", run_dir / "loss.png")
    write_model_card(run_dir, config, model_name, final, manifest, target)
