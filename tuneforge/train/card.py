"""The model card: README.md with Hugging Face's YAML front matter, where the Hub and vLLM look.

Written when a run finishes (in the run directory and beside its weights: `adapter/README.md`, in
place of PEFT's empty template, or `model/README.md`), and updated by every `tuneforge eval` of the
run (`link_evaluation`: the "Latest evaluation" section and the front matter's `model-index`).

The front matter is the Hub's model-card metadata: `base_model` (the hub id of the weights the run
started from, where known), `library_name` (peft for an adapter, transformers for full weights),
`license`, `tags`, `datasets` (the training data by its sha256: the data has no Hub id) and
`model-index` (the latest evaluation's scores). Nothing in a card is a local absolute path: files
appear by name with their sha256, local models by their directory's name, reports relative to the
run directory.
"""

from pathlib import Path

import yaml

EVALUATION_HEADING = "## Latest evaluation"
HYPERPARAMETERS = [
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
VALIDATION_METRICS = [
    "valid_loss",
    "valid_perplexity",
    "valid_mean_token_accuracy",
    "valid_reward_accuracy",
    "valid_rewards_margin",
]


def _fmt(value, digits=4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def front_matter(config, ref, manifest: dict) -> dict:
    from tuneforge.models.catalog import display_name

    lora = config.method == "lora"
    meta: dict = {}
    if ref.upstream:
        meta["base_model"] = ref.upstream
    meta["library_name"] = "peft" if lora else "transformers"
    if ref.license:
        meta["license"] = ref.license.lower()
    meta["pipeline_tag"] = "text-generation"
    meta["tags"] = ["tuneforge", "lora" if lora else "full-fine-tune", "dpo" if config.objective == "dpo" else "sft"]
    if not ref.upstream:
        meta["tags"].append(f"base:{display_name(config.model)}")
    meta["datasets"] = [f"sha256:{manifest['data']['train']['sha256']}"]
    return meta


def write_model_card(run_dir: Path, config, model_name: str, final: dict, manifest: dict, weights_dir: Path) -> None:
    """The card of a finished run, in `run_dir` and in `weights_dir`."""
    from tuneforge.models.catalog import BUNDLED, display_name, resolve_model

    ref = resolve_model(config.model)
    base = display_name(config.model)
    licence = ref.license or "see the base model's card"
    upstream = ref.upstream or base
    prepared = manifest["data"].get("prepared_manifest") or {}
    counts = prepared.get("counts", {})
    hyper = list(HYPERPARAMETERS)
    if config.method == "lora":
        hyper += ["lora_rank", "lora_alpha", "lora_dropout", "lora_target_modules"]
    if config.objective == "dpo":
        hyper += ["objective", "dpo_beta"]
    metrics = [(k, final[k]) for k in VALIDATION_METRICS if k in final]
    train = manifest["data"]["train"]
    lines = [
        f"# {model_name}",
        "",
        f"Fine-tuned by Tuneforge from **{base}** ({upstream}) with **{config.method}**"
        f"{' on preference pairs (DPO)' if config.objective == 'dpo' else ''} "
        f"{'(LoRA adapter; load it onto the base model)' if config.method == 'lora' else '(full weights)'}.",
        "",
        "## Base model and licence",
        f"- Base: {ref.description if ref.source == 'bundled' else base}",
        f"- Licence: {licence} (the tuned weights inherit the base model's licence terms).",
    ]
    if config.continued_from:
        lines.append(f"- Continued from run `{config.continued_from}` (its weights were where this run started).")
    lines += [
        "",
        "## Data",
        f"- Training file: `{Path(train['file']).name}` (sha256 `{train['sha256'][:16]}...`)",
    ]
    validation = manifest["data"]["validation"]
    if validation and validation.get("held_out"):
        lines.append(f"- Validation: {validation['held_out']['description']}.")
    elif validation:
        lines.append(f"- Validation file: `{Path(validation['file']).name}` (sha256 `{validation['sha256'][:16]}...`)")
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
    card = _with_front_matter(front_matter(config, ref, manifest), "\n".join(lines))
    (run_dir / "README.md").write_text(card)
    (weights_dir / "README.md").write_text(card.replace("![loss curve](loss.png)\n\n", ""))


def _with_front_matter(meta: dict, body: str) -> str:
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n" + body


def split_card(card: str) -> tuple[dict, str]:
    """(front matter, body) of a card; a card without front matter has an empty one."""
    if card.startswith("---\n") and "\n---\n" in card[4:]:
        end = card.index("\n---\n", 4)
        return yaml.safe_load(card[4:end]) or {}, card[end + 5 :].lstrip("\n")
    return {}, card


def link_evaluation(
    run_dir: Path, report_dir: Path, report_markdown: str, model_name: str, results: dict, data_sha256: str
) -> None:
    """Put (or replace) the card's "Latest evaluation" section (the table and where the reports are)
    and its front matter's model-index (the evaluation's scores), in the run directory and beside
    its weights."""
    where = report_dir.relative_to(run_dir) if report_dir.is_relative_to(run_dir) else Path(report_dir.name)
    table = "\n".join(line for line in report_markdown.splitlines() if line.startswith("|"))
    section = (
        f"\n{EVALUATION_HEADING}\n\nFull report: `{where / 'report.html'}` (open it in a browser; "
        f"Markdown: `{where / 'report.md'}`; `tuneforge runs show {run_dir.name}` gives its full path)\n\n{table}\n"
    )
    scores = results["scores"]["model"]
    metrics = [{"type": name, "value": round(float(scores["means"][name]), 4)} for name in results["metrics"]]
    metrics += [
        {"type": name, "value": round(float(scores[name]), 4)}
        for name in ("perplexity", "token_accuracy")
        if name in scores
    ]
    index = [
        {
            "name": model_name,
            "results": [
                {
                    "task": {"type": "text-generation", "name": results["task"]},
                    "dataset": {"name": Path(results["data"]).name, "type": "json", "revision": data_sha256},
                    "metrics": metrics,
                }
            ],
        }
    ]
    for card_path in (run_dir / "README.md", *(run_dir / name / "README.md" for name in ("adapter", "model"))):
        if not card_path.exists():
            continue
        meta, body = split_card(card_path.read_text())
        if EVALUATION_HEADING in body:
            body = body[: body.index(EVALUATION_HEADING)].rstrip() + "\n"
        card_path.write_text(_with_front_matter({**meta, "model-index": index}, body + section))
