"""What a finished run tells people: the loss curve (loss.png) and the model card (README.md)."""

import csv
from pathlib import Path


def read_metrics(path: Path) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(step, train_loss) and (step, valid_loss) series from metrics.csv."""
    train, valid = [], []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("train_loss"):
                train.append((int(row["step"]), float(row["train_loss"])))
            if row.get("valid_loss"):
                valid.append((int(row["step"]), float(row["valid_loss"])))
    return train, valid


def plot_loss(metrics_csv: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    train, valid = read_metrics(metrics_csv)
    figure, axes = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        axes.plot(*zip(*train), label="training loss", color="#4C72B0", alpha=0.8)
    if valid:
        axes.plot(*zip(*valid), label="validation loss", color="#DD8452", marker="o")
    axes.set_xlabel("step")
    axes.set_ylabel("loss (weighted cross-entropy per token)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(out)
    plt.close(figure)


def forgetting_summary(metrics: dict) -> str | None:
    """The forgetting guard's figure in one line (None for a run without it): the general prompts'
    loss before and after tuning, their perplexity change, and the replay examples trained."""
    if "general_perplexity_change" not in metrics:
        return None
    return (
        f"general prompts (forgetting guard): loss {metrics['base_general_loss']:.4f} (base) -> "
        f"{metrics['general_loss']:.4f}, perplexity {metrics['general_perplexity_change']:+.1%}; "
        f"{metrics.get('replay_examples', 0)} replay examples trained beside the task's"
    )
