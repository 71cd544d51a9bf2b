"""The `tuneforge` command: one thin command per stage function.

Each command parses its options, calls one function of a stage and renders the result. Errors a user
can cause print as a message with a fix and exit non-zero (1 for bad data, 2 for bad usage); nothing
prints a traceback unless TUNEFORGE_DEBUG=1.
"""

import json
import os
import sys
from contextlib import contextmanager
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
runs_app = typer.Typer(help="Training runs in the registry.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(runs_app, name="runs")

console = Console()
err_console = Console(stderr=True)

ModelOption = Annotated[str, typer.Option("--model", "-m", help="Model whose tokenizer and chat template count tokens: catalog name, local dir or hub id; 'none' to skip.")]


def _model_or_none(model: str) -> str | None:
    return None if model.lower() == "none" else model


@contextmanager
def _file_progress(path: Path, verb: str):
    """A progress bar over the file's bytes on an interactive terminal; nothing otherwise."""
    if not err_console.is_terminal or not path.is_file():
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    with Progress(f"{verb} {path.name}", BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as progress:
        task = progress.add_task(verb, total=path.stat().st_size)
        yield lambda done: progress.update(task, completed=done)


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

    with _file_progress(file, "checking") as on_progress:
        report = check_with_model(file, _model_or_none(model), keep_per_code=max_findings, on_progress=on_progress)
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
    with _file_progress(file, "checking") as on_progress:
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


@models_app.command("list")
def models_list(as_json: Annotated[bool, typer.Option("--json")] = False):
    """Bundled models, hub models in the local Hugging Face cache, and tuned models from the registry."""
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
    from tuneforge.registry import store

    for tuned in store.list_models():
        rows.append({"name": tuned.name, "source": "tuned", "state": "ready" if Path(tuned.path).exists() else "missing",
                     "license": None, "description": f"{tuned.kind} from run {tuned.run_id} on {tuned.base_model}"})
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


# ------------------------------------------------------------------------------------ training
def _train(config_file: Path | None = None, resume: str | None = None, **fields):
    from tuneforge.train.config import TrainConfig, load_config
    from tuneforge.train.progress import ConsoleReporter
    from tuneforge.train.sft import train_sft

    reporter = ConsoleReporter(console)
    try:
        if resume:
            from tuneforge.registry import store

            run = store.get_run(resume)
            if run is None:
                raise UsageError(f"no run '{resume}'", fix="See `tuneforge runs list`.")
            config = TrainConfig(**{k: v for k, v in run.config.items() if k in TrainConfig.model_fields})
            result = train_sft(config, reporter, run_id=resume, resume=True)
        else:
            if fields.get("data") is None and config_file is None:
                raise UsageError("name the training data with --data (a prepared directory or a JSONL file)")
            result = train_sft(load_config(config_file, fields), reporter)
    finally:
        reporter.close()
    _print_run_summary(result.run_id)


def _train_signature():
    """`tuneforge train`'s options are TrainConfig's fields: one --flag per field, its description as help."""
    import inspect

    from tuneforge.train.config import TrainConfig

    parameters = [
        inspect.Parameter("config_file", inspect.Parameter.KEYWORD_ONLY, default=None,
                          annotation=Annotated[Path | None, typer.Option("--config", help="YAML file of TrainConfig fields; flags override it.")]),
        inspect.Parameter("resume", inspect.Parameter.KEYWORD_ONLY, default=None,
                          annotation=Annotated[str | None, typer.Option("--resume", help="Resume RUN_ID from its newest complete checkpoint.")]),
    ]
    for name, field in TrainConfig.model_fields.items():
        default = field.default if field.default is not None and not field.is_required() else None
        help_text = field.description + (f" (default: {default})" if default is not None else "")
        parameters.append(inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=None,
            annotation=Annotated[str | None, typer.Option(f"--{name.replace('_', '-')}", help=help_text, show_default=False)]))
    return inspect.Signature(parameters)


_train.__signature__ = _train_signature()
app.command("train", help="Fine-tune a model (LoRA or full) on chat data; every option is a TrainConfig field.")(_train)


def _print_run_summary(run_id: str) -> None:
    from tuneforge.registry import store
    from tuneforge.train.report import read_metrics

    run = store.get_run(run_id)
    metrics = run.metrics or {}
    _, valid = read_metrics(Path(run.run_dir) / "metrics.csv")
    console.print(f"\n[bold green]{run.id} {run.status}[/bold green]: {run.models[0].name if run.models else ''}")
    if valid:
        console.print("  validation loss by step: " + ", ".join(f"{step}: {loss:.3f}" for step, loss in valid))
    console.print(f"  trained tokens {run.trained_tokens:,} in {metrics.get('wall_seconds', 0):.0f} s; "
                  f"run directory {run.run_dir}")


@runs_app.command("list")
def runs_list(as_json: Annotated[bool, typer.Option("--json")] = False):
    """Every training run in the registry, newest first."""
    from rich.table import Table

    from tuneforge.registry import store

    runs = store.list_runs()
    rows = [{"id": r.id, "status": r.status if Path(r.run_dir).exists() else f"{r.status} (directory missing)",
             "method": r.method, "base_model": r.base_model, "trained_tokens": r.trained_tokens,
             "valid_loss": (r.metrics or {}).get("valid_loss"), "created_at": r.created_at.isoformat(timespec="seconds")}
            for r in runs]
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
    print(json.dumps({
        "id": run.id, "status": run.status, "run_dir": run.run_dir, "base_model": run.base_model, "method": run.method,
        "train_dataset": run.train_dataset, "validation_dataset": run.validation_dataset, "config": run.config,
        "trained_tokens": run.trained_tokens, "metrics": run.metrics, "error": run.error,
        "checkpoints": [{"step": c.step, "path": c.path, "metrics": c.metrics} for c in run.checkpoints],
        "models": [m.name for m in run.models],
        "evaluations": [{"id": e.id, "against": e.against, "task": e.task, "report_dir": e.report_dir,
                         "created_at": e.created_at.isoformat()} for e in store.list_evaluations(run.id)],
        "created_at": run.created_at.isoformat(), "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }, indent=2))


@runs_app.command("rm")
def runs_rm(run_id: Annotated[str, typer.Argument(help="The run to delete, with its directory and models.")]):
    """Delete a run: its registry rows and its directory, together."""
    from tuneforge.registry import store

    if not store.delete_run(run_id):
        raise UsageError(f"no run '{run_id}'")
    console.print(f"deleted {run_id}")


# ------------------------------------------------------------------------------ using a model
@app.command("chat")
def chat(
    model: Annotated[str, typer.Argument(help="Run id, tuned model name (ft:...) or base model.")],
    prompt: Annotated[str | None, typer.Argument(help="One message to answer; omit for an interactive chat.")] = None,
    system: Annotated[str | None, typer.Option(help="System message.")] = None,
    max_tokens: Annotated[int, typer.Option(help="Most tokens per answer.")] = 256,
    temperature: Annotated[float, typer.Option(help="0 for greedy decoding.")] = 0.0,
):
    """Talk to a model: one-shot with PROMPT, or interactive (empty line or Ctrl-D to quit)."""
    from tuneforge.data.examples import Message
    from tuneforge.serve.engine import Engine

    engine = Engine(model)
    history = [Message("system", system)] if system else []
    while True:
        text = prompt if prompt is not None else _ask()
        if not text:
            return
        history.append(Message("user", text))
        [answer] = engine.generate([history], max_new_tokens=max_tokens, temperature=temperature)
        console.print(answer.text, highlight=False, markup=False)
        if prompt is not None:
            return
        history.append(Message("assistant", answer.text))


def _ask() -> str:
    try:
        return console.input("[bold]you>[/bold] ").strip()
    except EOFError:
        return ""


@app.command("generate")
def generate(
    model: Annotated[str, typer.Argument(help="Run id, tuned model name (ft:...) or base model.")],
    data: Annotated[Path, typer.Option("--data", help="Chat JSONL: each example's messages before its last assistant turn are the prompt.")],
    out: Annotated[Path, typer.Option("--out", help="JSONL of prompts, references and generations.")],
    max_tokens: Annotated[int, typer.Option(help="Most tokens per answer.")] = 256,
    temperature: Annotated[float, typer.Option(help="0 for greedy decoding.")] = 0.0,
    batch_size: Annotated[int, typer.Option(help="Prompts generated together.")] = 8,
):
    """Batch generation over a data file."""
    from tuneforge.evaluate.run import generate_file

    written = generate_file(model, data, out, max_tokens, temperature, batch_size)
    console.print(f"wrote {written} generations to {out}")


@app.command("export")
def export(
    run: Annotated[str, typer.Argument(help="Run id or tuned model name.")],
    merged: Annotated[Path, typer.Option("--merged", help="Directory for merged full weights that plain transformers loads.")],
):
    """Write a run's model as merged full weights (adapter folded into the base) with its tokenizer."""
    from tuneforge.serve.engine import export_merged

    export_merged(run, merged)
    console.print(f"merged weights written to {merged} (load with AutoModelForCausalLM.from_pretrained)")


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
    results = run_eval(model, data, against, metrics.split(",") if metrics else None, out, max_examples, max_tokens)
    console.print((out / "report.md").read_text(), markup=False, highlight=False)
    console.print(f"results: {out / 'results.json'}")


@app.command("quickstart")
def quickstart(
    out: Annotated[Path, typer.Option(help="Where the prepared example data goes.")] = Path("prepared"),
):
    """The main job: prepare the example data, LoRA-tune the bundled model on it, show before/after."""
    from tuneforge.quickstart import run_quickstart
    from tuneforge.train.progress import ConsoleReporter

    run_quickstart(console, out, ConsoleReporter(console))


def main() -> None:
    import logging

    from rich.logging import RichHandler

    import warnings

    # Tokenizers warn about fork-after-parallelism in subprocesses; the CLI is single-process.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    # Library progress bars and deprecation notices would drown our own output.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*ensure_weight_tying.*")
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
