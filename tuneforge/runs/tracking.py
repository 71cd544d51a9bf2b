"""Experiment trackers: a run's config and metrics also go to TensorBoard, W&B or MLflow (`report_to`).

`with_trackers` wraps the reporter that records the run: every step's and validation's numbers are
logged at their step, the run's config as parameters, and the run's id links both ways. The tracker
run is named and tagged with the Tuneforge run id (`tuneforge_run_id`); the Tuneforge run keeps the
tracker runs' ids and places in `tracking.json` in its directory and in its final metrics
(`tracking`), so `tuneforge runs show` leads to them. A resumed run continues the same tracker runs
(W&B's run id is the Tuneforge run id; MLflow's is read back from `tracking.json`).

Each tracker is its own library, imported only when a run asks for it, in its usual settings:
TensorBoard writes into `<run dir>/tensorboard` (`tensorboard --logdir $TUNEFORGE_HOME/runs`); W&B
follows WANDB_MODE (offline too), WANDB_API_KEY and WANDB_DIR (default: the run directory);
MLflow follows MLFLOW_TRACKING_URI. Only rank 0 of a run on several processes logs.
"""

import json
from pathlib import Path

from tuneforge.errors import UsageError
from tuneforge.train.reporter import Reporter, RunResult

TRACKING_FILE = "tracking.json"
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow-skinny"}
DEFAULT_PROJECT = "tuneforge"


def with_trackers(reporter: Reporter, config, run_dir: Path, run_id: str) -> Reporter:
    """`reporter` itself when the run reports to no tracker; else a reporter that logs to them first."""
    names = [name for name in config.report_to.split(",") if name]
    if not names:
        return reporter
    for name in names:  # before anything starts: a missing package is a usage error, not a failed run
        module = "torch.utils.tensorboard" if name == "tensorboard" else name
        try:
            __import__(module)
        except ImportError:
            raise UsageError(
                f"report_to {name} needs the {PACKAGES[name]} package", fix=f"pip install {PACKAGES[name]}"
            ) from None
    return TrackingReporter(reporter, [TRACKER_TYPES[name]() for name in names], config, run_dir, run_id)


class TrackingReporter(Reporter):
    def __init__(self, inner: Reporter, trackers: list, config, run_dir: Path, run_id: str):
        self.inner, self.trackers, self.config, self.run_dir, self.run_id = inner, trackers, config, run_dir, run_id
        self.links: dict = {}
        self.opened = False

    def _open(self, resume: bool) -> None:
        saved = json.loads((self.run_dir / TRACKING_FILE).read_text()) if resume and self._saved() else {}
        for tracker in self.trackers:
            self.links[tracker.name] = tracker.open(self.run_id, self.config, self.run_dir, saved.get(tracker.name))
        self.opened = True
        (self.run_dir / TRACKING_FILE).write_text(json.dumps(self.links, indent=2))

    def _saved(self) -> bool:
        return (self.run_dir / TRACKING_FILE).exists()

    def _log(self, row: dict) -> None:
        values = {k: float(v) for k, v in row.items() if k != "step" and isinstance(v, int | float)}
        for tracker in self.trackers:
            tracker.log(values, int(row["step"]))

    def _close(self, status: str) -> None:
        if self.opened:  # a run that fails before it is created (its data, say) opened no tracker run
            for tracker in self.trackers:
                tracker.close(status)
            self.opened = False

    # ---- the run's life
    def created(self, run_id, config, run_dir, training, validation):
        self.inner.created(run_id, config, run_dir, training, validation)
        self.config = config  # the resolved config: what the trackers record as the run's parameters
        self._open(resume=False)

    def resumed(self, run_id):
        self.inner.resumed(run_id)
        self._open(resume=True)

    def step(self, row):
        self._log(row)
        self.inner.step(row)

    def evaluation(self, row):
        self._log({k: v for k, v in row.items() if k == "step" or k.startswith(("valid_", "general_"))})
        self.inner.evaluation(row)

    def finished(self, result: RunResult, weights):
        result.metrics["tracking"] = self.links  # the registry's record of the run links to its tracker runs
        for tracker in self.trackers:
            tracker.summary({k: v for k, v in result.metrics.items() if isinstance(v, int | float)})
        self._close("FINISHED")
        self.inner.finished(result, weights)

    def interrupted(self, run_id, trained_tokens):
        self._close("KILLED")
        self.inner.interrupted(run_id, trained_tokens)

    def failed(self, run_id, error):
        self._close("FAILED")
        self.inner.failed(run_id, error)

    # ---- passed on
    def start(self, run_id, config, total_steps, first_step):
        self.inner.start(run_id, config, total_steps, first_step)

    def checkpoint(self, step, path):
        self.inner.checkpoint(step, path)

    def checkpoints_kept(self, run_id, checkpoints):
        self.inner.checkpoints_kept(run_id, checkpoints)

    def should_stop(self):
        return self.inner.should_stop()

    def close(self):
        self.inner.close()


