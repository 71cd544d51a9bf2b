"""The dashboard's routes: page shells (no data, no key needed), fragments and data (the caller's
project, from its key, as the API's routes take it)."""

from pathlib import Path

from fastapi import APIRouter, BackgroundTasks, Depends, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from tuneforge.registry import artifacts, jobs
from tuneforge.serve.deps import project
from tuneforge.serve.protocol import APIError, not_found
from tuneforge.web import views
from tuneforge.web.render import fragment, page

TOKEN_MODEL = "smollm2-135m-instruct"  # whose tokenizer counts a file's tokens on the data page

router = APIRouter(include_in_schema=False)


def _job(owner: str, job_id: str):
    job = jobs.get_job(owner, job_id)
    if job is None:
        raise not_found("fine-tuning job", job_id, "fine_tuning_job_id")  # the API's own 404
    return job


@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/ui/jobs")


@router.get("/ui/jobs")
def jobs_page(request: Request) -> HTMLResponse:
    return page(request, "jobs", "/ui/fragments/jobs", "Jobs")


@router.get("/ui/jobs/new")
def new_job_page(request: Request) -> HTMLResponse:
    return page(request, "jobs", "/ui/fragments/jobs/new", "New job")


@router.get("/ui/fragments/jobs/new")
def new_job_fragment(request: Request, owner: str = Depends(project)) -> HTMLResponse:
    from tuneforge.serve.model_access import model_choices

    models = model_choices(owner, request.app.state.allowed_model_dirs)
    return fragment(request, "new_job.html", files=views.checked_files(owner), models=models)


@router.get("/ui/fragments/estimate")
def estimate_fragment(request: Request, training_file: str = "", owner: str = Depends(project)) -> HTMLResponse:
    """The data check's time estimate for a training file (tokens with the bundled model's tokenizer,
    LoRA on this server's device, the default epochs): a line under the form's file choice."""
    from tuneforge.data.checks import check_with_model

    row = jobs.get_file(owner, training_file) if training_file else None
    stats = (
        check_with_model(artifacts.local_copy(row.path), TOKEN_MODEL).stats
        if row and artifacts.exists(row.path)
        else {}
    )
    return fragment(request, "estimate.html", stats=stats)


@router.get("/ui/jobs/{job_id}")
def job_page(request: Request, job_id: str) -> HTMLResponse:
    return page(request, "jobs", f"/ui/fragments/jobs/{job_id}", f"Job {job_id}")


@router.get("/ui/fragments/jobs")
def jobs_fragment(request: Request, owner: str = Depends(project)) -> HTMLResponse:
    return fragment(request, "jobs.html", jobs=views.job_list(owner))


@router.get("/ui/fragments/jobs/{job_id}")
def job_fragment(request: Request, job_id: str, owner: str = Depends(project)) -> HTMLResponse:
    return fragment(request, "job.html", job=views.job_page(_job(owner, job_id)))


@router.get("/ui/data/jobs/{job_id}/curves")
def job_curves(job_id: str, after: int = 0, owner: str = Depends(project)) -> JSONResponse:
    return JSONResponse(views.curves(_job(owner, job_id), after), headers={"Cache-Control": "no-store"})


# ------------------------------------------------------------------------------------------ data
def _file(owner: str, file_id: str):
    row = jobs.get_file(owner, file_id)
    if row is None:
        raise not_found("file", file_id, "file_id")
    return row


@router.get("/ui/data")
def data_page(request: Request) -> HTMLResponse:
    return page(request, "data", "/ui/fragments/data", "Data")


@router.get("/ui/data/{file_id}")
def file_page(request: Request, file_id: str) -> HTMLResponse:
    return page(request, "data", f"/ui/fragments/data/{file_id}", "Data check")


@router.get("/ui/fragments/data")
def data_fragment(request: Request, owner: str = Depends(project)) -> HTMLResponse:
    return fragment(request, "data.html", files=views.file_list(owner))


@router.get("/ui/fragments/data/{file_id}")
def file_fragment(request: Request, file_id: str, owner: str = Depends(project)) -> HTMLResponse:
    return fragment(request, "file.html", file=views.file_page(_file(owner, file_id)))


@router.get("/ui/fragments/data/{file_id}/tokens")
def tokens_fragment(request: Request, file_id: str, owner: str = Depends(project)) -> HTMLResponse:
    """The data check again, with the bundled model's tokenizer: token lengths, the histogram, the
    truncated examples and the time estimate (the stored check ran without a model)."""
    from tuneforge.data.checks import check_with_model

    row = _readable(owner, file_id)
    report = check_with_model(artifacts.local_copy(row.path), TOKEN_MODEL).as_json()
    return fragment(request, "tokens.html", file=views.file_page(row, report), model=TOKEN_MODEL)


@router.post("/ui/actions/prepare/{file_id}")
def prepare_file(
    request: Request,
    background: BackgroundTasks,
    file_id: str,
    train: int = Form(90),
    validation: int = Form(5),
    test: int = Form(5),
    seed: int = Form(42),
    dedupe: bool = Form(False),
    redact_pii: bool = Form(False),
    drop_invalid: bool = Form(False),
    owner: str = Depends(project),
) -> HTMLResponse:
    """`tuneforge data prepare` on an uploaded file: normalised, deduplicated, optionally redacted, split
    train/validation/test (seeded; stratified by label where the data is classification-like). Each
    split becomes a file of the project's, checked like an upload; the answer lists them."""
    import tempfile

    from tuneforge.data.checks import check_with_model
    from tuneforge.data.prepare import DataHasErrors, PrepareOptions, prepare
    from tuneforge.jobs.files import check_stored_file, store_upload

    row = _readable(owner, file_id)
    shares = (train, validation, test)
    if min(shares) < 0 or sum(shares) != 100 or train == 0:
        raise APIError(400, f"the split must be percentages that add up to 100, training above 0 (got {shares})")
    options = PrepareOptions(tuple(s / 100 for s in shares), seed, redact_pii, dedupe, drop_invalid)
    stem = Path(row.filename).stem
    made = []
    with tempfile.TemporaryDirectory() as scratch:
        try:
            source = artifacts.local_copy(row.path)
            result = prepare(source, Path(scratch), check_with_model(source, None), options)
        except DataHasErrors as error:
            raise APIError(
                400,
                f"{row.filename}: {error.report.findings.errors} error(s); nothing was written. Fix the errors "
                "listed on this page, or tick 'set invalid records aside' (they go to no split).",
                param="file_id",
            ) from None
        for split in ("train", "validation", "test"):  # not rejected.jsonl: what was set aside stays aside
            output = result.manifest["outputs"].get(split)
            if not output or not output["examples"]:
                continue
            with (Path(scratch) / output["file"]).open("rb") as stream:
                stored = store_upload(
                    owner, f"{stem}-{split}.jsonl", "fine-tune", stream, request.app.state.options.max_file_bytes
                )
            background.add_task(check_stored_file, stored.id, stored.path)
            made.append({"split": split, "id": stored.id, "filename": stored.filename, "examples": output["examples"]})
    manifest = result.manifest
    return fragment(
        request,
        "prepared.html",
        counts=manifest["counts"],
        records=manifest["input"]["records"],
        files=made,
        labels=manifest["labels"],
    )


def _readable(owner: str, file_id: str):
    from tuneforge.jobs.files import ContentMissing, readable_file

    try:
        return readable_file(owner, file_id) or _file(owner, file_id)
    except ContentMissing as missing:
        raise APIError(410, f"{missing.message}. {missing.fix}", code="file_content_missing") from None
