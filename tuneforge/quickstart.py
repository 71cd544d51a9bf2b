"""The README's main job (`make quickstart` -> `tuneforge quickstart`): the whole workflow on the
bundled model and the bundled example data, in a few minutes on a laptop CPU.

1. check and prepare examples/support_chat.jsonl (a support assistant with a house style);
2. fine-tune SmolLM2-135M-Instruct with LoRA on it (2 epochs: the house style is learned by then,
   and the run stays within a few minutes on 2 cores);
3. print the validation curve, the forgetting guard's figure beside the task's (what tuning cost
   on general prompts), and three held-out prompts answered before and after tuning;
4. evaluate the tuned model against the base on the held-out test split (`tuneforge eval` without
   the probes, answers capped at 64 tokens) and print the headline and the path of report.html.
"""

import time
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from tuneforge.data.checks import check_with_model
from tuneforge.data.prepare import PrepareOptions, prepare
from tuneforge.data.render import render_check, render_prepare
from tuneforge.errors import UsageError
from tuneforge.models.catalog import DEFAULT_MODEL
from tuneforge.train.config import TrainConfig
from tuneforge.train.report import forgetting_summary, read_metrics

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
QUICKSTART_EPOCHS = 2
SHOWN_PROMPTS = 3
# The example data's whole test split (16 examples; fewer would widen the interval) and answers cut at
# 64 new tokens: generation is most of the evaluation's cost (27 s for both models on 2 idle cores).
EVAL_EXAMPLES = 16
EVAL_MAX_NEW_TOKENS = 64


def run_quickstart(console: Console, out: Path, reporter) -> str:
    source = EXAMPLES / "support_chat.jsonl"
    if not source.exists():
        raise UsageError(
            f"{source}: example data not found", fix="Run quickstart from a checkout of the Tuneforge repository."
        )

    console.rule("[bold]1. Data: check and prepare examples/support_chat.jsonl")
    report = check_with_model(source, DEFAULT_MODEL)
    render_check(report, console)
    prepared_result = prepare(source, out / "support_chat", report, PrepareOptions(model=DEFAULT_MODEL))
    render_prepare(prepared_result, console)
    prepared = prepared_result.out_dir

    console.rule(f"[bold]2. Train: LoRA on {DEFAULT_MODEL}, {QUICKSTART_EPOCHS} epochs")
    from tuneforge.runs.training import train_run

    try:
        result = train_run(TrainConfig(data=prepared, n_epochs=QUICKSTART_EPOCHS, suffix="support"), reporter)
    finally:
        reporter.close()

    console.rule("[bold]3. Result: validation curve and before/after on held-out prompts")
    _, valid = read_metrics(result.run_dir / "metrics.csv")
    curve = Table("step", "validation loss", "", title="Validation loss")
    top = max(loss for _, loss in valid)
    for step, loss in valid:
        curve.add_row(str(step), f"{loss:.4f}", "#" * max(1, round(40 * loss / top)))
    console.print(curve)
    show_forgetting(console, result.metrics)
    show_before_after(console, prepared / "test.jsonl", result.model_name)

    console.rule("[bold]4. Evaluate: tuned against base on the held-out test split")
    show_evaluation(console, prepared / "test.jsonl", result.run_id)
    console.print(
        f"\nTuned model: [bold]{result.model_name}[/bold]\nRun directory: {result.run_dir} "
        f"(adapter/, metrics.csv, loss.png, README.md model card)\n"
        f'Try it: tuneforge chat {result.run_id} "How do I send a reminder?"'
    )
    return result.run_id


def show_forgetting(console: Console, metrics: dict) -> None:
    """The forgetting guard's figure beside the task's: what tuning cost in general ability."""
    if guard := forgetting_summary(metrics):
        console.print(f"Task: validation loss {metrics['valid_loss']:.4f}; {guard}.", markup=False, highlight=False)


def show_before_after(
    console: Console, test_file: Path, tuned_model: str, base_model: str = DEFAULT_MODEL, max_new_tokens: int = 120
) -> None:
    from tuneforge.evaluate.run import load_cases
    from tuneforge.runs.models import engine

    prompts = [case.prompt for case in load_cases(test_file, SHOWN_PROMPTS)]
    answers = {}
    for label, name in (("before (base model)", base_model), ("after (tuned)", tuned_model)):
        answers[label] = engine(name).generate(prompts, max_new_tokens=max_new_tokens)
    for i, prompt in enumerate(prompts):
        body = Table.grid(padding=(0, 1))
        body.add_column(style="bold", no_wrap=True)
        body.add_column()
        body.add_row("prompt", prompt[-1].content)
        for label, generations in answers.items():
            body.add_row(label, generations[i].text)
        console.print(Panel(body, title=f"held-out example {i + 1}"))


def show_evaluation(console: Console, test_file: Path, run_id: str, base_model: str = DEFAULT_MODEL) -> Path:
    """`tuneforge eval RUN --data test.jsonl --against BASE`, capped; prints the headline; returns report.html."""
    from tuneforge.evaluate.report import headline
    from tuneforge.runs.evaluation import run_eval

    out_dir = Path("evals") / run_id  # where `tuneforge eval RUN_ID` puts it too
    began = time.perf_counter()
    # The probes (forgetting, safety, bias) would add minutes: `tuneforge eval` runs them, the main job does not.
    results = run_eval(
        run_id,
        test_file,
        base_model,
        None,
        out_dir,
        max_examples=EVAL_EXAMPLES,
        max_new_tokens=EVAL_MAX_NEW_TOKENS,
        probes=False,
    )
    _, sentences = headline(results)
    for sentence in sentences:
        console.print(sentence, markup=False, highlight=False)
    report = (out_dir / "report.html").resolve()
    console.print(
        f"Evaluated in {time.perf_counter() - began:.0f} s. Report (open it in a browser): {report}", markup=False
    )
    return report
