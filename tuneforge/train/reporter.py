"""What a training recipe tells the outside world, and what it returns.

A recipe knows no database and no server: it reports through a `Reporter`, and whoever called it
decides what the reports become. The CLI draws a progress bar (progress.py), the job worker writes
job events, and the service layer (`tuneforge.runs.training.RecordingReporter`) turns the run's life into registry
rows. Every method has a do-nothing default, so a benchmark can pass a bare `Reporter()`.
"""

from dataclasses import dataclass
from pathlib import Path

from tuneforge.errors import TuneforgeError
from tuneforge.train.config import ResolvedConfig

# What a DPO run's rows add to SFT's (train_loss, train_accuracy, valid_loss; see dpo.py): its step's
# rewards as TRL names them (rewards/chosen -> rewards_chosen), and the same at each validation.
DPO_STEP_FIELDS = ["rewards_chosen", "rewards_rejected", "rewards_margin"]
DPO_VALID_FIELDS = ["valid_reward_accuracy", "valid_rewards_margin", "valid_rewards_chosen", "valid_rewards_rejected"]


class TrainingInterrupted(TuneforgeError):
    exit_code = 130


@dataclass(frozen=True)
class DataRecord:
    """A data file a run trained or validated on, as the lineage records it."""

    path: Path
    sha256: str
    kind: str | None  # conversation | preference | text
    examples: int
    manifest: dict | None  # the data stage's manifest, when the file came from `tuneforge data prepare`


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    model_name: str
    config: ResolvedConfig
    metrics: dict
    stopped_early: bool


class Reporter:
    """The recipe's calls, in the order they come: `created` or `resumed`, `start`, then per step
    `step` (and `evaluation`, `checkpoint`, `checkpoints_kept`), then one of `finished`,
    `interrupted` or `failed`. `should_stop` is asked after every step."""

    # ---- the run's life (what the registry records)
    def created(
        self, run_id: str, config: ResolvedConfig, run_dir: Path, training: DataRecord, validation: DataRecord | None
    ) -> None: ...
    def resumed(self, run_id: str) -> None: ...
    def checkpoints_kept(self, run_id: str, checkpoints: list[dict]) -> None: ...
    def finished(self, result: RunResult, weights: Path) -> None: ...
    def interrupted(self, run_id: str, trained_tokens: int | None) -> None: ...
    def failed(self, run_id: str, error: str) -> None: ...

    # ---- progress (what people watch)
    def start(self, run_id: str, config: ResolvedConfig, total_steps: int, first_step: int) -> None: ...
    def step(self, row: dict) -> None: ...
    def evaluation(self, row: dict) -> None: ...
    def checkpoint(self, step: int, path: Path) -> None: ...

    def should_stop(self) -> bool:
        return False

    def close(self) -> None:
        """The caller is done with it (a progress bar stops drawing)."""
