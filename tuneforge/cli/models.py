"""`tuneforge models ...` and `tuneforge runs ...`: base models, training runs and their registry rows."""

import json
from pathlib import Path
from typing import Annotated

import typer

from tuneforge.cli.common import app, console
from tuneforge.errors import UsageError

models_app = typer.Typer(help="Base models: the bundled catalog, local directories, hub ids.", no_args_is_help=True)
runs_app = typer.Typer(help="Training runs in the registry.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(runs_app, name="runs")


@models_app.command("list")
def models_list(as_json: Annotated[bool, typer.Option("--json")] = False):
    """Bundled models, hub models in the local Hugging Face cache, and tuned models from the registry."""
    from rich.table import Table

    from tuneforge.models.catalog import bundled_installed, list_models

    refs = list_models()
    rows = []
    for ref in refs:
        if ref.source == "bundled":
            state = (
                "ready"
                if ref.ready
                else ("installed, converts on first use" if bundled_installed(ref.name) else "not installed")
            )
        else:
            state = "cached"
        rows.append(
            {
                "name": ref.name,
                "source": ref.source,
                "state": state,
                "license": ref.license,
                "description": ref.description,
            }
        )
    from tuneforge.registry import store

    for tuned in store.list_models():
        rows.append(
            {
                "name": tuned.name,
                "source": "tuned",
                "state": "ready" if Path(tuned.path).exists() else "missing",
                "license": None,
                "description": f"{tuned.kind} from run {tuned.run_id} on {tuned.base_model}",
            }
        )
    if as_json:
        print(json.dumps(rows))
        return
    table = Table(title="Models (also accepted: any local model directory or hub id)")
    for column in ("name", "source", "state", "license", "description"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[c] or "") for c in ("name", "source", "state", "license", "description")))
    console.print(table)


@models_app.command("show")
def models_show(name: Annotated[str, typer.Argument(help="Catalog name, local directory or hub id.")]):
    """Resolve a model name and print its architecture, size, context length and chat template."""
    from tuneforge.models.catalog import load_tokenizer, model_facts, resolve_model

    ref = resolve_model(name)
    facts = model_facts(name)
    tokenizer = load_tokenizer(name)
    console.print(f"[bold]{name}[/bold] ({ref.source}: {ref.location})")
    console.print(f"  {ref.description}")
    console.print(
        f"  architecture {facts['architecture']}, {facts['parameters'] / 1e6:.1f} M parameters, "
        f"context {facts['context_length']}, vocabulary {facts['vocab_size']:,}"
    )
    console.print(
        f"  licence: {ref.license or 'see the model card'}; chat template: "
        f"{'yes' if tokenizer.chat_template else 'no'}"
    )


@runs_app.command("list")
def runs_list(as_json: Annotated[bool, typer.Option("--json")] = False):
    """Every training run in the registry, newest first."""
    from rich.table import Table

    from tuneforge.registry import store
    from tuneforge.runs import stored

    runs = store.list_runs()
    rows = [
        {
            "id": r.id,
            # With an object store, a run trained on another machine is fetched when it is needed.
            "status": r.status if Path(r.run_dir).exists() or stored.enabled() else f"{r.status} (directory missing)",
            "method": r.method,
            "base_model": r.base_model,
            "trained_tokens": r.trained_tokens,
            "valid_loss": (r.metrics or {}).get("valid_loss"),
            "created_at": r.created_at.isoformat(timespec="seconds"),
        }
        for r in runs
    ]
    if as_json:
        print(json.dumps(rows))
        return
    table = Table(title="Runs")
    for column in ("id", "status", "method", "base_model", "trained_tokens", "valid_loss", "created_at"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v if v is not None else "") for v in row.values()))
    console.print(table)


@runs_app.command("show")
def runs_show(run_id: Annotated[str, typer.Argument(help="A run id from `tuneforge runs list`.")]):
    """A run's config, data lineage, checkpoints, models and final metrics, as JSON."""
    from tuneforge.registry import store

    run = store.get_run(run_id)
    if run is None:
        raise UsageError(f"no run '{run_id}'", fix="See `tuneforge runs list`.")
    print(
        json.dumps(
            {
                "id": run.id,
                "status": run.status,
                "run_dir": run.run_dir,
                "base_model": run.base_model,
                "method": run.method,
                "train_dataset": run.train_dataset,
                "validation_dataset": run.validation_dataset,
                "config": run.config,
                "trained_tokens": run.trained_tokens,
                "metrics": run.metrics,
                "error": run.error,
                "checkpoints": [{"step": c.step, "path": c.path, "metrics": c.metrics} for c in run.checkpoints],
                "models": [m.name for m in run.models],
                "evaluations": [
                    {
                        "id": e.id,
                        "against": e.against,
                        "task": e.task,
                        "report_dir": e.report_dir,
                        "created_at": e.created_at.isoformat(),
                    }
                    for e in store.list_evaluations(run.id)
                ],
                "created_at": run.created_at.isoformat(),
                "finished_at": run.finished_at.isoformat() if run.finished_at else None,
            },
            indent=2,
        )
    )


@runs_app.command("rm")
def runs_rm(run_id: Annotated[str, typer.Argument(help="The run to delete, with its directory and models.")]):
    """Delete a run: its registry rows and its directory, together."""
    from tuneforge.registry import store

    if not store.delete_run(run_id):
        raise UsageError(f"no run '{run_id}'")
    console.print(f"deleted {run_id}")
