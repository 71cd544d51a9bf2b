"""The `tuneforge` command: one thin command per stage function.

Each command parses its options, calls one function of a stage and renders the result. Errors a user
can cause print as a message with a fix and exit non-zero (1 for bad data, 2 for bad usage); nothing
prints a traceback unless TUNEFORGE_DEBUG=1. The commands live in one module per stage; importing
them registers them on `app`.
"""

import os
import sys
from typing import Annotated

import typer
from rich.markup import escape

from tuneforge import __version__
from tuneforge.cli import data, doctor, evaluate, models, serve, train, use  # noqa: F401  (registers the commands)
from tuneforge.cli.common import app, console, err_console
from tuneforge.errors import TuneforgeError


@app.callback(invoke_without_command=True)
def _root(version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False):
    if version:
        console.print(f"tuneforge {__version__}")
        raise typer.Exit()


def main() -> None:
    import logging

    from tuneforge.hardware import bound_kernel_caches

    bound_kernel_caches()  # before torch runs its first matmul: see hardware.py

    import warnings

    from rich.logging import RichHandler

    # Tokenizers warn about fork-after-parallelism in subprocesses; the CLI is single-process.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    # Library progress bars and deprecation notices would drown our own output.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*ensure_weight_tying.*")
    handler = RichHandler(console=err_console, show_time=False, show_path=False)
    logging.getLogger("tuneforge").addHandler(handler)
    logging.getLogger("tuneforge").setLevel(logging.INFO)
    # peft imports bitsandbytes wherever it is installed, and bitsandbytes then warns, on every
    # command, that it could not fetch an optional CPU kernel from the hub (it runs its own instead).
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    try:
        app()
    except TuneforgeError as error:
        # escape: a message may quote text with brackets (a path, gloo's "[.../pair.cc:553]"), not markup
        err_console.print(f"[bold red]error:[/bold red] {escape(error.message)}", highlight=False)
        if error.fix:
            err_console.print(f"[bold]fix:[/bold] {escape(error.fix)}", highlight=False)
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
