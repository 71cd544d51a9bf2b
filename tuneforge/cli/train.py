"""`tuneforge train` (its options are TrainConfig's fields) and `tuneforge quickstart`, the main job."""

from pathlib import Path
from typing import Annotated

import typer

from tuneforge.cli.common import app, console
from tuneforge.errors import TuneforgeError, UsageError


def _train(
    config_file: Path | None = None,
    resume: str | None = None,
    nnodes: int = 1,
    node_rank: int = 0,
    master_addr: str = "127.0.0.1",
    master_port: int = 29500,
    **fields,
):
    from tuneforge.runs.continuation import resume_config
    from tuneforge.train.config import load_config

    # The settings are checked before torch and transformers are imported (seconds): a mistake is said at once.
    if resume:
        config = resume_config(resume)
        if fields.get("nproc"):  # the one thing a resume may change: how many processes carry on
            config = config.model_copy(update={"nproc": fields["nproc"]})
    else:
        from tuneforge.train.inputs import locate_data

        if fields.get("data") is None and config_file is None:
            raise UsageError("name the training data with --data (a prepared directory or a JSONL file)")
        config = load_config(config_file, fields)
        locate_data(config.data, config.validation_data)  # the data's paths, checked before the imports below

    from tuneforge.runs.launch import Machines
    from tuneforge.runs.training import train_run
    from tuneforge.train.progress import ConsoleReporter

    machines = Machines(nnodes, node_rank, master_addr, master_port)
    reporter = ConsoleReporter(console)
    try:
        result = train_run(config, reporter, run_id=resume, resume=bool(resume), machines=machines)
    finally:
        reporter.close()
    if result is None:
        console.print(f"this machine's processes (node {node_rank}) finished; the first machine records the run")
        return
    _print_run_summary(result.run_id)


@app.command("_rank", hidden=True)
def _rank():
    """One of the processes `tuneforge train --nproc N` starts through torchrun (runs/launch.py)."""
    from tuneforge.runs.training import train_launched
    from tuneforge.train import distributed
    from tuneforge.train.progress import ConsoleReporter

    try:
        train_launched(lambda payload: ConsoleReporter(console))
    except TuneforgeError as error:
        if distributed.ranks().main:
            raise
        raise typer.Exit(error.exit_code) from None  # rank 0 says what happened, once


def _train_signature():
    """`tuneforge train`'s options are TrainConfig's fields: one --flag per field, its description as help."""
    import inspect

    from tuneforge.train.config import TrainConfig

    parameters = [
        inspect.Parameter(
            "config_file",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                Path | None, typer.Option("--config", help="YAML file of TrainConfig fields; flags override it.")
            ],
        ),
        inspect.Parameter(
            "resume",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                str | None, typer.Option("--resume", help="Resume RUN_ID from its newest complete checkpoint.")
            ],
        ),
    ]
    machines = {
        "nnodes": (int, 1, "Machines taking part (each runs this command with its own --node-rank)."),
        "node_rank": (int, 0, "This machine's place among --nnodes, 0 for the first (which records the run)."),
        "master_addr": (str, "127.0.0.1", "The first machine's address, which every machine can reach."),
        "master_port": (int, 29500, "A free port on the first machine for the processes to meet."),
    }
    for name, (kind, default, help_text) in machines.items():
        parameters.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=default,
                annotation=Annotated[kind, typer.Option(f"--{name.replace('_', '-')}", help=help_text)],
            )
        )
    for name, field in TrainConfig.model_fields.items():
        default = field.default if field.default is not None and not field.is_required() else None
        if isinstance(default, bool):
            default = "on" if default else "off"
        help_text = field.description + (f" (default: {default})" if default is not None else "")
        option_type, metavar = _option_type(field.annotation)
        flag = f"--{name.replace('_', '-')}"
        # Every option defaults to None, "not given", so a YAML file's values and the config's own
        # defaults stand; a bool is --flag/--no-flag, so both a YAML true and a default on can be undone.
        declaration = f"{flag}/--no-{flag[2:]}" if option_type is bool else flag
        parameters.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[
                    option_type | None, typer.Option(declaration, help=help_text, show_default=False, metavar=metavar)
                ],
            )
        )
    return inspect.Signature(parameters)


def _option_type(annotation) -> tuple[type, str | None]:
    """What Typer parses a field's option as (bool, int, float, Path, str or the Literal's choices),
    and a metavar for the ones it cannot: `int | "auto"` stays a string that TrainConfig parses, so its
    error still names the field."""
    import types
    from typing import Literal, Union, get_args, get_origin

    if get_origin(annotation) not in (Union, types.UnionType):
        return annotation, None
    choices = [choice for choice in get_args(annotation) if choice is not type(None)]
    if len(choices) == 1:
        return choices[0], None
    names = ["|".join(get_args(choice)) if get_origin(choice) is Literal else choice.__name__ for choice in choices]
    return str, f"<{'|'.join(names)}>"  # Typer's own style: <int>, <lora|full>


_train.__signature__ = _train_signature()
app.command("train", help="Fine-tune a model (LoRA or full) on chat data; every option is a TrainConfig field.")(
    _train
)


def _print_run_summary(run_id: str) -> None:
    """The finished (or stopped) run in a few lines: its model, validation curve, tokens and directory."""
    from tuneforge.registry import store
    from tuneforge.train.report import forgetting_summary, read_metrics

    run = store.get_run(run_id)
    metrics = run.metrics or {}
    _, valid = read_metrics(Path(run.run_dir) / "metrics.csv")
    console.print(f"\n[bold green]{run.id} {run.status}[/bold green]: {run.models[0].name if run.models else ''}")
    if valid:
        console.print("  validation loss by step: " + ", ".join(f"{step}: {loss:.3f}" for step, loss in valid))
    if "valid_reward_accuracy" in metrics:  # a DPO run
        console.print(
            f"  validation reward accuracy {metrics['valid_reward_accuracy']:.3f} (pairs whose preferred reply "
            f"ranks higher), reward margin {metrics['valid_rewards_margin']:.3f}"
        )
    if guard := forgetting_summary(metrics):  # runs recorded before the forgetting guard have none
        console.print(f"  {guard}", markup=False, highlight=False)
    memory = (
        f"; peak memory {metrics['peak_memory_mb']:,.0f} MB "
        f"({'GPU, allocated' if metrics.get('memory') == 'cuda_allocated' else 'resident, rank 0'})"
        if "peak_memory_mb" in metrics
        else ""
    )
    where = ""
    if "device" in metrics:  # runs recorded before the device seam have no device
        processes = metrics.get("processes", 1)
        where = f" on {metrics['device']}" + (f", {processes} processes" if processes > 1 else "")
    console.print(
        f"  trained tokens {run.trained_tokens:,} in {metrics.get('wall_seconds', 0):.0f} s{where}{memory}; "
        f"run directory {run.run_dir}"
    )


@app.command("quickstart")
def quickstart(
    out: Annotated[Path, typer.Option(help="Where the prepared example data goes.")] = Path("prepared"),
):
    """The main job: prepare the example data, LoRA-tune the bundled model on it, show before/after."""
    from tuneforge.quickstart import run_quickstart
    from tuneforge.train.progress import ConsoleReporter

    run_quickstart(console, out, ConsoleReporter(console))
