"""/v1/models: the base models callers may use, and the caller's project's tuned models.

A tuned model belongs to the project of the job that trained it (models trained with `tuneforge
train` belong to the default project); other projects neither see nor reach it (404). Which base
models a caller may name is model_access's rule: the catalog, cached hub ids and the operator's
allowed directories, never an arbitrary path.
"""

from fastapi import APIRouter, Depends, Request

from tuneforge.registry import store
from tuneforge.runs.ownership import NotOwned, delete_tuned_model, owner_of, tuned_models_of
from tuneforge.serve.deps import project
from tuneforge.serve.model_access import base_model_for_request, model_choices, model_not_found, owned_tuned_model
from tuneforge.serve.protocol import APIError, ErrorResponse, Model, ModelDeleted, ObjectList

router = APIRouter(tags=["models"], responses={"4XX": {"model": ErrorResponse}})


def _tuned_object(model: store.Model) -> Model:
    return Model.from_row(model, owned_by=owner_of(model))


def _allowed_dirs(request: Request) -> dict[str, str]:
    return request.app.state.allowed_model_dirs


@router.get("/models")
def list_models(request: Request, owner: str = Depends(project)) -> ObjectList[Model]:
    tuned = {m.name: m for m in tuned_models_of(owner)}
    data = [
        _tuned_object(tuned[name]) if source == "tuned" else Model.base(name, source)
        for name, source in model_choices(owner, _allowed_dirs(request))
    ]
    return ObjectList[Model](data=data)


@router.get("/models/{name:path}")
def retrieve(name: str, request: Request, owner: str = Depends(project)) -> Model:
    tuned = owned_tuned_model(owner, name)
    if tuned is not None:
        return _tuned_object(tuned)
    base = base_model_for_request(name, _allowed_dirs(request))
    if base is None:
        raise model_not_found(name)
    return Model.base(name, base[1])


@router.delete("/models/{name:path}")
def delete(name: str, request: Request, owner: str = Depends(project)) -> ModelDeleted:
    try:
        deleted = delete_tuned_model(owner, name)
    except NotOwned:
        raise model_not_found(name) from None
    if deleted is None:
        if base_model_for_request(name, _allowed_dirs(request)) is None:
            raise model_not_found(name)
        raise APIError(
            400, f"'{name}' is a base model; only tuned models can be deleted", param="model", code="invalid_model"
        )
    if request.app.state.engines is not None:  # the pool is the server's: a deleted model leaves it here
        request.app.state.engines.forget(deleted.name)
    return ModelDeleted(id=deleted.name, deleted=True)
