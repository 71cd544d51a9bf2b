"""A run's progress as job events, and the job's status (set by the server) as the stop signal."""

import time
from collections.abc import Callable
from datetime import timedelta

from tuneforge.registry import jobs, store
from tuneforge.registry.jobs import Job
from tuneforge.train.reporter import DPO_STEP_FIELDS, DPO_VALID_FIELDS, Reporter


class JobReporter(Reporter):
    """The recipe's progress as job events; the job's status, set by the server, as the stop signal."""

    def __init__(self, job: Job, server_gone: Callable[[], bool] = lambda: False):
        self.job_id = job.id
        self.server_gone = server_gone  # the worker's parent watch: stop (with a checkpoint) when it says so
        self.total_steps = 0
        self.began = time.monotonic()
        self.first_step = 0
        self._checked_at = 0.0
        self._stop = False

    def start(self, run_id, config, total_steps, first_step):
        self.total_steps, self.first_step, self.began = total_steps, first_step, time.monotonic()
        if first_step:  # steps after the checkpoint are trained again: their first reports are stale
            jobs.delete_metric_events_after(self.job_id, first_step)
        hyperparameters = {
            "n_epochs": config.n_epochs,
            "batch_size": config.batch_size,
            "learning_rate_multiplier": config.learning_rate_multiplier,
            **({"dpo_beta": config.dpo_beta} if config.objective == "dpo" else {}),
        }
        jobs.update_job(self.job_id, resolved=hyperparameters)
        message = f"Resumed from step {first_step}" if first_step else "Fine-tuning job started"
        jobs.add_event(self.job_id, f"{message} ({total_steps} steps, run {run_id})")

    def step(self, row):
        done = row["step"] - self.first_step
        remaining = (time.monotonic() - self.began) / max(done, 1) * (self.total_steps - row["step"])
        jobs.update_job(
            self.job_id,
            trained_tokens=row["trained_tokens"],
            estimated_finish=store.now() + timedelta(seconds=remaining),
        )
        jobs.add_event(
            self.job_id,
            f"Step {row['step']}/{self.total_steps}: training loss={row['train_loss']:.4f}",
            type="metrics",
            data={
                "step": row["step"],
                "total_steps": self.total_steps,
                "train_loss": row["train_loss"],
                "train_mean_token_accuracy": row["train_accuracy"],
                "learning_rate": row["learning_rate"],
                "tokens_per_second": row["tokens_per_second"],
                **{name: row[name] for name in DPO_STEP_FIELDS if name in row},
            },
        )

    def evaluation(self, row):
        jobs.add_event(
            self.job_id,
            f"Step {row['step']}: validation loss={row['valid_loss']:.4f}"
            + (f", general loss={row['general_loss']:.4f}" if "general_loss" in row else ""),
            type="metrics",
            data={
                "step": row["step"],
                "valid_loss": row["valid_loss"],
                "full_valid_loss": row["valid_loss"],
                **(
                    {
                        "valid_mean_token_accuracy": row["valid_mean_token_accuracy"],
                        "full_valid_mean_token_accuracy": row["valid_mean_token_accuracy"],
                    }
                    if "valid_mean_token_accuracy" in row
                    else {}
                ),
                **{name: row[name] for name in DPO_VALID_FIELDS + ["general_loss"] if name in row},
            },
        )

    def checkpoint(self, step, path):
        jobs.add_event(self.job_id, f"Checkpoint created at step {step}")

    def should_stop(self):
        # One registry read a second at most: a step is much longer than that, cancel stays prompt.
        # Any status but `running` stops the run: a pause and a resume in the same second leave it
        # `queued`, and the job must then continue from this step's checkpoint, not run on unseen.
        if not self._stop and time.monotonic() - self._checked_at >= 1.0:
            self._checked_at = time.monotonic()
            self._stop = jobs.get_job(None, self.job_id).status != "running" or self.server_gone()
        return self._stop
