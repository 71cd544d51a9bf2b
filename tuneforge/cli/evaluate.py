"""`tuneforge eval`: stage 3, score a model against a base on a data file."""

from pathlib import Path
from typing import Annotated

import typer

from tuneforge.cli.common import app, console


@app.command("eval")
def eval_command(
    model: Annotated[str, typer.Argument(help="Run id, tuned model name (ft:...) or base model.")],
    data: Annotated[Path, typer.Option("--data", help="Chat JSONL; each example's last assistant turn is the reference.")],
    against: Annotated[str | None, typer.Option(help="Model to compare with (default: the run's base model; 'none' for no comparison).")] = None,
    metrics: Annotated[str | None, typer.Option(help="Comma-separated: exact_match, normalized_exact_match, rouge_l, bleu, json_valid, accuracy. Default: chosen from the data.")] = None,
    out: Annotated[Path | None, typer.Option(help="Directory for results.json, examples.jsonl and report.md.")] = None,
    max_examples: Annotated[int | None, typer.Option(help="Evaluate at most this many examples.")] = None,
    max_tokens: Annotated[int, typer.Option(help="Most new tokens per answer.")] = 128,
):
    """Score a model's answers on a data file, side by side with a base model (A/B with bootstrap intervals)."""
    from tuneforge.evaluate.run import run_eval
    from tuneforge.serve.engine import resolve_spec

    spec = resolve_spec(model)
    if against is None and spec.base_model != model:
        against = spec.base_model
    elif against is not None and against.lower() == "none":
        against = None
    out = out or Path("evals") / model.replace(":", "_").replace("/", "_")
    run_eval(model, data, against, metrics.split(",") if metrics else None, out, max_examples, max_tokens)
    console.print((out / "report.md").read_text(), markup=False, highlight=False)
    console.print(f"results: {out / 'results.json'}")
