"""The terminal's view of a training run: a Rich progress bar with step, epoch, loss, tokens/s and ETA,
and a line per validation."""

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tuneforge.train.reporter import Reporter


class ConsoleReporter(Reporter):
    def __init__(self, console: Console):
        self.console = console
        self.progress: Progress | None = None
        self.task = None
        self.tokens_per_second: list[float] = []

    def created(self, run_id, config, run_dir, training, validation) -> None:
        held_out = (validation.manifest or {}).get("held_out") if validation else None
        if held_out:
            self.console.print(
                f"validation: {held_out['examples']} examples ({held_out['share']:.0%} of the training file, seed "
                f"{held_out['seed']}{', stratified by reply' if held_out['stratified'] else ''}) held out; "
                "--validation-split 0 keeps them in training"
            )

    def start(self, run_id, config, total_steps, first_step) -> None:
        self.console.print(
            f"[bold]{run_id}[/bold]: {config.method} on {config.model} ({config.device}), {config.n_epochs} epoch(s), "
            f"batch {config.batch_size}, learning rate {config.learning_rate:.2e}, "
            f"max {config.max_seq_length} tokens/example"
        )
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]:.2f}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[speed]} tok/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.task = self.progress.add_task(
            "train", total=total_steps, completed=first_step, epoch=0.0, loss="-", speed="-"
        )
        self.progress.start()

    def step(self, row: dict) -> None:
        self.tokens_per_second.append(row["tokens_per_second"])
        recent = self.tokens_per_second[-20:]
        self.progress.update(
            self.task,
            completed=row["step"],
            epoch=row["epoch"],
            loss=f"{row['train_loss']:.4f}",
            speed=f"{sum(recent) / len(recent):,.0f}",
        )

    def evaluation(self, row: dict) -> None:
        # Short enough for an 80-column terminal with the forgetting guard's figure on the same line.
        scores = (
            f"reward accuracy {row['valid_reward_accuracy']:.3f}  margin {row['valid_rewards_margin']:.3f}"
            if "valid_reward_accuracy" in row  # a DPO run
            else f"ppl {row['valid_perplexity']:.2f}  accuracy {row['valid_mean_token_accuracy']:.3f}"
        )
        self.progress.console.print(
            f"  step {row['step']:>5}  validation loss {row['valid_loss']:.4f}  {scores}"
            + (f"  general {row['general_loss']:.4f}" if "general_loss" in row else "")
        )

    def checkpoint(self, step, path) -> None:
        self.progress.console.print(f"  [dim]checkpoint: {path}[/dim]")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
