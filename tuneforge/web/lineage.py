"""What the models pages show: base and tuned models, and a tuned model's lineage from the data it
learned from to the feedback its answers got (dataset hash -> job -> run -> checkpoints ->
evaluations -> feedback), its model card and its downloads. Registry rows in, plain dicts out."""

from pathlib import Path

from markdown_it import MarkdownIt

from tuneforge.registry import access, jobs, store
from tuneforge.runs import stored
from tuneforge.train.card import split_card
from tuneforge.web.views import when

# What a tuned model's page offers to download (name -> what it is); the files route serves these only.
DOWNLOADS = {
    "weights.zip": "weights (the adapter, or the full model), zipped",
    "README.md": "model card (Hugging Face front matter)",
    "metrics.csv": "per-step metrics",
    "model-f16.gguf": "merged, GGUF f16 (llama.cpp, Ollama)",
    "model-q8_0.gguf": "merged, GGUF q8_0 (llama.cpp, Ollama)",
}
RESULT_KEYS = ("valid_loss", "valid_mean_token_accuracy", "general_perplexity_change", "preference_accuracy")


def model_list(owner: str, choices: list[tuple[str, str]]) -> dict:
    """The base models the caller may tune and its project's tuned models, newest first."""
    tuned = []
    for model in store.list_models(owner):
        run = store.get_run(model.run_id)
        config, metrics = (run.config or {}, run.metrics or {}) if run else ({}, {})
        tuned.append(
            {
                "name": model.name,
                "base": model.base_model,
                "kind": model.kind,
                "method": config.get("objective", "sft") if run else "",
                "created": when(model.created_at),
                "valid_loss": metrics.get("valid_loss"),
            }
        )
    return {"base": [{"name": n, "source": s} for n, s in choices if s != "tuned"], "tuned": tuned}


def tuned_model_page(model: store.Model, owner: str, sign) -> dict:
    """A tuned model's facts, lineage, card and downloads; `sign(path)` makes a link the browser can
    follow without its key (web/links.py)."""
    run = store.get_run(model.run_id)
    run_dir = stored.run_folder(run)  # fetched from the store where this machine did not train it
    config = run.config or {}
    job = jobs.job_for_run(run.id)
    base = f"/ui/files/runs/{run.id}"
    return {
        "name": model.name,
        "base": model.base_model,
        "kind": model.kind,
        "created": when(model.created_at),
        "data": [_dataset(run.train_dataset, "training"), _dataset(run.validation_dataset, "validation")],
        "held_out": _held_out(run_dir),
        "uploaded": _uploaded(owner, job),
        "job": {"id": job.id, "status": job.status, "created": when(job.created_at)} if job else None,
        "run": {
            "id": run.id,
            "status": run.status,
            "method": config.get("method"),
            "objective": config.get("objective", "sft"),
            "continued_from": config.get("continued_from"),
            "parent_model": _parent_model(config.get("continued_from")),
            "created": when(run.created_at),
            "finished": when(run.finished_at),
            "trained_tokens": run.trained_tokens,
            "settings": {
                name: config[name]
                for name in ("n_epochs", "batch_size", "learning_rate", "replay_share", "dpo_beta")
                if name in config and config[name] not in (None, "auto")
            },
            "results": {name: (run.metrics or {})[name] for name in RESULT_KEYS if name in (run.metrics or {})},
            "error": run.error,
        },
        "checkpoints": [
            {"step": c.step, "epoch": round(c.epoch, 2), "valid_loss": (c.metrics or {}).get("valid_loss")}
            for c in sorted(run.checkpoints, key=lambda c: c.step)
        ],
        "evaluations": [evaluation_row(e, sign) for e in store.list_evaluations(run.id)],
        "feedback": feedback_counts(owner, model.name),
        "card": card_html(run_dir / "README.md", sign(f"{base}/loss.png")),
        "downloads": [
            {"label": label, "file": name, "href": sign(f"{base}/{name}")}
            for name, label in DOWNLOADS.items()
            if name != "metrics.csv" or (run_dir / name).exists()
        ],
    }


