"""Evaluations as recorded runs: the evaluate stage's calls, with names resolved through the registry
and their results kept there (an `Evaluation` row, a link from the run's model card, human ratings).
With an artifact store, the report's folder is kept there too (`evaluations/<id>/`), and its row
points at it, so any server shows it.
"""

import secrets
from pathlib import Path

from tuneforge.evaluate import compare
from tuneforge.evaluate import run as evaluate_stage
from tuneforge.registry import artifacts, store
from tuneforge.registry.access import DEFAULT_PROJECT
from tuneforge.runs import stored
from tuneforge.runs.models import resolve_spec


def run_eval(
    model: str,
    data: Path,
    against: str | None,
    metric_names: list[str] | None,
    out_dir: Path,
    *args,
    evaluation_id: int | None = None,
    project: str | None = None,
    **options,
) -> dict:
    """`tuneforge eval`: the stage's `run_eval` on any model names (runs, tuned models, checkpoints,
    bases), recorded in the registry (as the row `evaluation_id` where one was started for it: the
    dashboard's) and linked from the model's card. It belongs to `project`, else to the model's
    run's project, else to the default project (base models evaluated by the operator)."""
    from tuneforge.data.split import sha256_file
    from tuneforge.train.card import link_evaluation

    run = store.run_for_model(model)
    run_dir = stored.run_folder(run) if run else None
    results = evaluate_stage.run_eval(
        model, data, against, metric_names, out_dir, *args, resolve=resolve_spec, model_run_dir=run_dir, **options
    )
    data_sha256 = sha256_file(data)
    report = out_dir.resolve()
    if artifacts.storage_url() is not None:
        key = f"evaluations/{secrets.token_hex(8)}"
        artifacts.put_folder(report, key)
        report = artifacts.key_url(key)
    store.record_evaluation(
        model,
        against,
        run.id if run else None,
        data_sha256,
        results["task"],
        evaluate_stage.headline(results),
        report,
        project=project or (run.project if run else DEFAULT_PROJECT),
        evaluation_id=evaluation_id,
    )
    if run_dir is not None and (run_dir / "README.md").exists():
        link_evaluation(
            run_dir, out_dir.resolve(), evaluate_stage.markdown_report(results), model, results, data_sha256
        )
        stored.upload_cards(run_dir)
    return results


def generate_file(model: str, data: Path, out: Path, *args, **options) -> int:
    """`tuneforge generate` on any model name."""
    return evaluate_stage.generate_file(model, data, out, *args, resolve=resolve_spec, **options)


def import_ratings(sheet: Path) -> compare.RatingResult:
    """A rated blind A/B sheet's win rate, recorded in the registry."""
    result = compare.rate_sheet(sheet)
    run = store.run_for_model(result.model)
    result.registry_id = store.record_human_ratings(
        model=result.model,
        against=result.against,
        run_id=run.id if run else None,
        data_sha256=result.data_sha256,
        eval_dir=result.eval_dir,
        sheet=result.sheet,
        rated=result.rated,
        wins=result.wins,
        ties=result.ties,
        losses=result.losses,
        unrated=result.unrated,
        win_rate=result.win_rate,
        ci_low=result.ci_low,
        ci_high=result.ci_high,
    )
    return result
