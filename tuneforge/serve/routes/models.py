"""/v1/models: base models this machine can serve, and the caller's project's tuned models.

A tuned model belongs to the project of the job that trained it (models trained with `tuneforge
train` belong to the default project); other projects neither see nor reach it (404).
"""

from fastapi import APIRouter, Depends, Request

from tuneforge.registry import access, jobs, store
from tuneforge.serve.app import project
from tuneforge.serve.protocol import APIError, model_object, not_found

router = APIRouter(tags=["models"])


def run_owner(run_id: str) -> str:
    job = jobs.job_for_run(run_id)
    return job.project if job else access.DEFAULT_PROJECT


def owner_of(model: store.Model) -> str:
    return run_owner(model.run_id)


def check_access(owner: str, name: str) -> None:
    """Before serving `name`: a tuned model, run or checkpoint of another project (or of none) is 404."""
    from tuneforge.serve.engine import run_id_of

    if not name.startswith(("ft:", "run-")):
        return  # a base model: everyone's
    run = store.get_run(run_id_of(name))
    if run is None or run_owner(run.id) != owner:
        raise model_not_found(name)


def owned_tuned_model(owner: str, name: str) -> store.Model | None:
    """The tuned model (by `ft:` name or run id) if it exists and belongs to `owner`; None if it is
    no tuned model at all. Another project's model raises 404, as if it did not exist."""
    model = store.find_model(name)
    if model is None:
        run = store.get_run(name)
        model = run.models[0] if run and run.models else None
    if model is None:
        if name.startswith(("ft:", "run-")):
            raise model_not_found(name)
        return None
    if owner_of(model) != owner:
        raise model_not_found(name)
    return model


def model_not_found(name: str) -> APIError:
    return APIError(404, f"The model '{name}' does not exist or you do not have access to it.", param="model",
                    code="model_not_found")


def _tuned_object(model: store.Model) -> dict:
    return model_object(model.name, jobs.unix(model.created_at), owner_of(model), root=model.base_model,
                        parent=model.base_model, tuneforge={"run_id": model.run_id, "kind": model.kind})


@router.get("/models")
def list_models(owner: str = Depends(project)) -> dict:
    from tuneforge.models.catalog import bundled_installed, list_models as base_models

    data = [model_object(ref.name, 0, "tuneforge" if ref.source == "bundled" else "huggingface", tuneforge={"source": ref.source})
            for ref in base_models() if ref.source != "bundled" or bundled_installed(ref.name)]
    data += [_tuned_object(m) for m in store.list_models() if owner_of(m) == owner]
    return {"object": "list", "data": data}


@router.get("/models/{name:path}")
def retrieve(name: str, owner: str = Depends(project)) -> dict:
    from tuneforge.errors import TuneforgeError
    from tuneforge.models.catalog import resolve_model

    tuned = owned_tuned_model(owner, name)
    if tuned is not None:
        return _tuned_object(tuned)
    try:
        ref = resolve_model(name)
    except TuneforgeError:
        raise not_found("model", name, "model") from None
    return model_object(name, 0, "tuneforge" if ref.source == "bundled" else ref.source, tuneforge={"source": ref.source})


@router.delete("/models/{name:path}")
def delete(name: str, request: Request, owner: str = Depends(project)) -> dict:
    tuned = owned_tuned_model(owner, name)
    if tuned is None:
        raise APIError(400, f"'{name}' is a base model; only tuned models can be deleted", param="model", code="invalid_model")
    if request.app.state.engines is not None:
        request.app.state.engines.forget(tuned.name)
    store.delete_run(tuned.run_id)  # a run is its directory plus its rows: both go
    return {"id": tuned.name, "object": "model", "deleted": True}
