"""The `tuneforge` command: one thin command per stage function.

Each command parses its options, calls one function of a stage and renders the result. Errors a user
can cause print as a message with a fix and exit non-zero (1 for bad data, 2 for bad usage); nothing
prints a traceback unless TUNEFORGE_DEBUG=1.
"""

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tuneforge import __version__
from tuneforge.errors import TuneforgeError, UsageError

app = typer.Typer(help="Tuneforge: fine-tune open language models on your own machine.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Stage 1: check and prepare training data.", no_args_is_help=True)
models_app = typer.Typer(help="Base models: the bundled catalog, local directories, hub ids.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")

console = Console()
err_console = Console(stderr=True)

ModelOption = Annotated[str, typer.Option("--model", "-m", help="Model whose tokenizer and chat template count tokens: catalog name, local dir or hub id; 'none' to skip.")]


def _model_or_none(model: str) -> str | None:
    return None if model.lower() == "none" else model


@app.callback(invoke_without_command=True)
def _root(version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False):
    if version:
        console.print(f"tuneforge {__version__}")
        raise typer.Exit()


@data_app.command("check")
def data_check(
    file: Annotated[Path, typer.Argument(help="Data file: .jsonl, .csv, .tsv or .txt.")],
    model: ModelOption = "smollm2-135m-instruct",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
    max_findings: Annotated[int, typer.Option(help="Findings kept per code (the rest are counted).")] = 20,
):
    """Find everything wrong with a data file, with line, field and a suggested fix."""
    from tuneforge.data.checks import check_with_model

    report = check_with_model(file, _model_or_none(model), keep_per_code=max_findings)
    if as_json:
        print(json.dumps(report.as_json(), ensure_ascii=False))
    else:
        from tuneforge.data.render import render_check

        render_check(report, console)
    raise typer.Exit(0 if report.ok else 1)


@data_app.command("prepare")
def data_prepare(
    file: Annotated[Path, typer.Argument(help="Data file: .jsonl, .csv, .tsv or .txt.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for train/validation/test.jsonl and manifest.json.")],
    split: Annotated[str, typer.Option(help="train,validation,test fractions.")] = "0.9,0.05,0.05",
    seed: Annotated[int, typer.Option(help="Seed of the split: same data and seed, same split.")] = 42,
    redact_pii: Annotated[bool, typer.Option("--redact-pii", help="Replace personal data with typed placeholders like [EMAIL].")] = False,
    no_dedupe: Annotated[bool, typer.Option("--no-dedupe", help="Keep exact duplicates.")] = False,
    drop_invalid: Annotated[bool, typer.Option("--drop-invalid", help="Set records with errors aside in rejected.jsonl instead of stopping.")] = False,
    model: ModelOption = "smollm2-135m-instruct",
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
):
    """Normalise, de-duplicate, convert to canonical JSONL and split, with a hashed manifest."""
    from tuneforge.data.checks import check_with_model
    from tuneforge.data.prepare import DataHasErrors, PrepareOptions, prepare
    from tuneforge.data.split import parse_ratios

    ratios = parse_ratios(split)
    model_name = _model_or_none(model)
    report = check_with_model(file, model_name)
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


@models_app.command("list")
def models_list(as_json: Annotated[bool, typer.Option("--json")] = False):
    """Bundled models and hub models in the local Hugging Face cache."""
    from rich.table import Table

    from tuneforge.models.catalog import bundled_installed, list_models

    refs = list_models()
    rows = []
    for ref in refs:
        if ref.source == "bundled":
            state = "ready" if ref.ready else ("installed, converts on first use" if bundled_installed(ref.name) else "not installed")
        else:
            state = "cached"
        rows.append({"name": ref.name, "source": ref.source, "state": state, "license": ref.license, "description": ref.description})
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
    console.print(f"  architecture {facts['architecture']}, {facts['parameters'] / 1e6:.1f} M parameters, "
                  f"context {facts['context_length']}, vocabulary {facts['vocab_size']:,}")
    console.print(f"  licence: {ref.license or 'see the model card'}; chat template: {'yes' if tokenizer.chat_template else 'no'}")


@app.command("quickstart")
def quickstart(
    out: Annotated[Path, typer.Option(help="Where the prepared example data goes.")] = Path("prepared"),
):
    """The main job: check and prepare the bundled example data with the bundled model's tokenizer."""
    from tuneforge.data.checks import check_with_model
    from tuneforge.data.prepare import PrepareOptions, prepare
    from tuneforge.data.render import render_check, render_prepare
    from tuneforge.models.catalog import DEFAULT_MODEL

    examples = Path(__file__).resolve().parent.parent / "examples"
    if not (examples / "support_chat.jsonl").exists():
        raise UsageError(f"{examples}: example data not found", fix="Run quickstart from a checkout of the Tuneforge repository.")
    for name in ("support_chat", "ticket_classifier"):
        console.rule(f"[bold]{name}.jsonl: check and prepare")
        report = check_with_model(examples / f"{name}.jsonl", DEFAULT_MODEL)
        render_check(report, console)
        result = prepare(examples / f"{name}.jsonl", out / name, report, PrepareOptions(model=DEFAULT_MODEL))
        render_prepare(result, console)


def main() -> None:
    import logging

    from rich.logging import RichHandler

    # Tokenizers warn about fork-after-parallelism in subprocesses; the CLI is single-process.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    handler = RichHandler(console=err_console, show_time=False, show_path=False)
    logging.getLogger("tuneforge").addHandler(handler)
    logging.getLogger("tuneforge").setLevel(logging.INFO)
    try:
        app()
    except TuneforgeError as error:
        err_console.print(f"[bold red]error:[/bold red] {error.message}", highlight=False)
        if error.fix:
            err_console.print(f"[bold]fix:[/bold] {error.fix}", highlight=False)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as error:  # a bug in Tuneforge, not the user's doing: still no traceback by default
        if os.environ.get("TUNEFORGE_DEBUG") == "1":
            raise
        err_console.print(f"[bold red]internal error:[/bold red] {type(error).__name__}: {error}", highlight=False)
        err_console.print("Re-run with TUNEFORGE_DEBUG=1 for the traceback, and please report it.")
        sys.exit(3)
