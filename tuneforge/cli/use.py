"""Using a model: `tuneforge chat`, `generate` and `export`."""

from pathlib import Path
from typing import Annotated

import typer

from tuneforge.cli.common import DeviceOption, PrecisionOption, app, console


@app.command("chat")
def chat(
    model: Annotated[str, typer.Argument(help="Run id, tuned model name (ft:...) or base model.")],
    prompt: Annotated[str | None, typer.Argument(help="One message to answer; omit for an interactive chat.")] = None,
    system: Annotated[str | None, typer.Option(help="System message.")] = None,
    max_tokens: Annotated[int, typer.Option(help="Most tokens per answer.")] = 256,
    temperature: Annotated[float, typer.Option(help="0 for greedy decoding.")] = 0.0,
    precision: PrecisionOption = "auto",
    device: DeviceOption = "auto",
):
    """Talk to a model: one-shot with PROMPT, or interactive (empty line or Ctrl-D to quit)."""
    from tuneforge.data.examples import Message
    from tuneforge.runs.models import engine as engine_for

    engine = engine_for(model, precision=precision, device=device)
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
    data: Annotated[
        Path,
        typer.Option(
            "--data", help="Chat JSONL: each example's messages before its last assistant turn are the prompt."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="JSONL of prompts, references and generations.")],
    max_tokens: Annotated[int, typer.Option(help="Most tokens per answer.")] = 256,
    temperature: Annotated[float, typer.Option(help="0 for greedy decoding.")] = 0.0,
    batch_size: Annotated[int, typer.Option(help="Prompts generated together.")] = 8,
    precision: PrecisionOption = "auto",
    device: DeviceOption = "auto",
):
    """Batch generation over a data file."""
    from tuneforge.runs.evaluation import generate_file

    written = generate_file(model, data, out, max_tokens, temperature, batch_size, precision, device=device)
    console.print(f"wrote {written} generations to {out}")


@app.command("export")
def export(
    run: Annotated[str, typer.Argument(help="Run id or tuned model name.")],
    merged: Annotated[
        Path | None, typer.Option("--merged", help="Directory for merged full weights that plain transformers loads.")
    ] = None,
    gguf: Annotated[
        Path | None, typer.Option("--gguf", help="A GGUF file for llama.cpp, Ollama or LM Studio (merged weights).")
    ] = None,
    dtype: Annotated[
        str | None,
        typer.Option("--dtype", help="--merged: fp32 (default) or bf16; --gguf: f16 (default) or q8_0."),
    ] = None,
):
    """Write a run's model as merged full weights (adapter folded into the base), or as a GGUF file."""
    from tuneforge.errors import UsageError
    from tuneforge.runs.models import export_gguf, export_merged

    if (merged is None) == (gguf is None):
        raise UsageError("give one of --merged DIR or --gguf FILE")
    if merged is not None:
        if dtype not in (None, "fp32", "bf16"):
            raise UsageError(f"--dtype {dtype}: merged weights are fp32 or bf16")
        export_merged(run, merged, dtype or "fp32")
        console.print(f"merged weights written to {merged} (load with AutoModelForCausalLM.from_pretrained)")
    else:
        if dtype not in (None, "f16", "q8_0"):
            raise UsageError(f"--dtype {dtype}: a GGUF file is f16 or q8_0")
        export_gguf(run, gguf, dtype or "f16")
        size = gguf.stat().st_size / 2**20
        console.print(f"GGUF written to {gguf} ({size:,.1f} MiB; llama.cpp: llama-cli -m {gguf})")