def _dataset(sha256: str | None, role: str) -> dict | None:
    if not sha256:
        return None
    row = store.get_dataset(sha256)
    return {
        "role": role,
        "sha256": sha256,
        "name": Path(row.path).name if row else "",
        "examples": row.examples if row else None,
        "kind": row.kind if row else None,
    }


def _held_out(run_dir: Path) -> str | None:
    """What the run held out of its training file for validation, as its manifest says (train/inputs.py)."""
    import json

    try:
        validation = json.loads((run_dir / "manifest.json").read_text())["data"]["validation"] or {}
    except (OSError, ValueError, KeyError):
        return None
    return (validation.get("held_out") or {}).get("description")


def _uploaded(owner: str, job) -> list[dict]:
    """The job's uploaded files (the data page's checks), when the model came from the API."""
    if job is None:
        return []
    found = []
    for role, file_id in (("training", job.training_file), ("validation", job.validation_file)):
        row = jobs.get_file(owner, file_id) if file_id else None
        if row is not None:
            found.append({"role": role, "id": row.id, "filename": row.filename})
    return found


def _parent_model(run_id: str | None) -> str | None:
    parent = store.get_run(run_id) if run_id else None
    return parent.models[0].name if parent and parent.models else None


def evaluation_row(evaluation: store.Evaluation, sign) -> dict:
    metrics = evaluation.metrics or {}
    return {
        "id": evaluation.id,
        "model": evaluation.model,
        "against": evaluation.against,
        "task": evaluation.task,
        "created": when(evaluation.created_at),
        "data": evaluation.data_sha256[:12],
        "headline": _headline(metrics),
        "report": sign(f"/ui/files/evaluations/{evaluation.id}/report.html"),
    }


def _headline(metrics: dict) -> list[dict]:
    """The evaluation's numbers as `tuneforge eval` keeps them: per metric the model's value, the
    other model's and the paired interval of the difference, where there is one."""
    model, against, comparison = (metrics.get(k) or {} for k in ("model", "against", "comparison"))
    rows = []
    for name, value in {**(model.get("means") or {}), "loss": model.get("loss")}.items():
        if not isinstance(value, int | float):
            continue
        other = (against.get("means") or {}).get(name, against.get(name) if name == "loss" else None)
        interval = comparison.get(name) or {}
        rows.append(
            {
                "metric": name,
                "model": value,
                "against": other,
                "ci": (interval["ci_low"], interval["ci_high"]) if "ci_low" in interval else None,
            }
        )
    return rows


def feedback_counts(owner: str, model: str) -> dict:
    rows = access.feedback_with_completions(owner, model)
    return {
        "total": len(rows),
        "up": sum(f.rating > 0 for f, _ in rows),
        "down": sum(f.rating < 0 for f, _ in rows),
        "corrected": sum(bool(f.correction) for f, _ in rows),
    }


def card_html(path: Path, loss_png: str) -> dict | None:
    """The model card as HTML (markdown without raw HTML, so a card cannot inject markup), and its
    front matter as YAML text. Its loss curve becomes a signed link; other relative links, which name
    files beside the card on disk, lose their address and keep their text."""
    if not path.is_file():
        return None
    meta, body = split_card(path.read_text())
    parser = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = parser.parse(body)
    for token in tokens:
        for child in token.children or []:
            if child.type == "image" and child.attrGet("src") == "loss.png":
                child.attrSet("src", loss_png)
            elif child.type in ("image", "link_open"):
                address = str(child.attrGet("src") or child.attrGet("href") or "")
                if not address.startswith(("https://", "http://", "#")):
                    child.attrs.pop("src" if child.type == "image" else "href", None)
    import yaml

    return {
        "html": parser.renderer.render(tokens, parser.options, {}),
        "front_matter": yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) if meta else "",
    }
