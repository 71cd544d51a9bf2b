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
from tuneforge.serve.model_access import base_model_for_request, model_not_found, owned_tuned_model
from tuneforge.serve.protocol import APIError, ErrorResponse, Model, ModelDeleted, ObjectList

router = APIRouter(tags=["models"], responses={"4XX": {"model": ErrorResponse}})


def _tuned_object(model: store.Model) -> Model:
    return Model.from_row(model, owned_by=owner_of(model))


def _allowed_dirs(request: Request) -> dict[str, str]:
    return request.app.state.allowed_model_dirs


@router.get("/models")
def list_models(request: Request, owner: str = Depends(project)) -> ObjectList[Model]:
    from tuneforge.models.catalog import bundled_installed
    from tuneforge.models.catalog import list_models as base_models

    data = [
        Model.base(ref.name, ref.source)
        for ref in base_models()
        if ref.source != "bundled" or bundled_installed(ref.name)
    ]
    data += [Model.base(path, "local") for path in sorted(set(_allowed_dirs(request).values()))]
    data += [_tuned_object(m) for m in tuned_models_of(owner)]
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
