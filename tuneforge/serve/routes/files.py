"""/v1/files: upload, list, retrieve, delete, content.

An uploaded `fine-tune` file is checked by the data stage in the background: its status moves from
`uploaded` to `processed`, or to `error` with the first problems (line, field, fix) in
`status_details`, which is what `client.files.wait_for_processing` waits for.
"""

import hashlib
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, BackgroundTasks, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse

from tuneforge.registry import jobs
from tuneforge.serve.deps import project
from tuneforge.serve.protocol import APIError, ErrorResponse, FileDeleted, FileObject, ListPage, not_found

router = APIRouter(tags=["files"], responses={"4XX": {"model": ErrorResponse}})
PURPOSES = ("fine-tune", "user_data", "evals")
SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".txt")


def check_uploaded_file(file_id: str, path: Path) -> None:
    """The data stage's format check (no tokenizer: the job's model is not known yet)."""
    from tuneforge.data.checks import check_with_model

    try:
        report = check_with_model(path, None)
    except Exception as error:  # an unreadable file is the uploader's problem, reported on the file
        jobs.set_file_status(file_id, "error", f"{type(error).__name__}: {error}")
        return
    if report.ok:
        jobs.set_file_status(file_id, "processed", report=report.as_json())
        return
    problems = [
        f"line {f.line}"
        + (f", field {f.field}" if f.field else "")
        + f": {f.message}"
        + (f" Fix: {f.fix}" if f.fix else "")
        for f in report.findings.findings()
        if f.severity == "error"
    ][:5]
    jobs.set_file_status(
        file_id, "error", f"{report.findings.errors} error(s). " + " | ".join(problems), report=report.as_json()
    )


@router.post("/files")
def upload(
    request: Request,
    background: BackgroundTasks,
    file: Annotated[UploadFile, File()],
    purpose: Annotated[str, Form()],
    owner: str = Depends(project),
) -> FileObject:
    limit = request.app.state.options.max_file_bytes
    if purpose not in PURPOSES:
        raise APIError(400, f"purpose '{purpose}' is not supported; use one of {', '.join(PURPOSES)}", param="purpose")
    filename = Path(file.filename or "upload.jsonl").name
    suffix = Path(filename).suffix.lower()
    if purpose == "fine-tune" and suffix not in SUFFIXES:
        raise APIError(400, f"'{filename}': fine-tuning files must be {', '.join(SUFFIXES)}", param="file")
    file_id = jobs.new_id("file-")
    target = jobs.files_dir() / f"{file_id}{suffix if suffix in SUFFIXES else ''}"
    digest, size = hashlib.sha256(), 0
    with target.open("wb") as out:
        while chunk := file.file.read(1 << 20):
            size += len(chunk)
            if size > limit:
                out.close()
                target.unlink()
                raise APIError(
                    413,
                    f"'{filename}' is larger than this server's limit of {limit:,} bytes "
                    "(start `tuneforge serve` with a larger --max-file-mb)",
                    param="file",
                    code="file_too_large",
                )
            digest.update(chunk)
            out.write(chunk)
    row = jobs.create_file(owner, filename, purpose, target, size, digest.hexdigest(), file_id)
    if purpose == "fine-tune":
        background.add_task(check_uploaded_file, file_id, target)
    else:
        jobs.set_file_status(file_id, "processed")
        row.status = "processed"
    return FileObject.from_row(row)


@router.get("/files")
def list_files(
    owner: str = Depends(project),
    purpose: str | None = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
    order: Literal["asc", "desc"] = "desc",
) -> ListPage[FileObject]:
    rows, has_more = jobs.list_files(owner, purpose, after, limit, newest_first=order == "desc")
    return ListPage[FileObject](data=[FileObject.from_row(r) for r in rows], has_more=has_more)


def _owned(owner: str, file_id: str):
    row = jobs.get_file(owner, file_id)
    if row is None:
        raise not_found("file", file_id, "file_id")
    return row


@router.get("/files/{file_id}")
def retrieve(file_id: str, owner: str = Depends(project)) -> FileObject:
    return FileObject.from_row(_owned(owner, file_id))


@router.get("/files/{file_id}/content")
def content(file_id: str, owner: str = Depends(project)):
    row = _owned(owner, file_id)
    return FileResponse(row.path, filename=row.filename, media_type="application/octet-stream")


@router.delete("/files/{file_id}")
def delete(file_id: str, owner: str = Depends(project)) -> FileDeleted:
    try:
        deleted = jobs.delete_file(owner, file_id)
    except jobs.FileInUse as in_use:
        raise APIError(
            409,
            f"File '{file_id}' is used by fine-tuning job(s) not yet finished ({', '.join(in_use.job_ids)}); "
            "cancel them or wait for them to finish, then delete it.",
            param="file_id",
            code="file_in_use",
        ) from None
    if not deleted:
        raise not_found("file", file_id, "file_id")
    return FileDeleted(id=file_id, deleted=True)
