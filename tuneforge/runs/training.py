"""Training runs as recorded runs: the one place that creates and resumes them.

`train_run` names the run and its tuned model, calls the recipe (train/sft.py), or launches it on
several processes through torchrun (launch.py), with a reporter that
records the run's life in the registry (dataset rows, the run row, checkpoints, the model) and
forwards everything to the caller's reporter (a progress bar, job events). The CLI's `--resume`,
the worker's resumed jobs and the quickstart all come through here.
"""

import logging
from collections.abc import Callable
from pathlib import Path

from tuneforge.errors import TuneforgeError, UsageError
from tuneforge.hardware import device_type, resolve_device
from tuneforge.registry import store
from tuneforge.registry.access import DEFAULT_PROJECT
from tuneforge.runs import stored
from tuneforge.runs.continuation import continue_from, name_base, parent_adapter
from tuneforge.runs.general import general_ability, replay_wanted
from tuneforge.runs.launch import Machines, launch, launched, payload, read_payload
from tuneforge.runs.naming import new_run_id, tuned_model_name
from tuneforge.runs.tracking import with_trackers
from tuneforge.settings import runs_dir
from tuneforge.train import distributed
from tuneforge.train.config import RECORDED, ResolvedConfig, TrainConfig
from tuneforge.train.distributed import ranks
from tuneforge.train.reporter import DataRecord, Reporter, RunResult, TrainingInterrupted
from tuneforge.train.sft import train_sft

log = logging.getLogger("tuneforge.runs")


class RecordingReporter(Reporter):
    """The recipe's reports, recorded as registry rows (and, with a store, the run's files as
    stored.py says) and passed on to `inner`."""

    def __init__(self, inner: Reporter, project: str, run_dir: Path):
        self.inner, self.project, self.run_dir = inner, project, run_dir

    # ---- recorded
    def created(self, run_id, config, run_dir, training: DataRecord, validation: DataRecord | None):
        def record(data: DataRecord | None) -> str | None:
            return (
                store.record_dataset(data.path, data.sha256, data.kind, data.examples, data.manifest) if data else None
            )

        store.create_run(
            run_id, config.model_dump(mode="json"), run_dir, record(training), record(validation), self.project
        )
        self.inner.created(run_id, config, run_dir, training, validation)

    def resumed(self, run_id):
        store.update_run(run_id, status="running", error=None, run_dir=str(self.run_dir))  # maybe another machine
        self.inner.resumed(run_id)

    def checkpoints_kept(self, run_id, checkpoints):
        try:
            stored.upload_checkpoints(self.run_dir, checkpoints)
        except Exception:  # noqa: BLE001 - a store outage must not end the run: the next checkpoint
            # uploads whatever the store lacks (stored.py compares), and the checkpoint is on disk here.
            log.warning(
                "run %s: uploading its checkpoints failed; the next checkpoint tries again", run_id, exc_info=True
            )
        store.sync_checkpoints(run_id, checkpoints)
        self.inner.checkpoints_kept(run_id, checkpoints)

    def finished(self, result: RunResult, weights: Path):
        stored.upload_run(result.run_dir, weights)  # in the store before the model is listed
        store.update_run(
            result.run_id, status="succeeded", trained_tokens=result.metrics["trained_tokens"], metrics=result.metrics
        )
        store.register_model(
            result.model_name,
            result.run_id,
            result.config.model,
            "adapter" if result.config.method == "lora" else "full",
            weights,
        )
        self.inner.finished(result, weights)

    def interrupted(self, run_id, trained_tokens):
        if store.get_run(run_id) is not None:
            store.update_run(
                run_id,
                status="interrupted",
                **({"trained_tokens": trained_tokens} if trained_tokens is not None else {}),
            )
        self.inner.interrupted(run_id, trained_tokens)

    def failed(self, run_id, error):
        if store.get_run(run_id) is not None:  # a run that failed before its row existed has nothing to mark
            store.update_run(run_id, status="failed", error=error)
        self.inner.failed(run_id, error)

    # ---- passed on
    def start(self, run_id, config, total_steps, first_step):
        self.inner.start(run_id, config, total_steps, first_step)

    def step(self, row):
        self.inner.step(row)

    def evaluation(self, row):
        self.inner.evaluation(row)

    def checkpoint(self, step, path):
        self.inner.checkpoint(step, path)

    def should_stop(self):
        return self.inner.should_stop()


