"""What every command module shares: the Typer apps, the consoles and small option helpers."""

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    help="Tuneforge: fine-tune open language models on your own machine.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

console = Console()
err_console = Console(stderr=True)

ModelOption = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Model whose tokenizer and chat template count tokens: catalog name, local dir or hub id; "
        "'none' to skip.",
    ),
]
# fast_llama.PRECISIONS, spelled out here so that the CLI's help and checks import no torch.
PRECISION_CHOICES = ("auto", "fp32", "bf16", "int8")


def _precision(value: str) -> str:
    if value not in PRECISION_CHOICES:
        raise typer.BadParameter(f"'{value}' is not one of {', '.join(PRECISION_CHOICES)}")
    return value


PrecisionOption = Annotated[
    str,
    typer.Option(
        callback=_precision,
        help="Weights while generating: auto (bf16 where the CPU has bf16 "
        "instructions, else fp32), fp32, bf16, or int8 (half of bf16's memory "
        "traffic, faster at small batches; slightly less accurate).",
    ),
]


def model_or_none(model: str) -> str | None:
    return None if model.lower() == "none" else model


@contextmanager
def file_progress(path: Path, verb: str):
    """A progress bar over the file's bytes on an interactive terminal; nothing otherwise."""
    if not err_console.is_terminal or not path.is_file():
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    with Progress(
        f"{verb} {path.name}",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        task = progress.add_task(verb, total=path.stat().st_size)
        yield lambda done: progress.update(task, completed=done)
