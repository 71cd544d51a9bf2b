"""`tuneforge eval`: stage 3, score a model against a base on a data file; import human ratings.

`tuneforge eval MODEL --data FILE` is the default command of the `eval` group (its name, `run`, may
be left out), so the group can also hold `tuneforge eval import-ratings FILE.csv`.
"""

from pathlib import Path
from typing import Annotated

import click
import typer
from typer.core import TyperGroup

from tuneforge.cli.common import DeviceOption, PrecisionOption, app, console


class DefaultCommandGroup(TyperGroup):
    """A group that hands its arguments to `default_command` when the first one names no subcommand.
    Typer has no such thing: a group with a positional argument would swallow the subcommand names."""

    default_command = "run"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


eval_app = typer.Typer(
    cls=DefaultCommandGroup,
    no_args_is_help=True,
    help="Score a model on a data file (`tuneforge eval MODEL --data FILE`, the default command `run`), "
    "or import the human ratings of a blinded A/B sheet.",
)
app.add_typer(eval_app, name="eval")


@eval_app.command("run")
def eval_command(
    model: Annotated[str, typer.Argument(help="Run id, tuned model name (ft:...) or base model.")],
    data: Annotated[
        Path, typer.Option("--data", help="Chat JSONL; each example's last assistant turn is the reference.")
    ],
    against: Annotated[
        str | None,
        typer.Option(help="Model to compare with (default: the run's base model; 'none' for no comparison)."),
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option(
            help=(
                "Comma-separated: exact_match, normalized_exact_match, rouge_l, bleu, json_valid, accuracy. Default: "
                "chosen from the data."
            )
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Directory for results.json, examples.jsonl and report.md.")] = None,
    max_examples: Annotated[int | None, typer.Option(help="Evaluate at most this many examples.")] = None,
    max_tokens: Annotated[int, typer.Option(help="Most new tokens per answer.")] = 128,
    probes: Annotated[
        bool,
        typer.Option(
            "--probes/--no-probes", help="Also run the built-in forgetting, safety and bias probes on both models."
        ),
    ] = True,
    sheet: Annotated[
        Path | None,
        typer.Option(
            help=(
                "Also write a blinded A/B sheet (CSV) of both models' answers for human raters; its key goes beside "
                "it as FILE.key.json."
            )
        ),
    ] = None,
    precision: PrecisionOption = "auto",
    device: DeviceOption = "auto",
):
    """Score a model's answers on a data file, side by side with a base model (A/B with bootstrap intervals)."""
    from tuneforge.evaluate.compare import key_path
    from tuneforge.runs.evaluation import run_eval
    from tuneforge.runs.models import resolve_spec

    spec = resolve_spec(model)
    if against is None and spec.base_model != model:
        against = spec.base_model
    elif against is not None and against.lower() == "none":
        against = None
    out = out or Path("evals") / model.replace(":", "_").replace("/", "_")
    run_eval(
        model,
        data,
        against,
        metrics.split(",") if metrics else None,
        out,
        max_examples,
        max_tokens,
        probes=probes,
        sheet=sheet,
        precision=precision,
        device=device,
    )
    console.print((out / "report.md").read_text(), markup=False, highlight=False)
    console.print(f"results: {out / 'results.json'}")
    if sheet is not None:
        console.print(
            f"rating sheet: {sheet} (its key, {key_path(sheet)}, is for you, not the raters); "
            f"import it with `tuneforge eval import-ratings {sheet}`"
        )


@eval_app.command("import-ratings")
def import_ratings_command(
    sheet: Annotated[
        Path, typer.Argument(help="The rated CSV written by `tuneforge eval ... --sheet`, its .key.json beside it.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
):
    """Read a rated A/B sheet: the tuned model's win rate with a 95 % interval, recorded in the registry."""
    import json

    from rich.table import Table

    from tuneforge.runs.evaluation import import_ratings

    result = import_ratings(sheet)
    if as_json:
        print(json.dumps(result.as_dict()))
        return
    table = Table(title=f"Human ratings: {result.model} against {result.against}")
    for column in ("rated", "wins", "ties", "losses", "unrated", "win rate (ties half)", "95 % interval"):
        table.add_column(column, justify="right")
    table.add_row(
        str(result.rated),
        str(result.wins),
        str(result.ties),
        str(result.losses),
        str(result.unrated),
        f"{result.win_rate:.1%}",
        f"[{result.ci_low:.1%}, {result.ci_high:.1%}]",
    )
    console.print(table)
    console.print(f"recorded in the registry (human rating {result.registry_id})")
