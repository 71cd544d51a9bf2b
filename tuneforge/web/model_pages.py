"""The dashboard's models: base and tuned models, a tuned model's lineage and card, its downloads
(weights, card, metrics, GGUF made on first request) and its evaluation reports. Downloads and
reports are followed by the browser as links, so they take signed links (web/links.py)."""

import os
import shutil
import tempfile
import threading
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse

from tuneforge.registry import artifacts, store
from tuneforge.runs import stored
from tuneforge.serve.deps import project
from tuneforge.serve.model_access import model_choices, model_not_found, owned_tuned_model
from tuneforge.serve.protocol import not_found
from tuneforge.web import lineage, views
from tuneforge.web.links import link_project, signed
from tuneforge.web.render import fragment, page

router = APIRouter(include_in_schema=False)
# A report is our own HTML with inline styles and SVG and no script: shown as it is, allowed nothing else.
REPORT_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'self'"  # the dashboard's evaluation page shows it in a frame
)
_exporting = threading.Lock()  # one export at a time: each loads the model and merges its weights


@router.get("/ui/models")
def models_page(request: Request) -> HTMLResponse:
    return page(request, "models", "/ui/fragments/models", "Models")


@router.get("/ui/fragments/models")
def models_fragment(request: Request, owner: str = Depends(project)) -> HTMLResponse:
    choices = model_choices(owner, request.app.state.allowed_model_dirs)
    return fragment(request, "models.html", models=lineage.model_list(owner, choices))


@router.get("/ui/model")
def model_page(request: Request, name: str) -> HTMLResponse:
    return page(request, "models", f"/ui/fragments/model?name={quote(name, safe='')}", name)


@router.get("/ui/fragments/model")
def model_fragment(request: Request, name: str, owner: str = Depends(project)) -> HTMLResponse:
    tuned = owned_tuned_model(owner, name)  # 404 for another project's, as /v1/models/{name}
    if tuned is not None:
        model = lineage.tuned_model_page(tuned, owner, lambda path: signed(request, path))
        return fragment(request, "model.html", model=model, files=views.checked_files(owner))
    choices = dict(model_choices(owner, request.app.state.allowed_model_dirs))
    if name not in choices:
        raise model_not_found(name)
    children = [m for m in store.list_models(owner) if m.base_model == name]
    files = views.checked_files(owner)  # any checked file can be a test file
    return fragment(request, "base_model.html", name=name, source=choices[name], children=children, files=files)


# ------------------------------------------------------------------------- files behind links
def _owned_run(owner: str, run_id: str) -> store.Run:
    run = store.get_run(run_id)
    if run is None or run.project != owner:
        raise not_found("run", run_id)
    return run


@router.get("/ui/files/runs/{run_id}/{name}")
def run_file(run_id: str, name: str, owner: str = Depends(link_project)) -> FileResponse:
    """One of a run's downloads (lineage.DOWNLOADS) or its loss curve; made on first request where
    it is an export (weights zipped, GGUF), and kept in the run's `exports/` after."""
    run = _owned_run(owner, run_id)
    run_dir = stored.run_folder(run)
    if name in ("README.md", "metrics.csv", "loss.png"):
        path = run_dir / name
    elif name in lineage.DOWNLOADS and run.models:
        path = _export(run, name)
    else:
        raise not_found("download", name)
    if not path.is_file():
        raise not_found("download", name)
    media = {"loss.png": "image/png", "README.md": "text/markdown", "metrics.csv": "text/csv"}
    return FileResponse(
        path,
        media_type=media.get(name, "application/octet-stream"),
        filename=None if name == "loss.png" else f"{run.id}-{name}",
    )


def _export(run: store.Run, name: str) -> Path:
    model = run.models[0]
    weights = stored.weights(run, model)
    exports = stored.local_dir(run) / "exports"
    path = exports / name
    with _exporting:
        if path.is_file() and path.stat().st_mtime >= weights.stat().st_mtime:
            return path
        exports.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=exports) as scratch:
            if name == "weights.zip":
                made = Path(shutil.make_archive(str(Path(scratch) / "weights"), "zip", root_dir=weights))
            else:
                from tuneforge.runs.models import export_gguf

                made = Path(scratch) / name
                export_gguf(model.name, made, name.removeprefix("model-").removesuffix(".gguf"))
            os.replace(made, path)  # whole or not at all: a second request never serves half a file
    return path


@router.get("/ui/files/evaluations/{evaluation_id}/report.html")
def evaluation_report(evaluation_id: int, owner: str = Depends(link_project)) -> FileResponse:
    """An evaluation's HTML report, to its project only."""
    evaluation = store.get_evaluation(evaluation_id)
    if evaluation is None or evaluation.project != owner:
        raise not_found("evaluation", str(evaluation_id))
    try:  # the report's folder is local, or in the store (runs/evaluation.py): a copy is fetched once
        path = artifacts.local_copy(f"{evaluation.report_dir}/report.html")
    except FileNotFoundError:
        raise not_found("evaluation", str(evaluation_id)) from None
    if not path.is_file():
        raise not_found("evaluation", str(evaluation_id))
    return FileResponse(path, media_type="text/html", headers={"Content-Security-Policy": REPORT_CSP})
