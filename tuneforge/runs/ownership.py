"""Whose runs and tuned models are whose: the one place that answers "may this project use that model?".

A run belongs to a project (`runs.project`): the project of the job that trained it, or the default
project for `tuneforge train`. Another project's run, tuned model or checkpoint is, to a caller, a
model that does not exist: `NotOwned` carries no hint of what is there. `delete_tuned_model` is the
one way a project deletes a tuned model: with its run, rows and directory together.
"""

from tuneforge.registry import store
from tuneforge.runs.naming import is_tuned_name, run_id_of


class NotOwned(Exception):
    """No run, tuned model or checkpoint of this name belongs to the project (or none exists)."""


def owner_of(model: store.Model) -> str:
    return store.project_of_run(model.run_id)


def check_owned(project: str, name: str) -> None:
    """A run id, tuned model name or checkpoint name that `project` may use; NotOwned otherwise."""
    if store.project_of_run(run_id_of(name)) != project:
        raise NotOwned(name)


def owned_tuned_model(project: str, name: str) -> store.Model | None:
    """The tuned model (by `ft:` name or run id) if it belongs to `project`; None if the name is no tuned
    model's at all; NotOwned if it names one that does not exist or is another project's."""
    if not is_tuned_name(name):
        return None
    model = store.find_model(name)
    if model is None:
        run = store.get_run(name)
        model = run.models[0] if run and run.models else None
    if model is None or owner_of(model) != project:
        raise NotOwned(name)
    return model


def tuned_models_of(project: str) -> list[store.Model]:
    return store.list_models(project)


def delete_tuned_model(project: str, name: str) -> store.Model | None:
    """Delete `project`'s tuned model (by `ft:` name or run id) with its run: the run's rows (checkpoints,
    models) and its directory. The deleted model, for the caller to drop what it holds of it (a server's
    loaded engine); None if `name` is no tuned model's name (a base model's, say), with nothing deleted;
    NotOwned if it names none of the project's."""
    model = owned_tuned_model(project, name)
    if model is not None:
        store.delete_run(model.run_id)
    return model