def train_run(
    config: TrainConfig,
    reporter: Reporter | None = None,
    run_id: str | None = None,
    resume: bool = False,
    project: str = DEFAULT_PROJECT,
    org: str = "tuneforge",
    machines: Machines = Machines(),
    entry: tuple[str, ...] = ("tuneforge", "_rank"),
    launch_extra: dict | None = None,
    should_stop=lambda: False,
) -> RunResult | None:
    """Train a new run for `project` (or, with `resume`, continue `run_id` from its newest checkpoint)
    and record it. `org` is the tuned model name's organisation field (a job's project; `tuneforge`
    from the CLI).

    With `config.nproc` > 1 or several `machines`, the run is launched through torchrun instead
    (launch.py): `entry` is what each process runs (it calls this function again, there), and the
    result is read back from the registry once they finish; None on a machine other than the first,
    which records nothing."""
    run_id = run_id or new_run_id()
    config = config if resume else continue_from(config, project)  # a resumed run's record is already resolved
    existing = store.get_run(run_id) if resume else None
    if existing is not None and not launched():  # once per machine, before its processes start
        stored.stage_resume(existing)
    if (config.nproc > 1 or machines.nodes > 1) and not launched():
        _check_gpus(config)
        guard = general_ability(config)
        if guard and guard.replay:  # the replay answers, generated and cached before the processes read them
            guard.replay(replay_wanted(config))
        fields = payload(config, run_id, resume, project, org, **(launch_extra or {}))
        status = launch(list(entry), fields, config.nproc, machines, should_stop)
        return _launched_result(run_id, status) if machines.node_rank == 0 else None
    name = tuned_model_name(name_base(config), org, config.suffix, run_id)
    # Where it was (if runs_dir moved since), or where this machine fetched it to (stored.py).
    run_dir = stored.local_dir(existing) if existing else runs_dir() / run_id
    # Among several processes, rank 0 records the run (and reports); the others only train.
    recorded = RecordingReporter(reporter or Reporter(), project, run_dir) if ranks().main else Reporter()
    if ranks().main:
        recorded = with_trackers(recorded, config, run_dir, run_id)
    start = None if resume else parent_adapter(config)
    return train_sft(config, recorded, run_dir, resume, name, general_ability(config), start)


def train_launched(main_reporter: Callable[[dict], Reporter]) -> None:
    """What each process that torchrun started runs (through the CLI's `_rank` or jobs/rank_main.py):
    the run its launcher put in the environment (launch.py), reported by rank 0 alone, through
    `main_reporter(payload)`."""
    fields = read_payload()
    config = TrainConfig.model_validate(fields["config"], context=RECORDED if fields["resume"] else None)
    reporter = main_reporter(fields) if ranks().main else Reporter()
    try:
        train_run(config, reporter, fields["run_id"], fields["resume"], fields["project"], fields["org"])
    finally:
        reporter.close()
        distributed.stop()


def _check_gpus(config: TrainConfig) -> None:
    """Before launching: a CUDA run needs a GPU for each of this machine's processes."""
    device = resolve_device(config.device)
    if device_type(device) == "cuda":
        import torch

        count = torch.cuda.device_count()
        if config.nproc > count:
            raise UsageError(
                f"nproc {config.nproc} needs {config.nproc} GPUs on this machine; PyTorch sees {count}",
                fix=f"Use --nproc {count}, or device cpu.",
            )


def _launched_result(run_id: str, status: int) -> RunResult:
    """A launched run's outcome, as its rank 0 recorded it."""
    run = store.get_run(run_id)
    if run is None:
        raise TuneforgeError(
            f"the training processes stopped (exit status {status}) before run {run_id} began; their errors are above"
        )
    if run.status == "interrupted":
        raise TrainingInterrupted(
            f"run {run_id} stopped; a checkpoint was saved", fix=f"Resume with: tuneforge train --resume {run_id}"
        )
    if run.status != "succeeded":
        raise TuneforgeError(f"run {run_id} {run.status}: {run.error or f'exit status {status}'}")
    config = ResolvedConfig.model_validate(run.config, context=RECORDED)
    model_name = run.models[0].name if run.models else run_id
    return RunResult(
        run_id, Path(run.run_dir), model_name, config, run.metrics or {}, bool(run.metrics.get("stopped_early"))
    )


def resumable(run_id: str | None) -> bool:
    """Whether `run_id` is a recorded run with a complete checkpoint to continue from (here, or in
    the store)."""
    run = store.get_run(run_id) if run_id else None
    return bool(run and stored.has_checkpoint(run))