def _tags(config, run_id: str) -> list[str]:
    chosen = [tag.strip() for tag in config.tracking_tags.split(",") if tag.strip()]
    return ["tuneforge", f"tuneforge_run_id:{run_id}", *chosen]


def _parameters(config) -> dict:
    return {k: v for k, v in config.model_dump(mode="json").items() if v is not None}


class TensorBoard:
    name = "tensorboard"

    def open(self, run_id, config, run_dir: Path, saved) -> dict:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tensorboard"))
        if saved is None:
            self.writer.add_text("tuneforge/run_id", run_id)
            self.writer.add_text("tuneforge/config", f"```\n{json.dumps(_parameters(config), indent=2)}\n```")
        return {"log_dir": str(run_dir / "tensorboard")}

    def log(self, values: dict, step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def summary(self, metrics: dict) -> None:
        pass  # the last step's scalars are the summary TensorBoard shows

    def close(self, status: str) -> None:
        self.writer.close()


class WandB:
    name = "wandb"

    def open(self, run_id, config, run_dir: Path, saved) -> dict:
        import os

        import wandb

        self.run = wandb.init(
            project=config.tracking_project or DEFAULT_PROJECT,
            entity=config.wandb_entity,
            name=config.tracking_name or run_id,
            id=run_id,  # the Tuneforge run id: a resume continues the same W&B run
            resume="allow",
            dir=os.environ.get("WANDB_DIR", str(run_dir)),
            config={**_parameters(config), "tuneforge_run_id": run_id},
            tags=_tags(config, run_id)[:64],
            reinit="create_new",  # a worker runs many jobs in one process
        )
        return {"run_id": self.run.id, "project": self.run.project, "url": self.run.url, "dir": self.run.dir}

    def log(self, values: dict, step: int) -> None:
        self.run.log(values, step=step)

    def summary(self, metrics: dict) -> None:
        self.run.summary.update({f"final/{k}": v for k, v in metrics.items()})

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "FINISHED" else 1)


class MLflow:
    name = "mlflow"

    def open(self, run_id, config, run_dir: Path, saved) -> dict:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient()  # MLFLOW_TRACKING_URI, as MLflow itself reads it
        if saved:
            self.run_id = saved["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            experiment_name = config.tracking_project or DEFAULT_PROJECT
            experiment = self.client.get_experiment_by_name(experiment_name)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(experiment_name)
            tags = {"tuneforge.run_id": run_id, "tuneforge.run_dir": str(run_dir)}
            tags |= {f"tag.{tag}": "" for tag in _tags(config, run_id)[2:]}
            run = self.client.create_run(experiment_id, run_name=config.tracking_name or run_id, tags=tags)
            self.run_id = run.info.run_id
            from mlflow.entities import Param

            params = [Param(k, str(v)[:6000]) for k, v in _parameters(config).items()]
            self.client.log_batch(self.run_id, params=params)
        return {"run_id": self.run_id, "tracking_uri": self.client.tracking_uri}

    def log(self, values: dict, step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def summary(self, metrics: dict) -> None:
        pass  # every metric's last value is MLflow's summary

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)


TRACKER_TYPES = {"tensorboard": TensorBoard, "wandb": WandB, "mlflow": MLflow}
