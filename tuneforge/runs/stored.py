"""Run directories in the artifact store (`TUNEFORGE_STORAGE_URL`), so that a run outlives the
machine that trained it: a job resumes on another machine, and a server that trained nothing serves
the models.

With a store, a run's directory is mirrored under `runs/<run id>/`:
  - at each checkpoint (by the process that saved it, before training goes on): the new checkpoints
    (their COMPLETE marker last), the removal of pruned ones, and what a resume reads besides them
    (config.json, metrics.csv, DPO's reference log-probabilities);
  - when the run finishes: its weights (`adapter/` or `model/`), card, manifest, metrics, loss curve;
  - when an evaluation links itself into the card: the cards again.

Uploading on the training process is deliberate: once the "Checkpoint created" event is out, the
checkpoint is in the store, and a resume anywhere finds it. A machine that lacks a run's files
fetches them into its own home's `runs/<id>/` (`stage_resume` before continuing a run, `weights` and
`checkpoint` before loading a model, `run_folder` for the pages). Without a store each function here
does nothing and a run is its recorded local directory, as before.
"""

from pathlib import Path

from tuneforge.registry import artifacts
from tuneforge.settings import runs_dir

RUN_FILES = ("config.json", "metrics.csv", "manifest.json", "README.md", "loss.png")


def enabled() -> bool:
    return artifacts.storage_url() is not None


def local_dir(run) -> Path:
    """`run`'s directory on this machine: where it was recorded, if this machine has it (always,
    without a store); else this home's `runs/<id>/`, where its files are fetched to."""
    recorded = Path(run.run_dir)
    if not enabled() or recorded.exists():
        return recorded
    return runs_dir() / run.id


# ------------------------------------------------------------------------------------ uploads
def _put_files(run_dir: Path, names) -> None:
    for name in names:
        if (run_dir / name).is_file():
            artifacts.put_file(run_dir / name, artifacts.run_key(run_dir.name, name))


def upload_checkpoints(run_dir: Path, kept: list[dict]) -> None:
    """After a checkpoint: make the store's checkpoints those kept on disk (`kept`, as
    train/artifacts.prune_checkpoints lists them), with the files a resume reads."""
    if not enabled():
        return
    # The markers' and files' names, from the recipe that writes them (imported here, in the training
    # process: the pages that import this module need no torch).
    from tuneforge.train.dpo import REFERENCE_FILE
    from tuneforge.train.loop import COMPLETE_MARKER

    run_id = run_dir.name
    in_store = set(artifacts.listing(artifacts.run_key(run_id, "checkpoints")))
    kept_names = set()
    for checkpoint in kept:
        local = Path(checkpoint["path"])
        kept_names.add(local.name)
        # One present without its marker was cut off while uploading: it goes up again, whole.
        key = artifacts.run_key(run_id, "checkpoints", local.name)
        if local.name not in in_store or not artifacts.key_exists(f"{key}/{COMPLETE_MARKER}"):
            artifacts.put_folder(local, key, last=COMPLETE_MARKER)
    for name in in_store - kept_names:
        artifacts.remove_folder(artifacts.run_key(run_id, "checkpoints", name))
    _put_files(run_dir, ("config.json", "metrics.csv", REFERENCE_FILE))


def upload_run(run_dir: Path, weights: Path) -> None:
    """A finished run: its weights and its files."""
    if not enabled():
        return
    artifacts.put_folder(weights, artifacts.run_key(run_dir.name, weights.name))
    _put_files(run_dir, RUN_FILES)


def upload_cards(run_dir: Path) -> None:
    """The run's card and its weights' card, after an evaluation added its results to them."""
    if not enabled():
        return
    _put_files(run_dir, ["README.md", *(f"{name}/README.md" for name in ("adapter", "model"))])


# ------------------------------------------------------------------------------------ fetches
def newest_stored_checkpoint(run_id: str) -> int | None:
    """The step of the newest complete checkpoint the store has of `run_id`."""
    if not enabled():
        return None
    from tuneforge.train.loop import COMPLETE_MARKER

    steps = [
        int(name.removeprefix("step-"))
        for name in artifacts.listing(artifacts.run_key(run_id, "checkpoints"))
        if name.startswith("step-") and name.removeprefix("step-").isdigit()
    ]
    for step in sorted(steps, reverse=True):
        if artifacts.key_exists(artifacts.run_key(run_id, "checkpoints", f"step-{step}", COMPLETE_MARKER)):
            return step
    return None


def _newest_local_checkpoint(run_dir: Path) -> int | None:
    from tuneforge.train.loop import newest_complete_checkpoint

    newest = newest_complete_checkpoint(run_dir / "checkpoints")
    return int(newest.name.removeprefix("step-")) if newest else None


def has_checkpoint(run) -> bool:
    """Whether `run` can be continued here: a complete checkpoint on this machine or in the store."""
    return _newest_local_checkpoint(local_dir(run)) is not None or newest_stored_checkpoint(run.id) is not None


def stage_resume(run) -> Path:
    """Before continuing `run` on this machine: its directory, with the newest complete checkpoint
    (fetched when the store's is newer than this machine's, with the metrics up to it) and the
    files a resume reads."""
    directory = local_dir(run)
    if not enabled():
        return directory
    from tuneforge.train.dpo import REFERENCE_FILE

    local = _newest_local_checkpoint(directory)
    in_store = newest_stored_checkpoint(run.id)
    if in_store is not None and (local is None or in_store > local):
        name = f"step-{in_store}"
        artifacts.get_folder(artifacts.run_key(run.id, "checkpoints", name), directory / "checkpoints" / name)
        artifacts.get_file(artifacts.run_key(run.id, "metrics.csv"), directory / "metrics.csv")
    for name in ("config.json", REFERENCE_FILE):
        if not (directory / name).exists():
            artifacts.get_file(artifacts.run_key(run.id, name), directory / name)
    return directory


def _folder(run, recorded: Path, *parts: str) -> Path:
    """A folder of `run` (its weights, a checkpoint): where it was recorded, else fetched once."""
    if recorded.exists() or not enabled():
        return recorded
    target = local_dir(run).joinpath(*parts)
    if not target.exists():
        artifacts.get_folder(artifacts.run_key(run.id, *parts), target)
    return target


def weights(run, model) -> Path:
    """The tuned model's weights (`adapter/` or `model/`) on this machine."""
    return _folder(run, Path(model.path), Path(model.path).name)


def checkpoint(run, recorded) -> Path:
    """A checkpoint's folder on this machine."""
    return _folder(run, Path(recorded.path), "checkpoints", f"step-{recorded.step}")


def run_folder(run) -> Path:
    """`run`'s directory on this machine with its card, manifest, metrics and loss curve (fetched
    where missing, once the run has finished and they are all in the store)."""
    directory = local_dir(run)
    if enabled() and run.status == "succeeded":
        for name in RUN_FILES:
            if not (directory / name).exists():
                artifacts.get_file(artifacts.run_key(run.id, name), directory / name)
    return directory
