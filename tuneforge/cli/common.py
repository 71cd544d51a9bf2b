"""What every command module shares: the Typer apps, the consoles and small option helpers."""

import re
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tuneforge.hardware import DEVICE_PATTERN  # hardware.py imports torch only when a device is resolved

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
        help="Weights while generating: auto (bf16 where the device runs it natively: a CPU with bf16 "
        "instructions or a GPU with bf16; else fp32), fp32, bf16, or int8 (CPU only: half of bf16's memory "
        "traffic, faster at small batches; slightly less accurate).",
    ),
]


def _device(value: str) -> str:
    if not re.match(DEVICE_PATTERN, value):
        raise typer.BadParameter(f"'{value}' is not one of auto, cpu, cuda, cuda:N, mps")
    return value


DeviceOption = Annotated[
    str,
    typer.Option(
        callback=_device,
        help="Where the model runs: auto (a CUDA GPU where PyTorch sees one, else the CPU), cpu, cuda, cuda:N or mps.",
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
