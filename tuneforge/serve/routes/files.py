"""/v1/files: upload, list, retrieve, delete, content.

The store is `jobs/files.py`; this door reads the form, checks the key before the body (see
`upload_form`), and turns the store's answers into OpenAI's objects and errors. An uploaded
`fine-tune` file is checked by the data stage in the background, after the answer: its status moves
from `uploaded` to `processed`, or to `error` with the first problems (line, field, fix) in
`status_details`, which is what `client.files.wait_for_processing` waits for.
"""

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, BackgroundTasks, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, StreamingResponse
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from tuneforge.errors import StorageUnavailable
from tuneforge.jobs import files as store
from tuneforge.registry import artifacts, jobs
from tuneforge.serve.deps import project
from tuneforge.serve.protocol import APIError, ErrorResponse, FileDeleted, FileObject, ListPage, not_found

log = logging.getLogger("tuneforge.serve")
router = APIRouter(tags=["files"], responses={"4XX": {"model": ErrorResponse}})

# The form `upload_form` reads, described for /openapi.json as FastAPI would describe File and Form parameters.
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "title": "FileUpload",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "contentMediaType": "application/octet-stream", "title": "File"},
                        "purpose": {"type": "string", "title": "Purpose"},
                    },
                }
            }
        },
    }
}


@dataclass
class UploadForm:
    file: UploadFile
    purpose: str


def _invalid(field: str, kind: str, message: str) -> dict:
    return {"type": kind, "loc": ("body", field), "msg": message, "input": None}


async def upload_form(request: Request) -> AsyncIterator[UploadForm]:
    """The upload's multipart form, read here rather than declared as `File`/`Form` parameters: FastAPI
    reads a route's form before it runs any dependency, so an anonymous caller's upload would be spooled
    to disk before its 401. Depending on it after `project`, a route reads the body once the key is good.
    Missing or mistyped fields answer as FastAPI's own validation would."""
    try:
        form = await request.form()
    except StarletteHTTPException:
        raise  # a malformed multipart body: Starlette's 400 says what is wrong with it
    except Exception as error:  # a body cut short: FastAPI's answer for the forms it reads itself
        raise StarletteHTTPException(400, "There was an error parsing the body") from error
    try:
        upload, purpose = form.get("file"), form.get("purpose")
        errors = []
        if upload is None or upload == "":
            errors.append(_invalid("file", "missing", "Field required"))
        elif not isinstance(upload, UploadFile):
            errors.append(
                _invalid("file", "value_error", f"Value error, Expected UploadFile, received: {type(upload)}")
            )
        if purpose is None or purpose == "":
            errors.append(_invalid("purpose", "missing", "Field required"))
        elif not isinstance(purpose, str):
            errors.append(_invalid("purpose", "string_type", "Input should be a valid string"))
        if errors:
            raise RequestValidationError(errors)
        yield UploadForm(file=upload, purpose=purpose)
    finally:
        await form.close()


@router.post("/files", openapi_extra=UPLOAD_BODY)
def upload(
    request: Request,
    background: BackgroundTasks,
    owner: str = Depends(project),
    form: UploadForm = Depends(upload_form),  # after `project`: no key, no body read
) -> FileObject:
    limit = request.app.state.options.max_file_bytes
    try:
        row = store.store_upload(owner, form.file.filename, form.purpose, form.file.file, limit)
    except store.FileTooLarge as too_large:
        raise APIError(
            413,
            f"'{too_large.filename}' is larger than this server's limit of {limit:,} bytes "
            "(start `tuneforge serve` with a larger --max-file-mb)",
            param="file",
            code="file_too_large",
        ) from None
    except store.UploadRefused as refused:
        raise APIError(400, refused.message, param=refused.param) from None
    except StorageUnavailable as down:  # the operator's log says which store and why; the caller, not where
        log.warning("upload of %s refused: %s", form.file.filename, down.message)
        raise APIError(
            503,
            "The file could not be stored: this server's file store is unavailable. Try again later.",
            code="storage_unavailable",
        ) from None
    if row.status == "uploaded":  # a fine-tuning file: the data check runs after the answer
        background.add_task(store.check_stored_file, row.id, row.path)
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


@router.get("/files/{file_id}")
def retrieve(file_id: str, owner: str = Depends(project)) -> FileObject:
    row = jobs.get_file(owner, file_id)
    if row is None:
        raise not_found("file", file_id, "file_id")
    return FileObject.from_row(row)


@router.get("/files/{file_id}/content")
def content(file_id: str, owner: str = Depends(project)):
    try:
        row = store.readable_file(owner, file_id)
    except store.ContentMissing as missing:
        # 410 Gone: the file exists (retrieve still answers) but its bytes will not come back; a 404
        # would read as a wrong id, a 5xx would invite the client to retry in vain.
        raise APIError(
            410, f"{missing.message}. {missing.fix}", param="file_id", code="file_content_missing"
        ) from None
    if row is None:
        raise not_found("file", file_id, "file_id")
    if not artifacts.is_remote(row.path):
        return FileResponse(row.path, filename=row.filename, media_type="application/octet-stream")
    stream = artifacts.open_bytes(row.path)  # from the object store, a chunk at a time
    return StreamingResponse(
        iter(lambda: stream.read(1 << 20), b""),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f"attachment; filename*=utf-8''{quote(row.filename)}"},
        background=BackgroundTask(stream.close),
    )


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
