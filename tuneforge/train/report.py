"""What a finished run tells people: the loss curve (loss.png) and the model card (README.md)."""

import csv
from pathlib import Path


def read_metrics(path: Path) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(step, train_loss) and (step, valid_loss) series from metrics.csv."""
    train, valid = [], []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("train_loss"):
                train.append((int(row["step"]), float(row["train_loss"])))
            if row.get("valid_loss"):
                valid.append((int(row["step"]), float(row["valid_loss"])))
    return train, valid


def plot_loss(metrics_csv: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    train, valid = read_metrics(metrics_csv)
    figure, axes = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        axes.plot(*zip(*train), label="training loss", color="#4C72B0", alpha=0.8)
    if valid:
        axes.plot(*zip(*valid), label="validation loss", color="#DD8452", marker="o")
    axes.set_xlabel("step")
    axes.set_ylabel("loss (weighted cross-entropy per token)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(out)
    plt.close(figure)


def forgetting_summary(metrics: dict) -> str | None:
    """The forgetting guard's figure in one line (None for a run without it): the general prompts'
    loss before and after tuning, their perplexity change, and the replay examples trained."""
    if "general_perplexity_change" not in metrics:
        return None
    return (
        f"general prompts (forgetting guard): loss {metrics['base_general_loss']:.4f} (base) -> "
        f"{metrics['general_loss']:.4f}, perplexity {metrics['general_perplexity_change']:+.1%}; "
        f"{metrics.get('replay_examples', 0)} replay examples trained beside the task's"
    )


def _fmt(value, digits=4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def write_model_card(run_dir: Path, config, model_name: str, final: dict, manifest: dict) -> None:
    from tuneforge.models.catalog import BUNDLED, resolve_model

    ref = resolve_model(config.model)
    licence = ref.license or "see the base model's card"
    upstream = ref.upstream or config.model
    prepared = manifest["data"].get("prepared_manifest") or {}
    counts = prepared.get("counts", {})
    hyper = [
        "n_epochs",
        "batch_size",
        "learning_rate_multiplier",
        "learning_rate",
        "prompt_loss_weight",
        "lr_scheduler",
        "warmup_ratio",
        "weight_decay",
        "max_seq_length",
        "seed",
    ]
    if config.method == "lora":
        hyper += ["lora_rank", "lora_alpha", "lora_dropout", "lora_target_modules"]
    metrics = [(k, final[k]) for k in ("valid_loss", "valid_perplexity", "valid_mean_token_accuracy") if k in final]
    lines = [
        f"# {model_name}",
        "",
        f"Fine-tuned by Tuneforge from **{config.model}** ({upstream}) with **{config.method}** "
        f"{'(LoRA adapter; load it onto the base model)' if config.method == 'lora' else '(full weights)'}.",
        "",
        "## Base model and licence",
        f"- Base: {ref.description or config.model}",
        f"- Licence: {licence} (the tuned weights inherit the base model's licence terms).",
        "",
        "## Data",
        f"- Training file: `{manifest['data']['train']['file']}` (sha256 "
        f"`{manifest['data']['train']['sha256'][:16]}...`)",
    ]
    if manifest["data"]["validation"] and manifest["data"]["validation"].get("held_out"):
        lines.append(f"- Validation: {manifest['data']['validation']['held_out']['description']}.")
    elif manifest["data"]["validation"]:
        lines.append(
            f"- Validation file: `{manifest['data']['validation']['file']}` (sha256 "
            f"`{manifest['data']['validation']['sha256'][:16]}...`)"
        )
    if counts:
        lines.append(
            f"- Prepared by `tuneforge data prepare`: {counts.get('examples_out')} examples, "
            f"{counts.get('duplicates_removed')} duplicates removed, redactions {counts.get('redactions') or 'none'}."
        )
    if manifest["data"].get("replay"):
        lines.append(f"- Replay: {manifest['data']['replay']['description']}.")
    lines += [
        f"- Trained tokens (loss-weighted): {final['trained_tokens']:,}",
        "",
        "## Hyperparameters",
        "",
        "| name | value |",
        "|---|---|",
    ]
    lines += [f"| {name} | {_fmt(getattr(config, name), 6)} |" for name in hyper]
    lines += [
        "",
        "## Results",
        "",
        f"Steps: {final['step']}, wall time {final['wall_seconds']} s"
        + (", stopped early" if final.get("stopped_early") else "")
        + ".",
        "",
    ]
    if metrics:
        lines += ["| metric (validation) | value |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in metrics]
    if "general_perplexity_change" in final:
        lines += [
            "",
            f"General ability (the forgetting guard): on built-in general prompts with reference answers, the loss "
            f"went from {final['base_general_loss']:.4f} (base model) to {final['general_loss']:.4f}, a perplexity "
            f"change of {final['general_perplexity_change']:+.1%} (above 0: worse than the base model at them).",
        ]
    lines += [
        "",
        "![loss curve](loss.png)",
        "",
        "## Intended use",
        "Answers in the style and format of the training data, for the task that data describes. "
        "It has not been evaluated for safety or factual accuracy beyond the metrics above; "
        "evaluate it on your own test set (`tuneforge eval`) before deploying it.",
        "",
    ]
    if config.model in BUNDLED:
        lines += [
            "The bundled base model is small (135 M parameters): expect style and format to transfer "
            "better than knowledge.",
            "",
        ]
    (run_dir / "README.md").write_text("\n".join(lines))


EVALUATION_HEADING = "## Latest evaluation"


def link_evaluation(run_dir: Path, report_dir: Path, report_markdown: str) -> None:
    """Put (or replace) the model card's "Latest evaluation" section: the table and links to the reports."""
    card_path = run_dir / "README.md"
    card = card_path.read_text()
    if EVALUATION_HEADING in card:
        card = card[: card.index(EVALUATION_HEADING)].rstrip() + "\n"
    table = "\n".join(line for line in report_markdown.splitlines() if line.startswith("|"))
    card += (
        f"\n{EVALUATION_HEADING}\n\nFull report: `{report_dir / 'report.html'}` (open it in a browser; "
        f"Markdown: `{report_dir / 'report.md'}`)\n\n{table}\n"
    )
    card_path.write_text(card)
