"""The dashboard's evaluations: the project's evaluation reports, and evaluations started from a
model's page (a test file of the project's, against the model's base or nothing). A started
evaluation is a registry row from its first moment (`running`, then `succeeded` with its report or
`failed` with its error), so any server on the registry shows it; it runs in this server's process,
one at a time, on the evaluate stage's own `run_eval`."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response

from tuneforge.errors import TuneforgeError
from tuneforge.registry import artifacts, jobs, store
from tuneforge.serve.deps import project
from tuneforge.serve.model_access import servable_model
from tuneforge.serve.protocol import APIError, not_found
from tuneforge.settings import tuneforge_home
from tuneforge.web.lineage import evaluation_row
from tuneforge.web.links import signed
from tuneforge.web.render import fragment, page

router = APIRouter(include_in_schema=False)
MAX_EXAMPLES = 500  # what one evaluation from the page may score: minutes, not hours, on a CPU
_runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evaluation")  # one at a time: each loads models


@router.get("/ui/evaluations")
def evaluations_page(request: Request) -> HTMLResponse:
    return page(request, "evaluations", "/ui/fragments/evaluations", "Evaluations")


@router.get("/ui/fragments/evaluations")
def evaluations_fragment(request: Request, owner: str = Depends(project)) -> HTMLResponse:
    rows = [_row(request, e) for e in store.list_evaluations(project=owner)]
    return fragment(request, "evaluations.html", evaluations=rows)


@router.get("/ui/evaluations/{evaluation_id}")
def evaluation_page(request: Request, evaluation_id: int) -> HTMLResponse:
    return page(request, "evaluations", f"/ui/fragments/evaluations/{evaluation_id}", f"Evaluation {evaluation_id}")


@router.get("/ui/fragments/evaluations/{evaluation_id}")
def evaluation_fragment(request: Request, evaluation_id: int, owner: str = Depends(project)) -> HTMLResponse:
    evaluation = store.get_evaluation(evaluation_id)
    if evaluation is None or evaluation.project != owner:
        raise not_found("evaluation", str(evaluation_id))
    return fragment(request, "evaluation.html", evaluation=_row(request, evaluation))


def _row(request: Request, evaluation: store.Evaluation) -> dict:
    return {
        **evaluation_row(evaluation, lambda path: signed(request, path)),
        "status": evaluation.status,
        "error": evaluation.error,
    }


@router.post("/ui/actions/evaluations")
def start_evaluation(
    request: Request,
    model: str = Form(...),
    file_id: str = Form(...),
    against: str = Form(""),
    max_examples: int = Form(100),
    probes: bool = Form(False),
    owner: str = Depends(project),
) -> Response:
    """Evaluate `model` on one of the project's files, against `against` (or alone); the page goes to
    the evaluation's own page, which follows it until its report is there."""
    allowed = request.app.state.allowed_model_dirs
    load = {name: servable_model(owner, name, allowed) for name in (model, against) if name}  # 404 if not theirs
    row = jobs.get_file(owner, file_id)
    if row is None or row.purpose != "fine-tune":
        raise not_found("file", file_id, "file_id")
    if row.status != "processed":
        raise APIError(400, f"{row.filename} did not pass its data check ({row.status})", param="file_id")
    if not 1 <= max_examples <= MAX_EXAMPLES:
        raise APIError(400, f"max_examples must be 1 to {MAX_EXAMPLES}", param="max_examples")
    run = store.run_for_model(model)
    evaluation_id = store.start_evaluation(
        owner, model, against or None, run.id if run else None, row.sha256 or "", Path("pending")
    )
    out_dir = tuneforge_home() / "evaluations" / f"eval-{evaluation_id}"
    _runner.submit(
        _evaluate,
        evaluation_id,
        owner,
        load[model],
        artifacts.local_copy(row.path),
        load.get(against),
        out_dir,
        max_examples,
        probes,
    )
    return Response(status_code=204, headers={"HX-Redirect": f"/ui/evaluations/{evaluation_id}"})


def _evaluate(
    evaluation_id: int,
    owner: str,
    model: str,
    data: Path,
    against: str | None,
    out_dir: Path,
    max_examples: int,
    probes: bool,
) -> None:
    from tuneforge.runs.evaluation import run_eval

    try:
        run_eval(
            model,
            data,
            against,
            None,
            out_dir,
            max_examples=max_examples,
            probes=probes,
            evaluation_id=evaluation_id,
            project=owner,
        )
    except TuneforgeError as failure:
        store.fail_evaluation(evaluation_id, str(failure))
    except Exception as failure:  # noqa: BLE001 - whatever it was, the page must say it failed
        store.fail_evaluation(evaluation_id, f"{type(failure).__name__}: {failure}")
