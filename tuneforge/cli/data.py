"""`tuneforge data ...`: stage 1, check and prepare training data."""

import json
from pathlib import Path
from typing import Annotated

import typer

from tuneforge.cli.common import ModelOption, app, console, file_progress, model_or_none

data_app = typer.Typer(help="Stage 1: check and prepare training data.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("check")
def data_check(
    file: Annotated[Path, typer.Argument(help="Data file: .jsonl, .csv, .tsv or .txt.")],
    model: ModelOption = "smollm2-135m-instruct",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
    max_findings: Annotated[int, typer.Option(help="Findings kept per code (the rest are counted).")] = 20,
):
    """Find everything wrong with a data file, with line, field and a suggested fix."""
    from tuneforge.data.checks import check_with_model

    with file_progress(file, "checking") as on_progress:
        report = check_with_model(file, model_or_none(model), keep_per_code=max_findings, on_progress=on_progress)
    if as_json:
        print(json.dumps(report.as_json(), ensure_ascii=False))
    else:
        from tuneforge.data.render import render_check

        render_check(report, console)
    raise typer.Exit(0 if report.ok else 1)


@data_app.command("prepare")
def data_prepare(
    file: Annotated[Path, typer.Argument(help="Data file: .jsonl, .csv, .tsv or .txt.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Directory for train/validation/test.jsonl and manifest.json.")
    ],
    split: Annotated[str, typer.Option(help="train,validation,test fractions.")] = "0.9,0.05,0.05",
    seed: Annotated[int, typer.Option(help="Seed of the split: same data and seed, same split.")] = 42,
    redact_pii: Annotated[
        bool, typer.Option("--redact-pii", help="Replace personal data with typed placeholders like [EMAIL].")
    ] = False,
    no_dedupe: Annotated[bool, typer.Option("--no-dedupe", help="Keep exact duplicates.")] = False,
    drop_invalid: Annotated[
        bool,
        typer.Option("--drop-invalid", help="Set records with errors aside in rejected.jsonl instead of stopping."),
    ] = False,
    model: ModelOption = "smollm2-135m-instruct",
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
):
    """Normalise, de-duplicate, convert to canonical JSONL and split, with a hashed manifest."""
    from tuneforge.data.checks import check_with_model
    from tuneforge.data.prepare import DataHasErrors, PrepareOptions, prepare
    from tuneforge.data.split import parse_ratios

    ratios = parse_ratios(split)
    model_name = model_or_none(model)
    with file_progress(file, "checking") as on_progress:
        report = check_with_model(file, model_name, on_progress=on_progress)
    options = PrepareOptions(ratios, seed, redact_pii, not no_dedupe, drop_invalid, model_name)
    try:
        result = prepare(file, out, report, options)
    except DataHasErrors as error:
        if not as_json:
            from tuneforge.data.render import render_check

            render_check(error.report, console)
        raise
    if as_json:
        print(json.dumps(result.manifest, ensure_ascii=False))
    else:
        from tuneforge.data.render import render_prepare

        render_prepare(result, console)


@data_app.command("verify")
def data_verify(directory: Annotated[Path, typer.Argument(help="A directory written by `tuneforge data prepare`.")]):
    """Re-hash a prepared dataset's files and compare them with its manifest."""
    from tuneforge.data.split import verify_manifest

    problems = verify_manifest(directory)
    for problem in problems:
        console.print(f"[red]{problem}[/red]")
    if problems:
        raise typer.Exit(1)
    console.print(f"[green]{directory}: every file matches manifest.json[/green]")


@data_app.command("codes")
def data_codes():
    """List every finding code with its severity, meaning and fix."""
    from tuneforge.data.render import render_codes

    render_codes(console)
